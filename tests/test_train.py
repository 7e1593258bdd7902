"""The training layer: schedules, optimizers, callbacks, resume after interruption, multi-worker."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

import cifar_course as cc
from cifar_course.train import (
    SCHEDULES, Progress, current_learning_rate, distribution_strategy, make_callbacks, make_loss,
    make_optimizer, make_schedule, schedule_values, train,
)

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------
# Schedules


def test_seed_step_schedule_follows_the_seed_rule():
    # The classic tutorial step rule: lr 1e-3, x0.8 when Keras' epoch index exceeds 10, x0.5 when it exceeds 20.
    spe = 7
    s = make_schedule("seed_step", 1e-3, total_steps=30 * spe, steps_per_epoch=spe)
    per_epoch = schedule_values(s, 30 * spe)[::spe]
    expected = [1e-3 * (0.5 if e > 20 else 0.8 if e > 10 else 1.0) for e in range(30)]
    np.testing.assert_allclose(per_epoch, expected, rtol=1e-6)


def test_step_schedule_decays_at_its_milestones():
    v = schedule_values(make_schedule("step", 0.1, 100, milestones=(0.5, 0.75), factor=0.1), 100)
    np.testing.assert_allclose(v[[0, 49, 50, 74, 75, 99]], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)


def test_cosine_decays_monotonically_to_the_final_fraction():
    v = schedule_values(make_schedule("cosine", 0.2, 101, final_fraction=0.1), 101)
    assert v[0] == pytest.approx(0.2) and v[-1] == pytest.approx(0.02, rel=1e-4)
    assert (np.diff(v) <= 1e-9).all()


def test_onecycle_rises_to_its_peak_then_falls():
    v = schedule_values(make_schedule("onecycle", 1.0, 100, initial_fraction=0.2, peak_fraction=0.25,
                                      final_fraction=0.0), 100)
    assert v[0] == pytest.approx(0.2) and v.argmax() == 25 and v.max() == pytest.approx(1.0)
    assert (np.diff(v[:25]) > 0).all() and (np.diff(v[25:]) < 0).all() and v[-1] < 0.02


@pytest.mark.parametrize("name", [s for s in SCHEDULES if s != "onecycle"])
def test_warmup_ramps_linearly_to_the_base_rate(name):
    s = make_schedule(name, 0.4, 200, warmup_steps=10, steps_per_epoch=20)
    v = schedule_values(s, 200)
    np.testing.assert_allclose(v[:10], 0.4 * np.arange(1, 11) / 10, rtol=1e-5)
    assert v[10] == pytest.approx(0.4)


def test_schedule_errors_say_what_to_do():
    with pytest.raises(ValueError, match="choose one of"):
        make_schedule("linear", 0.1, 10)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_schedule("seed_step", 0.1, 10)
    with pytest.raises(ValueError, match="warmup_steps"):
        make_schedule("cosine", 0.1, 10, warmup_steps=10)


def test_plot_schedule_draws_one_line_per_schedule():
    import matplotlib
    matplotlib.use("Agg")
    scheds = {n: make_schedule(n, 0.1, 50, steps_per_epoch=5) for n in ("cosine", "onecycle")}
    ax = cc.plot_schedule(scheds, 50, steps_per_epoch=5)
    assert len(ax.get_lines()) == 2 and ax.get_xlabel() == "epoch"


# ------------------------------------------------------------------------------------------------
# Optimizers and losses


def test_make_optimizer_configures_keras_optimizers():
    sgd = make_optimizer("sgd", 0.1, weight_decay=5e-4, momentum=0.9, clipnorm=1.0)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == 0.9
    assert sgd.weight_decay == pytest.approx(5e-4) and sgd.global_clipnorm == 1.0
    assert isinstance(make_optimizer("adamw", 1e-3), keras.optimizers.AdamW)
    assert make_optimizer("adam", 1e-3).weight_decay is None
    with pytest.raises(ValueError, match="adam, adamw, sgd"):
        make_optimizer("rmsprop")


def test_global_clipnorm_bounds_the_update():
    var = tf.Variable([0.0, 0.0])
    opt = make_optimizer("sgd", 1.0, momentum=0.0, clipnorm=1.0)
    opt.apply_gradients([(tf.constant([30.0, 40.0]), var)])  # norm 50 -> clipped to 1
    np.testing.assert_allclose(var.numpy(), [-0.6, -0.8], rtol=1e-5)


def test_sgd_weight_decay_is_decoupled():
    var = tf.Variable([1.0])
    make_optimizer("sgd", 0.1, weight_decay=0.5, momentum=0.0).apply_gradients([(tf.constant([0.0]), var)])
    assert var.numpy()[0] == pytest.approx(1.0 - 0.1 * 0.5)  # shrinks with zero gradient


def test_sparse_loss_refuses_label_smoothing():
    with pytest.raises(ValueError, match="one-hot"):
        make_loss(sparse=True, label_smoothing=0.1)
    assert make_loss(sparse=False, label_smoothing=0.1).get_config()["label_smoothing"] == 0.1


# ------------------------------------------------------------------------------------------------
# train()


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
    hist = train(tiny_model(), ds, 4, cc.make_dataset(xt, yt, batch_size=64), learning_rate=3e-3,
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
    hist = train(model, cc.make_dataset(x, y, batch_size=32), 5, progress_every=None,
                 callbacks=[Progress(every=2, print_fn=printed.append)])
    assert [p.split()[1] for p in printed] == ["2/5", "4/5", "5/5"]
    assert len(hist.history["epoch_time_s"]) == 5  # logged even when silent


def test_label_smoothing_with_integer_labels(tiny_data):
    x, y, _, _ = tiny_data
    model = tiny_model()
    train(model, cc.make_dataset(x, y, batch_size=64), 1, label_smoothing=0.1, progress_every=None)
    assert model.loss.get_config()["label_smoothing"] == 0.1
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)


def test_logit_models_get_a_from_logits_loss(tiny_data):
    x, y, _, _ = tiny_data
    model = cc.build_small_cnn(width=4, logits=True)
    train(model, cc.make_dataset(x, y, batch_size=64), 1, progress_every=None)
    assert model.loss.get_config()["from_logits"]


def test_terminate_on_nan_stops_training():
    x = np.zeros((64, 32, 32, 3), np.float32)
    x[0, 0, 0, 0] = np.nan
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(64, np.int32))).batch(16)
    inputs = keras.Input((32, 32, 3))  # no ReLU on the way: it would turn NaN into 0
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(pooled))
    hist = train(model, ds, 3, progress_every=None)
    assert len(hist.epoch) == 1 and np.isnan(hist.history["loss"][0])


def test_early_stopping_and_tensorboard(tiny_data, tmp_path):
    x, y, xt, yt = tiny_data
    names = [type(c).__name__ for c in make_callbacks(tmp_path, tmp_path / "tb", 2, progress_every=None)]
    assert names == ["TerminateOnNaN", "Progress", "BackupAndRestore", "TensorBoard", "EarlyStopping"]
    # lr 0: nothing improves, so patience 1 stops after two epochs.
    hist = train(tiny_model(), cc.make_dataset(x, y, batch_size=64), 6, cc.make_dataset(xt, yt),
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
    train(reference, ds, 4, **kwargs)

    model = tiny_model()
    with pytest.raises(KeyboardInterrupt):
        train(model, ds, 4, checkpoint_dir=tmp_path, callbacks=[Interrupt(epoch=2)], **kwargs)
    assert (tmp_path / "backup").exists()
    resumed = tiny_model(seed=1)  # a fresh process would rebuild the model from scratch
    hist = train(resumed, ds, 4, checkpoint_dir=tmp_path, **kwargs)
    assert hist.epoch == [2, 3]  # epochs 0 and 1 finished before the interruption and are not redone
    assert resumed.optimizer.iterations.numpy() == reference.optimizer.iterations.numpy()
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not [f for f in (tmp_path / "backup").rglob("*") if f.is_file()]  # nothing left to resume


def test_train_rejects_bad_input(tiny_data):
    x, y, _, _ = tiny_data
    with pytest.raises(ValueError, match="epochs"):
        train(tiny_model(), cc.make_dataset(x, y), 0)
    with pytest.raises(ValueError, match="images, labels"):
        train(tiny_model(), tf.data.Dataset.from_tensor_slices(x).batch(8), 1)


def test_current_learning_rate_reads_schedules():
    opt = make_optimizer("sgd", make_schedule("step", 1.0, 10, milestones=(2,), factor=0.5))
    assert current_learning_rate(opt) == 1.0
    opt.iterations.assign(5)
    assert current_learning_rate(opt) == 0.5


# ------------------------------------------------------------------------------------------------
# Mixed precision, strategies, flagship recipe


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
    cc.train(model, ds, 2, optimizer="sgd", learning_rate=0.1, progress_every=None)
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


def test_flagship_recipe_per_profile_and_overrides():
    quick, full = cc.flagship_recipe("quick"), cc.flagship_recipe("full")
    assert full["widths"] == (64, 256, 256) and full["jit_compile"] and full["mixed_precision"]
    assert cc.flagship_recipe("quick", epochs=3)["epochs"] == 3 != quick["epochs"]
    with pytest.raises(ValueError, match="Unknown flagship"):
        cc.flagship_recipe("quick", epoch=3)
    with pytest.raises(ValueError, match="optimizer must be 'muon' or 'sgd'"):
        cc.flagship_recipe("quick", optimizer="adam")
    assert quick["optimizer"] == "muon" and cc.flagship_recipe("quick", **cc.FLAGSHIP_SGD)["lookahead"]


def test_train_flagship_learns_on_a_small_synthetic_run():
    data = cc.make_synthetic(1024, 256, seed=0)
    recipe = cc.flagship_recipe("smoke", epochs=3, mixed_precision="mixed_bfloat16")
    model, hist, rows = cc.train_flagship(data, recipe, eval_every=1, progress_every=None)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["test_acc"] > 0.2  # chance is 0.1 (standard error 0.02 on 256 images)
    assert keras.mixed_precision.global_policy().name == "float32"  # switched back afterwards
    assert not model.get_layer("whiten").trainable


def test_train_flagship_with_sgd_and_lookahead_learns_on_a_small_synthetic_run():
    data = cc.make_synthetic(1024, 256, seed=0)
    recipe = cc.flagship_recipe("smoke", **{**cc.FLAGSHIP_SGD, "batch_size": 128, "epochs": 3})
    _, _, rows = cc.train_flagship(data, recipe, progress_every=None)
    assert rows[-1]["test_acc"] > 0.2  # chance is 0.1 (standard error 0.02 on 256 images)


def test_resnet_recipe_full_profile_uses_gpu_switches():
    full = cc.resnet_recipe("full")
    assert full["mixed_precision"] == "mixed_float16" and full["jit_compile"] and full["epochs"] >= 100
    assert cc.resnet_recipe("smoke")["epochs"] < full["epochs"]
    assert set(cc.FULL_PROFILE_TARGETS) == {"resnet20", "flagship"}
    with pytest.raises(ValueError, match="Unknown ResNet"):
        cc.resnet_recipe("quick", lr=1)


# ------------------------------------------------------------------------------------------------
# Flagship pieces: BatchNorm-bias learning rate, Lookahead, test-time augmentation


def _one_sgd_step(bias_scaler):
    var, other = tf.Variable([1.0, 2.0]), tf.Variable([1.0, 2.0])
    opt = cc.SGDScaledBiases([var], bias_scaler, learning_rate=0.1, momentum=0.9)
    grad = tf.constant([0.5, -1.0])
    opt.apply_gradients([(grad, var), (grad, other)])
    return var.numpy() - 1 - np.array([0, 1]), other.numpy() - 1 - np.array([0, 1])


def test_sgd_scaled_biases_steps_only_the_listed_variables_further():
    scaled, unscaled = _one_sgd_step(8.0)
    np.testing.assert_allclose(unscaled, [-0.05, 0.1], rtol=1e-6)  # plain SGD: -lr * grad
    np.testing.assert_allclose(scaled, 8 * unscaled, rtol=1e-6)


@pytest.mark.parametrize("shape", [(576, 64), (64, 576)])
def test_orthogonalize_keeps_singular_vectors_and_evens_out_singular_values(shape):
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], min(shape))))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], min(shape))))
    spread = np.geomspace(0.3, 10, min(shape))  # singular values 33x apart
    matrix = (u * spread) @ v.T
    out = cc.orthogonalize(tf.constant(matrix, tf.float32)).numpy()
    assert out.shape == shape
    singular_values = np.linalg.svd(out, compute_uv=False)
    assert 0.3 < singular_values.min() and singular_values.max() < 1.3  # now within about 3x of 1
    # Same singular vectors: u.T @ out @ v is diagonal (the new singular values), up to round-off.
    core = u.T @ out @ v
    off_diagonal = core - np.diag(np.diag(core))
    assert np.abs(off_diagonal).max() < 1e-2 * np.abs(np.diag(core)).max()


def test_muon_orthogonalizes_kernel_steps_and_leaves_the_rest_to_sgd():
    rng = np.random.default_rng(0)
    kernel = tf.Variable(rng.normal(size=(3, 3, 4, 8)).astype("float32"))
    bias, head = tf.Variable(np.ones(8, "float32")), tf.Variable(np.ones((8, 2), "float32"))
    opt = cc.Muon([kernel], muon_learning_rate=0.2, muon_momentum=0.5, scaled_variables=[bias],
                  bias_scaler=4.0, learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
    grads = [tf.constant(rng.normal(size=v.shape).astype("float32")) for v in (kernel, bias, head)]
    before = [v.numpy() for v in (kernel, bias, head)]
    opt.apply_gradients(zip(grads, [kernel, bias, head]))
    # The kernel: rescaled to norm sqrt(8 filters), then minus 0.2 times the orthogonalized Nesterov step
    # (first step: momentum = gradient, step = (1 + 0.5) * gradient); no weight decay.
    rescaled = before[0] * np.sqrt(8) / np.linalg.norm(before[0])
    step = cc.orthogonalize(tf.reshape(1.5 * grads[0], [-1, 8])).numpy().reshape(3, 3, 4, 8)
    np.testing.assert_allclose(kernel.numpy(), rescaled - 0.2 * step, rtol=1e-4, atol=1e-5)
    # The others: Nesterov SGD (first step: -(1 + 0.9) * lr * grad), the bias with 4x the gradient, and
    # decoupled weight decay (applied first) of lr * 0.1 of the weights.
    for var, old, grad, scale in [(bias, before[1], grads[1], 4.0), (head, before[2], grads[2], 1.0)]:
        expected = old * (1 - 0.1 * 0.1) - 1.9 * 0.1 * scale * grad.numpy()
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_muon_refuses_a_schedule_that_starts_at_zero():
    kernel = tf.Variable(np.ones((3, 3, 2, 2), "float32"))
    from_zero = cc.make_schedule("onecycle", 0.1, total_steps=10, initial_fraction=0.0)
    for learning_rate in (from_zero, 0.0):
        with pytest.raises(ValueError, match="starts above 0"):
            cc.Muon([kernel], learning_rate=learning_rate)
    cc.Muon([kernel], learning_rate=cc.make_schedule("onecycle", 0.1, total_steps=10))  # starts at 0.01


def test_lookahead_averages_and_ends_on_the_slow_weights():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x, y = np.random.default_rng(0).normal(size=(64, 4)), np.zeros((64, 3))
    averaging = cc.Lookahead(total_steps=8, period=2, max_decay=0.9)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[averaging])
    for slow, w in zip(averaging.slow, model.weights):
        np.testing.assert_array_equal(slow.numpy(), w.numpy())
    before = [w.numpy() for w in model.weights]
    for w in model.weights:
        w.assign(w + 1.0)
    averaging._sync(0.25)  # slow = 0.25 * slow + 0.75 * weights, and the weights jump to it
    for b, w in zip(before, model.weights):
        np.testing.assert_allclose(w.numpy(), b + 0.75, rtol=1e-6)


def test_predict_tta_views():
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 32, 32, 3)).astype("uint8")
    plain, mirror, shifted = (cc.predict_tta(model, x, flip=f, translate=t) for f, t in
                              [(False, 0), (True, 0), (True, 1)])
    for p in (plain, mirror, shifted):
        np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    assert not np.allclose(plain, mirror) and not np.allclose(mirror, shifted)  # position matters here
    flat = np.full((2, 32, 32, 3), 128, "uint8")  # every view of a flat image is the same image
    every_view, one_view = cc.predict_tta(model, flat, translate=1), cc.predict_tta(model, flat, flip=False)
    np.testing.assert_allclose(every_view, one_view, rtol=1e-5)


def test_current_learning_rate_reads_schedules_through_tfa_wrappers():
    import tensorflow_addons as tfa

    schedule = make_schedule("cosine", 0.1, total_steps=10)
    wrapped = tfa.optimizers.Lookahead(keras.optimizers.legacy.SGD(schedule))
    assert current_learning_rate(wrapped) == pytest.approx(0.1)
    wrapped.iterations.assign(5)
    assert current_learning_rate(wrapped) == pytest.approx(float(schedule(5)))


def test_epoch_eval_refuses_an_unknown_tta_level():
    with pytest.raises(ValueError, match="tta_level must be"):
        cc.EpochEval(np.zeros((2, 32, 32, 3), "uint8"), np.zeros(2), tta_level=3)
