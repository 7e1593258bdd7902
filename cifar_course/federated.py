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
import psutil

from .evaluate import predict_outputs
from .pipeline import normalize

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


def share_global_subset(y, parts, size, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Zhao et al. 2018's remedy for label skew: the server holds a small class-balanced set and sends
    it to every client, which then trains on its own data plus that set.

    size: a count, or a fraction of `y`, drawn class-balanced from the training set.
    Returns (each client's indices with the shared ones added, the shared indices).
    """
    from .data import stratified_indices

    shared = stratified_indices(y, size, seed)
    return [np.union1d(part, shared) for part in parts], shared


def recovered_fraction(iid: float, noniid: float, remedy: float) -> float:
    """How much of the non-IID gap (iid - noniid) a remedy wins back: 0 none, 1 all; NaN without a gap."""
    gap = iid - noniid
    return float((remedy - noniid) / gap) if gap > 0 else float("nan")


def seed_summary(values) -> dict:
    """Mean and spread (max - min) of one figure measured with several seeds."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "spread": float(np.ptp(values)), "n": int(values.size)}


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


def _workers() -> list:
    """TFF worker processes started by this process (direct children running worker_binary), as psutil
    Processes; zombies (stopped, not yet reaped by TFF's Popen) do not count."""
    found = []
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and WORKER_NAME in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
    return found


def worker_processes() -> list[int]:
    """PIDs of TFF worker processes started by this process (direct children named worker_binary)."""
    return [child.pid for child in _workers()]


def _alive(process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_workers(timeout: float = 10.0) -> int:
    """Stop every TFF worker this process started; return how many were running.

    SIGINT first, then SIGKILL after `timeout` for whatever survives; then the TFF way: install a fresh
    execution context, so the old one's service manager is collected and reaps its (stopped) worker.
    The signals come first because that manager's clean-up sends SIGINT and waits with no timeout: a
    worker that did not stop hung the whole process there (seen twice in full test runs). Processes are
    not reaped here (so no psutil.wait_procs): TFF's own Popen object does that, and would fail on a PID
    we had already reaped.
    """
    workers = _workers()
    if not workers:
        return 0
    for sig in (signal.SIGINT, signal.SIGKILL):
        alive = [w for w in workers if _alive(w)]
        for worker in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.send_signal(sig)
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            alive = [w for w in alive if _alive(w)]
            time.sleep(0.05)
        if not alive:
            break
    if "tensorflow_federated" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["tensorflow_federated"].backends.native.set_sync_local_cpp_execution_context()
        gc.collect()
    return len(workers)


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


def build_client_model(stats=None, num_classes: int = 10, width: int = 32):
    """The baseline CNN's layout (Conv width-2w-2w, two max-pools, Dense 64; no BatchNorm: FedAvg
    averages trainable weights only) returning logits, with the pipeline's `normalize` inside, so
    clients can ship raw uint8-valued images. width=32 is the baseline CNN itself; width=16 costs about
    a third of its arithmetic per image, for simulations that train many federations on a CPU."""
    from tensorflow import keras
    from tensorflow.keras import layers

    inputs = keras.Input((32, 32, 3))
    x = layers.Lambda(normalize, arguments={"stats": stats}, name="normalize")(inputs)
    x = layers.Conv2D(width, 3, activation="relu")(x)  # (30, 30, w)
    x = layers.MaxPooling2D()(x)  # (15, 15, w)
    x = layers.Conv2D(2 * width, 3, activation="relu")(x)  # (13, 13, 2w)
    x = layers.MaxPooling2D()(x)  # (6, 6, 2w)
    x = layers.Conv2D(2 * width, 3, activation="relu")(x)  # (4, 4, 2w)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(num_classes, dtype="float32")(x)  # logits
    return keras.Model(inputs, outputs, name="client_cnn")


def make_client_dataset(x, y, batch_size: int = 32, local_epochs: int = 1, seed: int = 0):
    """One client's training data: shuffled (float32 images in [0, 255], int32 labels) batches."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((np.asarray(x), np.asarray(y).reshape(-1).astype(np.int32)))
    ds = ds.shuffle(len(x), seed=seed).repeat(local_epochs).batch(batch_size)
    return ds.map(lambda images, labels: (tf.cast(images, tf.float32), labels))


def make_client_datasets(x, y, parts, batch_size: int = 32, local_epochs: int = 1, seed: int = 0) -> list:
    return [make_client_dataset(x[p], y[p], batch_size, local_epochs, seed + i) for i, p in enumerate(parts)]


@contextlib.contextmanager
def op_determinism(enabled: bool):
    """TF's op determinism on or off for a block, then back to what it was.

    DP-FedAvg needs it off while TFF traces it: its Gaussian noise ops carry no seed, which
    determinism (on in the smoke profile, see `seed_everything`) forbids. TF has no public switch to
    turn it off, hence the private module here rather than in a chapter.
    """
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    (tf_config.enable_op_determinism if enabled else tf_config.disable_op_determinism)()
    try:
        yield
    finally:
        (tf_config.enable_op_determinism if before else tf_config.disable_op_determinism)()


def build_process(model_builder, element_spec, algorithm: str = "fedavg", client_lr: float = 0.05,
                  server_lr: float = 1.0, server_momentum: float = 0.0, proximal_strength: float = 0.01,
                  noise_multiplier: float = 0.5, clients_per_round: int = 10):
    """A TFF learning process over models from `model_builder()` (logits out).

    algorithm: "fedavg" (tff.learning.algorithms.build_weighted_fed_avg), "fedprox"
    (build_weighted_fed_prox, which pulls local weights toward the server's by proximal_strength) or
    "dp_fedavg" (DP-FedAvg, McMahan et al. 2018: unweighted averaging of adaptively clipped client
    updates plus Gaussian noise of noise_multiplier times the clip, via tff.learning.dp_aggregator;
    built with op determinism off, see `op_determinism`).
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
        with op_determinism(False):
            return tff.learning.algorithms.build_unweighted_fed_avg(
                model_fn, client_opt, server_opt,
                model_aggregator=tff.learning.dp_aggregator(noise_multiplier, clients_per_round))
    raise ValueError(f"Unknown algorithm {algorithm!r}: choose 'fedavg', 'fedprox' or 'dp_fedavg'.")


def run_federated(process, client_datasets, rounds: int, keras_model, x_test, y_test,
                  clients_per_round: int | None = None, eval_every: int = 1, seed: int = 0,
                  print_every: int | None = None, start_from=None) -> list[dict]:
    """Run `rounds` of the process, sampling clients each round; evaluate the global model on the test set.

    Returns one row per evaluated round: round, test accuracy, mean client training loss, seconds so far.
    `keras_model` (same architecture) receives the final global weights. `start_from`, a Keras model of
    the same architecture, gives the initial weights (default: the process's own initialization).
    """
    rng = np.random.default_rng(seed)
    k = clients_per_round or len(client_datasets)
    y_test = np.asarray(y_test).reshape(-1)
    state = process.initialize()
    if start_from is not None:
        weights = import_tff().learning.models.ModelWeights(
            trainable=[w.numpy() for w in start_from.trainable_weights],
            non_trainable=[w.numpy() for w in start_from.non_trainable_weights])
        state = process.set_model_weights(state, weights)
    rows, start = [], time.perf_counter()
    for r in range(1, rounds + 1):
        chosen = rng.choice(len(client_datasets), k, replace=False)
        result = process.next(state, [client_datasets[i] for i in chosen])
        state = result.state
        if r % eval_every and r != rounds:
            continue
        process.get_model_weights(state).assign_weights_to(keras_model)
        predicted = predict_outputs(keras_model, x_test, 1000, preprocess=lambda b: b.astype(np.float32))
        acc = float((predicted.argmax(axis=-1) == y_test).mean())
        train_loss = float(result.metrics["client_work"]["train"]["loss"])
        rows.append({"round": r, "test_accuracy": float(acc), "train_loss": train_loss,
                     "seconds": time.perf_counter() - start})
        if print_every and (r % print_every == 0 or r == rounds):
            print(f"round {r}/{rounds}  train loss {train_loss:.3f}  test accuracy {acc:.3f}")
    return rows


def train_federated(x, y, parts, model_builder, x_test, y_test, rounds: int, algorithm: str = "fedavg",
                    clients_per_round: int | None = None, batch_size: int = 32, local_epochs: int = 1,
                    seed: int = 0, process=None, eval_every: int = 1, print_every: int | None = None,
                    **process_options) -> list[dict]:
    """One federated experiment: client datasets for `parts`, a process (`process`, else
    `build_process` with `process_options`), `rounds` rounds; returns `run_federated`'s rows.

    `seed` sets the initial weights (a `model_builder()` model drawn after seeding), the clients'
    shuffling and which clients each round samples. Runs that differ only in partition or algorithm
    start from the same model; passing a built `process` saves TFF's tracing when only the seed or the
    partition changes.
    """
    import tensorflow as tf

    datasets = make_client_datasets(x, y, parts, batch_size, local_epochs, seed)
    k = clients_per_round or len(parts)
    if process is None:
        process = build_process(model_builder, datasets[0].element_spec, algorithm,
                                clients_per_round=k, **process_options)
    # After the build: TFF traces models in graphs, which invalidates Keras models made before.
    tf.keras.utils.set_random_seed(seed)
    start = model_builder()
    return run_federated(process, datasets, rounds, start, x_test, y_test, clients_per_round=k,
                         eval_every=eval_every, seed=seed, print_every=print_every, start_from=start)
