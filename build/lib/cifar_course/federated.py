"""Federated learning with TensorFlow Federated: simulated clients, IID and Dirichlet (non-IID) partitions,
federated averaging (McMahan et al. 2017), server momentum (Hsu et al. 2019) and FedProx (Li et al. 2020).
Introduced in the federated learning chapter.

TFF is imported inside the functions that need it (it takes seconds and is noisy). Its local runtime is a
C++ worker process (`worker_binary`) that TFF starts on first use and never stops: it outlives the Python
process and holds the caller's stdout open. Run TFF code inside `with federated_runtime():`, which stops
the worker on exit (an atexit hook does the same as a last resort).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import signal
import sys
import time
import warnings

import numpy as np

WORKER_NAME = "worker_binary"

# ------------------------------------------------------------------------------------------------
# Client partitions: lists of index arrays into the training set, one per client.


def partition_iid(y, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffle, then deal the examples out evenly: every client sees the global label mix."""
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}.")
    order = np.random.default_rng(seed).permutation(len(np.asarray(y).reshape(-1)))
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def partition_dirichlet(y, num_clients: int, alpha: float, seed: int = 0, min_size: int = 10,
                        max_tries: int = 100) -> list[np.ndarray]:
    """Label-skewed clients: each class is split across clients in proportions drawn from Dirichlet(alpha).

    Small alpha (0.1) gives clients that hold mostly one or two classes; large alpha (100) is close to
    IID. Draws again until every client has at least `min_size` examples.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}.")
    y = np.asarray(y).reshape(-1)
    if len(y) < num_clients * min_size:
        raise ValueError(f"{len(y)} examples cannot give {num_clients} clients {min_size} each: "
                         "lower num_clients or min_size.")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts = [[] for _ in range(num_clients)]
        for c in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"No Dirichlet(alpha={alpha}) draw gave every client {min_size} examples in "
                     f"{max_tries} tries: raise alpha or lower min_size.")


def client_class_counts(y, parts, num_classes: int = 10) -> np.ndarray:
    """(clients, classes) matrix of how many examples of each class each client holds."""
    y = np.asarray(y).reshape(-1)
    return np.stack([np.bincount(y[p], minlength=num_classes) for p in parts])


def label_skew(y, parts, num_classes: int = 10) -> float:
    """Mean total-variation distance between each client's label mix and the global one (0 = IID, 1 max)."""
    counts = client_class_counts(y, parts, num_classes).astype(float)
    local = counts / counts.sum(1, keepdims=True)
    overall = counts.sum(0) / counts.sum()
    return float(np.mean(0.5 * np.abs(local - overall).sum(1)))


def plot_partition(y, parts, class_names=None, ax=None, title: str = ""):
    """Stacked bars: each client's examples by class."""
    import matplotlib.pyplot as plt

    counts = client_class_counts(y, parts, len(class_names) if class_names else 10)
    ax = ax or plt.subplots(figsize=(6, 3))[1]
    bottom = np.zeros(len(counts))
    colors = plt.get_cmap("tab10").colors
    for c in range(counts.shape[1]):
        ax.bar(np.arange(len(counts)), counts[:, c], bottom=bottom, color=colors[c % 10],
               label=class_names[c] if class_names else str(c))
        bottom += counts[:, c]
    ax.set_xlabel("client")
    ax.set_ylabel("examples")
    ax.set_title(title)
    return ax


# ------------------------------------------------------------------------------------------------
# The TFF runtime and its worker process


def worker_processes() -> list[int]:
    """PIDs of TFF worker processes started by this process (direct children named worker_binary)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the (comm) field
        if parent == me and WORKER_NAME in cmdline:
            found.append(int(entry))
    return found


def _state(pid: int) -> str:
    """A process's state letter ('Z' zombie, '' gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def stop_workers(timeout: float = 10.0) -> int:
    """Stop every TFF worker this process started; return how many were running.

    First the TFF way: install a fresh execution context, so the old one's service manager is collected
    and interrupts its worker. Then SIGINT (and SIGKILL after `timeout`) whatever survives. Processes are
    not reaped here: TFF's own Popen object does that, and would fail on a PID we had already reaped.
    """
    pids = worker_processes()
    if not pids:
        return 0
    if "tensorflow_federated" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["tensorflow_federated"].backends.native.set_sync_local_cpp_execution_context()
        gc.collect()
    for sig in (signal.SIGINT, signal.SIGKILL):
        alive = [pid for pid in pids if _state(pid) not in ("", "Z")]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _state(pid) not in ("", "Z")]
            time.sleep(0.05)
        if not alive:
            break
    return len(pids)


_ATEXIT_REGISTERED = False


def import_tff():
    """Import tensorflow_federated quietly and make sure its worker is stopped when Python exits."""
    global _ATEXIT_REGISTERED
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow_federated as tff
    logging.getLogger("absl").setLevel(logging.ERROR)
    if not _ATEXIT_REGISTERED:
        atexit.register(stop_workers)
        _ATEXIT_REGISTERED = True
    return tff


@contextlib.contextmanager
def federated_runtime():
    """`with federated_runtime() as tff:` imports TFF and stops its C++ worker when the block ends.

    TFF restarts a worker on the next computation, so blocks can be used one after another.
    """
    tff = import_tff()
    try:
        yield tff
    finally:
        stop_workers()


# ------------------------------------------------------------------------------------------------
# Models and data for TFF


def build_client_model(stats=None, num_classes: int = 10):
    """The baseline CNN (no BatchNorm: FedAvg averages trainable weights only) returning logits, with
    standardization inside, so clients can ship raw uint8-valued images."""
    from tensorflow import keras
    from tensorflow.keras import layers

    from .models import build_baseline_cnn

    mean, std = (np.zeros(3), np.ones(3)) if stats is None else stats
    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(scale=(1.0 / (255.0 * np.asarray(std))).tolist(),
                         offset=(-np.asarray(mean) / np.asarray(std)).tolist())(inputs)
    body = build_baseline_cnn(num_classes, logits=True)
    return keras.Model(inputs, body(x), name="client_cnn")


def make_client_dataset(x, y, batch_size: int = 32, local_epochs: int = 1, seed: int = 0):
    """One client's training data: shuffled (float32 images in [0, 255], int32 labels) batches."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((np.asarray(x), np.asarray(y).reshape(-1).astype(np.int32)))
    ds = ds.shuffle(len(x), seed=seed).repeat(local_epochs).batch(batch_size)
    return ds.map(lambda images, labels: (tf.cast(images, tf.float32), labels))


def make_client_datasets(x, y, parts, batch_size: int = 32, local_epochs: int = 1, seed: int = 0) -> list:
    return [make_client_dataset(x[p], y[p], batch_size, local_epochs, seed + i) for i, p in enumerate(parts)]


def build_process(model_builder, element_spec, algorithm: str = "fedavg", client_lr: float = 0.05,
                  server_lr: float = 1.0, server_momentum: float = 0.0, proximal_strength: float = 0.01,
                  noise_multiplier: float = 0.5, clients_per_round: int = 10):
    """A TFF learning process over models from `model_builder()` (logits out).

    algorithm: "fedavg" (tff.learning.algorithms.build_weighted_fed_avg), "fedprox"
    (build_weighted_fed_prox, which pulls local weights toward the server's by proximal_strength) or
    "dp_fedavg" (DP-FedAvg, McMahan et al. 2018: unweighted averaging of adaptively clipped client
    updates plus Gaussian noise of noise_multiplier times the clip, via tff.learning.dp_aggregator).
    Clients run plain SGD at client_lr; the server applies the averaged update with SGD at server_lr and
    optional momentum (server_momentum > 0 is FedAvgM).
    """
    import tensorflow as tf

    tff = import_tff()

    def model_fn():
        return tff.learning.models.from_keras_model(
            model_builder(), input_spec=element_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])

    client_opt = tff.learning.optimizers.build_sgdm(learning_rate=client_lr)
    server_opt = tff.learning.optimizers.build_sgdm(learning_rate=server_lr,
                                                    momentum=server_momentum or None)
    if algorithm == "fedavg":
        return tff.learning.algorithms.build_weighted_fed_avg(model_fn, client_opt, server_opt)
    if algorithm == "fedprox":
        return tff.learning.algorithms.build_weighted_fed_prox(model_fn, proximal_strength, client_opt,
                                                               server_opt)
    if algorithm == "dp_fedavg":
        return tff.learning.algorithms.build_unweighted_fed_avg(
            model_fn, client_opt, server_opt,
            model_aggregator=tff.learning.dp_aggregator(noise_multiplier, clients_per_round))
    raise ValueError(f"Unknown algorithm {algorithm!r}: choose 'fedavg', 'fedprox' or 'dp_fedavg'.")


def run_federated(process, client_datasets, rounds: int, keras_model, x_test, y_test,
                  clients_per_round: int | None = None, eval_every: int = 1, seed: int = 0,
                  print_every: int | None = None) -> list[dict]:
    """Run `rounds` of the process, sampling clients each round; evaluate the global model on the test set.

    Returns one row per evaluated round: round, test accuracy, mean client training loss, seconds so far.
    `keras_model` (same architecture) receives the final global weights.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    k = clients_per_round or len(client_datasets)
    keras_model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=["accuracy"])
    state = process.initialize()
    rows, start = [], time.perf_counter()
    for r in range(1, rounds + 1):
        chosen = rng.choice(len(client_datasets), k, replace=False)
        result = process.next(state, [client_datasets[i] for i in chosen])
        state = result.state
        if r % eval_every and r != rounds:
            continue
        process.get_model_weights(state).assign_weights_to(keras_model)
        acc = keras_model.evaluate(x_test.astype(np.float32), y_test, batch_size=1000, verbose=0)[1]
        train_loss = float(result.metrics["client_work"]["train"]["loss"])
        rows.append({"round": r, "test_accuracy": float(acc), "train_loss": train_loss,
                     "seconds": time.perf_counter() - start})
        if print_every and (r % print_every == 0 or r == rounds):
            print(f"round {r}/{rounds}  train loss {train_loss:.3f}  test accuracy {acc:.3f}")
    return rows
