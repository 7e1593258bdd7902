"""Federated learning: partitions, Dirichlet skew, and a tiny FedAvg run in a subprocess that must exit
promptly with its stdout piped and leave no TFF worker process behind."""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cifar_course import federated as fl

Y = np.repeat(np.arange(10), 200)


@pytest.mark.parametrize("make", [lambda: fl.partition_iid(Y, 7),
                                  lambda: fl.partition_dirichlet(Y, 7, alpha=0.3)])
def test_partitions_cover_every_example_once(make):
    parts = make()
    assert len(parts) == 7
    joined = np.concatenate(parts)
    assert len(joined) == len(Y) and np.array_equal(np.sort(joined), np.arange(len(Y)))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    skew = {a: np.mean([fl.label_skew(Y, fl.partition_dirichlet(Y, 10, a, seed=s)) for s in range(3)])
            for a in (100.0, 1.0, 0.1)}
    assert skew[100.0] < skew[1.0] < skew[0.1]
    assert fl.label_skew(Y, fl.partition_iid(Y, 10)) < 0.1 < skew[0.1]
    counts = fl.client_class_counts(Y, fl.partition_dirichlet(Y, 10, 0.1))
    assert counts.shape == (10, 10) and counts.sum() == len(Y)


def test_bad_partition_arguments():
    with pytest.raises(ValueError, match="alpha"):
        fl.partition_dirichlet(Y, 5, alpha=0)
    with pytest.raises(ValueError, match="lower num_clients"):
        fl.partition_dirichlet(Y[:20], 5, alpha=1.0, min_size=10)


def test_shared_subset_reaches_every_client_and_lowers_the_skew():
    parts = fl.partition_dirichlet(Y, 10, alpha=0.1, seed=0)
    with_shared, shared = fl.share_global_subset(Y, parts, 0.05, seed=0)
    assert len(shared) == 100 and np.array_equal(np.bincount(Y[shared]), np.full(10, 10))
    for own, both in zip(parts, with_shared):
        assert set(own) <= set(both) and set(shared) <= set(both) and len(both) == len(set(both))
    assert fl.label_skew(Y, with_shared) < fl.label_skew(Y, parts)


def test_recovered_fraction_and_seed_summary():
    assert fl.recovered_fraction(0.5, 0.3, 0.4) == pytest.approx(0.5)
    assert fl.recovered_fraction(0.5, 0.3, 0.25) == pytest.approx(-0.25)
    assert np.isnan(fl.recovered_fraction(0.3, 0.3, 0.4))
    assert fl.seed_summary([0.4, 0.5]) == pytest.approx({"mean": 0.45, "spread": 0.1, "n": 2})


def test_op_determinism_is_restored():
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    try:
        tf_config.enable_op_determinism()
        with fl.op_determinism(False):
            assert not tf_config.is_op_determinism_enabled()
        assert tf_config.is_op_determinism_enabled()
    finally:
        (tf_config.enable_op_determinism if before else tf_config.disable_op_determinism)()


SCRIPT = textwrap.dedent("""
    import faulthandler, sys
    # If it hangs (seen once in a full suite run, after round 2), its stacks reach stderr, which the
    # test prints, before the parent's timeout kills it.
    faulthandler.dump_traceback_later(200, exit=True)
    import json, os, numpy as np
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config
    from cifar_course import federated as fl
    tf.config.experimental.enable_op_determinism()  # as the smoke profile does
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (240, 32, 32, 3)).astype(np.uint8)
    y = rng.integers(0, 10, 240)
    parts = fl.partition_dirichlet(y, 3, alpha=0.5, min_size=20)
    out = {}
    with fl.federated_runtime():
        datasets = fl.make_client_datasets(x, y, parts, batch_size=16)
        process = fl.build_process(fl.build_client_model, datasets[0].element_spec, client_lr=0.05)
        model = fl.build_client_model()
        state = process.initialize()
        before = [np.array(w) for w in process.get_model_weights(state).trainable]
        out["workers_during"] = fl.worker_processes()
        rows = fl.run_federated(process, datasets, 2, model, x[:40], y[:40], print_every=1)
        after = [np.array(w) for w in model.get_weights()]
        out["rounds"] = len(rows)
        direct = (model.predict(x[:40].astype(np.float32), verbose=0).argmax(1) == y[:40]).mean()
        out["accuracy_is_the_final_models"] = abs(float(direct) - rows[-1]["test_accuracy"]) < 1e-9
        out["weights_changed"] = bool(any(not np.allclose(a, b) for a, b in zip(before, after)))
        # A built process reused with another seed: other initial weights, so another model.
        again = fl.train_federated(x, y, parts, fl.build_client_model, x[:40], y[:40], 1,
                                   process=process, seed=1)
        first = fl.train_federated(x, y, parts, fl.build_client_model, x[:40], y[:40], 1,
                                   process=process, seed=0)
        out["seed_changes_run"] = again[0]["train_loss"] != first[0]["train_loss"]
        # DP-FedAvg under op determinism: build_process turns it off while TFF traces, then back on.
        out["dp_rounds"] = len(fl.train_federated(x, y, parts, fl.build_client_model, x[:40], y[:40], 1,
                                                  algorithm="dp_fedavg", noise_multiplier=0.01))
        out["determinism_restored"] = tf_config.is_op_determinism_enabled()
    out["workers_after_block"] = fl.worker_processes()
    # Start the runtime again outside any block: the atexit hook must stop this worker.
    process.initialize()
    out["workers_left_to_atexit"] = fl.worker_processes()
    print("RESULT " + json.dumps(out), flush=True)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find processes")
def test_fedavg_runs_changes_weights_and_leaves_no_worker():
    # stdout is a pipe: a surviving worker would hold it open and communicate() would time out.
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                              timeout=240, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    except subprocess.TimeoutExpired as hung:  # the stacks faulthandler dumped, whole (bytes here)
        said = [text.decode() if isinstance(text, bytes) else text or ""
                for text in (hung.output, hung.stderr)]
        pytest.fail(f"hung; stdout:\n{said[0]}\nstderr:\n{said[1]}")
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])
    assert out["rounds"] == 2 and out["weights_changed"] and out["dp_rounds"] == 1
    assert out["determinism_restored"] and out["seed_changes_run"]
    assert out["accuracy_is_the_final_models"]
    assert out["workers_during"], "the test must see a worker, or it proves nothing"
    assert out["workers_after_block"] == []
    assert out["workers_left_to_atexit"]
    time.sleep(0.5)
    for pid in out["workers_during"] + out["workers_left_to_atexit"]:
        assert not _alive(pid), f"TFF worker {pid} outlived its parent"
    assert time.monotonic() - start < 240
