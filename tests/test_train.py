"""The training layer: losses, train_model(), callbacks and progress, resume after interruption, mixed
precision, strategies and multi-worker, the ResNet recipe."""

import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

import cifar_course as cc
from cifar_course.train import Progress, distribution_strategy, make_callbacks, make_loss, train_model

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------
# Losses


def test_sparse_loss_refuses_label_smoothing():
    with pytest.raises(ValueError, match="one-hot"):
        make_loss(sparse=True, label_smoothing=0.1)
    assert make_loss(sparse=False, label_smoothing=0.1).get_config()["label_smoothing"] == 0.1


# ------------------------------------------------------------------------------------------------
# train_model()


@pytest.fixture(scope="module")
def tiny_data():
    (x, y), (xt, yt) = cc.make_synthetic(256, 64, seed=0)
    return x, y, xt, yt


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_train_lowers_the_loss_and_logs_time_and_lr(tiny_data, capsys):
    x, y, xt, yt = tiny_data
    ds = cc.make_dataset(x, y, batch_size=32, training=True)
    hist = train_model(tiny_model(), ds, 4, cc.make_dataset(xt, yt, batch_size=64), learning_rate=3e-3,
                       schedule="cosine", warmup_epochs=1)
    h = hist.history
    assert h["loss"][-1] < h["loss"][0]
    assert len(h["epoch_time_s"]) == 4 and all(t > 0 for t in h["epoch_time_s"])
    assert h["lr"][-1] < h["lr"][1]  # cosine decays after the warm-up epoch
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("epoch 1/4") and "val_accuracy" in lines[0]
    assert hist.wall_time_s > 0


def test_progress_prints_every_k_epochs_and_the_last():
    printed = []
    model = tiny_model()
    (x, y), _ = cc.make_synthetic(64, 8, seed=1)
    hist = train_model(model, cc.make_dataset(x, y, batch_size=32), 5, progress_every=None,
                       callbacks=[Progress(every=2, print_fn=printed.append)])
    assert [p.split()[1] for p in printed] == ["2/5", "4/5", "5/5"]
    assert len(hist.history["epoch_time_s"]) == 5  # logged even when silent


class FakeTerminal(io.StringIO):
    """A stderr that says it is a terminal, and keeps what is written to it."""

    def isatty(self):
        return True


def test_progress_shows_a_bar_in_a_terminal_and_lines_above_it(monkeypatch, capsys):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    (x, y), _ = cc.make_synthetic(64, 8, seed=1)
    progress = Progress(every=1)
    assert progress.bar
    train_model(tiny_model(), cc.make_dataset(x, y, batch_size=16), 3, progress_every=None, callbacks=[progress])
    drawn = terminal.getvalue()
    assert "epoch 3/3" in drawn and "12/12" in drawn and "step/s" in drawn  # 3 epochs of 4 steps
    lines = capsys.readouterr().out.strip().splitlines()  # written above the bar, one per epoch
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]


def test_progress_keeps_plain_lines_in_a_jupyter_kernel_and_in_logs(monkeypatch):
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert not Progress().bar  # a notebook (nbval, the book): no bar even where stderr looks like a TTY
    monkeypatch.delitem(sys.modules, "ipykernel")
    assert Progress().bar and not Progress(every=None).bar and not Progress(bar=False).bar
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file or a pipe
    assert not Progress().bar

def test_label_smoothing_with_integer_labels(tiny_data):
    x, y, _, _ = tiny_data
    model = tiny_model()
    train_model(model, cc.make_dataset(x, y, batch_size=64), 1, label_smoothing=0.1, progress_every=None)
    assert model.loss.get_config()["label_smoothing"] == 0.1
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)


def test_logit_models_get_a_from_logits_loss(tiny_data):
    x, y, _, _ = tiny_data
    model = cc.build_small_cnn(width=4, logits=True)
    train_model(model, cc.make_dataset(x, y, batch_size=64), 1, progress_every=None)
    assert model.loss.get_config()["from_logits"]


def test_terminate_on_nan_stops_training():
    x = np.zeros((64, 32, 32, 3), np.float32)
    x[0, 0, 0, 0] = np.nan
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(64, np.int32))).batch(16)
    inputs = keras.Input((32, 32, 3))  # no ReLU on the way: it would turn NaN into 0
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(pooled))
    hist = train_model(model, ds, 3, progress_every=None)
    assert len(hist.epoch) == 1 and np.isnan(hist.history["loss"][0])


def test_early_stopping_and_tensorboard(tiny_data, tmp_path):
    x, y, xt, yt = tiny_data
    names = [type(c).__name__ for c in make_callbacks(tmp_path, tmp_path / "tb", 2, progress_every=None)]
    assert names == ["TerminateOnNaN", "Progress", "BackupAndRestore", "TensorBoard", "EarlyStopping"]
    # lr 0: nothing improves, so patience 1 stops after two epochs.
    hist = train_model(tiny_model(), cc.make_dataset(x, y, batch_size=64), 6, cc.make_dataset(xt, yt),
                       learning_rate=0.0, early_stopping_patience=1, tensorboard_dir=tmp_path / "tb",
                       progress_every=None)
    assert len(hist.epoch) == 2
    assert list((tmp_path / "tb").rglob("events.out.tfevents*"))


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == 1:
            raise KeyboardInterrupt("simulated interruption")


def test_resume_after_interruption_loses_no_finished_epoch(tiny_data, tmp_path):
    x, y, _, _ = tiny_data
    ds = cc.make_dataset(x, y, batch_size=32, training=False)  # fixed order: runs comparable
    kwargs = dict(optimizer="sgd", learning_rate=0.05, schedule="cosine", progress_every=None)

    reference = tiny_model()
    train_model(reference, ds, 4, **kwargs)

    model = tiny_model()
    with pytest.raises(KeyboardInterrupt):
        train_model(model, ds, 4, checkpoint_dir=tmp_path, callbacks=[Interrupt(epoch=2)], **kwargs)
    assert (tmp_path / "backup").exists()
    resumed = tiny_model(seed=1)  # a fresh process would rebuild the model from scratch
    hist = train_model(resumed, ds, 4, checkpoint_dir=tmp_path, **kwargs)
    assert hist.epoch == [2, 3]  # epochs 0 and 1 finished before the interruption and are not redone
    assert resumed.optimizer.iterations.numpy() == reference.optimizer.iterations.numpy()
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not [f for f in (tmp_path / "backup").rglob("*") if f.is_file()]  # nothing left to resume


def test_train_rejects_bad_input(tiny_data):
    x, y, _, _ = tiny_data
    with pytest.raises(ValueError, match="epochs"):
        train_model(tiny_model(), cc.make_dataset(x, y), 0)
    with pytest.raises(ValueError, match="images, labels"):
        train_model(tiny_model(), tf.data.Dataset.from_tensor_slices(x).batch(8), 1)


# ------------------------------------------------------------------------------------------------
# Mixed precision, strategies, the ResNet recipe


def test_training_speed_per_policy_restores_float32():
    speed = cc.training_speed(lambda: cc.build_small_cnn(width=4), "mixed_bfloat16", batch_size=8, steps=1)
    assert speed > 0 and keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(ValueError):
        cc.training_speed(lambda: cc.build_small_cnn(width=4), "no_such_policy", batch_size=8, steps=1)
    assert keras.mixed_precision.global_policy().name == "float32"

def test_mixed_precision_switch_keeps_float32_outputs():
    try:
        assert cc.use_mixed_precision() == "mixed_float16"
        model = cc.build_small_cnn(width=4)
        assert model.layers[1].compute_dtype == "float16" and model.output.dtype == tf.float32
    finally:
        cc.use_mixed_precision(False)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_distribution_strategy_choices(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribution_strategy("default") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribution_strategy("multiworker")
    with pytest.raises(ValueError, match="mirrored"):
        distribution_strategy("tpu")


WORKER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    import cifar_course as cc
    strategy = cc.distribution_strategy("auto")
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), strategy
    with strategy.scope():
        tf.keras.utils.set_random_seed(0)
        inputs = tf.keras.Input((8,))
        model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax")(inputs))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
    cc.train_model(model, ds, 2, optimizer="sgd", learning_rate=0.1, progress_every=None)
    print(json.dumps({"checksum": float(sum(np.abs(w).sum() for w in model.get_weights())),
                      "steps": int(model.optimizer.iterations.numpy())}))
""")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multiworker_training_on_two_local_workers(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                                  "index": index}}),
                   TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            p.kill()
    assert results[0]["steps"] == results[1]["steps"] > 0
    assert results[0]["checksum"] == pytest.approx(results[1]["checksum"], rel=1e-6)


def test_resnet_recipe_full_profile_uses_gpu_switches():
    full = cc.resnet_recipe("full")
    assert full["mixed_precision"] == "mixed_float16" and full["jit_compile"] and full["epochs"] >= 100
    assert cc.resnet_recipe("smoke")["epochs"] < full["epochs"]
    assert set(cc.FULL_PROFILE_TARGETS) == {"resnet20", "flagship"}
    with pytest.raises(ValueError, match="Unknown ResNet"):
        cc.resnet_recipe("quick", lr=1)
