"""SimCLR: augmentations, the two contrastive losses (against NumPy), the model's train_step, and the
frozen-feature evaluations."""

import numpy as np
import pytest
import tensorflow as tf

import cifar_course as cc
from cifar_course import simclr


def nt_xent_numpy(z1, z2, temperature):
    """Plain NumPy NT-Xent: loop over the 2N anchors, softmax over the 2N - 1 others."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2, n = len(z), len(z1)
    losses = []
    for i in range(n2):
        partner = (i + n) % n2
        others = [j for j in range(n2) if j != i]
        logits = np.array([z[i] @ z[j] / temperature for j in others])
        log_den = np.log(np.exp(logits - logits.max()).sum()) + logits.max()
        losses.append(log_den - z[i] @ z[partner] / temperature)
    return float(np.mean(losses))


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy(temperature):
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(6, 5)).astype("float32"), rng.normal(size=(6, 5)).astype("float32")
    got = float(simclr.nt_xent_loss(z1, z2, temperature))
    assert got == pytest.approx(nt_xent_numpy(z1, z2, temperature), rel=1e-4)


def test_npairs_is_one_direction_cross_view_only():
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 4)).astype("float32")
    tfa_loss = float(simclr.npairs_loss(z1, z2, 0.5))
    assert tfa_loss == pytest.approx(float(simclr.npairs_loss_direct(z1, z2, 0.5)), rel=1e-5)
    # NumPy: view-1 anchors only, candidates = the N view-2 projections
    a = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    b = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    logits = a @ b.T / 0.5
    ref = np.mean(np.log(np.exp(logits).sum(1)) - np.diag(logits))
    assert tfa_loss == pytest.approx(ref, rel=1e-4)
    assert tfa_loss != pytest.approx(float(simclr.nt_xent_loss(z1, z2, 0.5)), rel=1e-3)


def test_identical_views_give_low_loss():
    z = np.eye(8, dtype="float32")
    assert float(simclr.nt_xent_loss(z, z, 0.1)) < 1e-3
    assert float(simclr.nt_xent_loss(z, np.roll(z, 1, axis=0), 0.1)) > 5


def test_augment_shapes_range_and_randomness():
    images = tf.random.uniform((16, 32, 32, 3))
    v1, v2 = simclr.simclr_augment(images), simclr.simclr_augment(images)
    assert v1.shape == images.shape
    assert float(tf.reduce_min(v1)) >= 0 and float(tf.reduce_max(v1)) <= 1
    assert float(tf.reduce_mean(tf.abs(v1 - v2))) > 0.01


def test_views_dataset_and_one_training_step():
    x = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    ds = simclr.make_views_dataset(x, batch_size=32)
    v1, v2 = next(iter(ds))
    assert v1.shape == v2.shape == (32, 32, 32, 3)
    encoder = simclr.encoder_from(cc.build_small_cnn(width=4))
    model = simclr.SimCLR(encoder, simclr.build_projection_head(encoder.output_shape[-1], 16, 8))
    model.compile(optimizer="adam")
    before = [w.numpy().copy() for w in encoder.trainable_weights]
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, encoder.trainable_weights))
    with pytest.raises(ValueError, match="lower batch_size"):
        simclr.make_views_dataset(x[:10], batch_size=32)


def test_encoder_needs_global_pooling():
    with pytest.raises(ValueError, match="GlobalAveragePooling2D"):
        simclr.encoder_from(cc.build_baseline_cnn())


def test_knn_and_linear_eval_on_separable_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 5
    y = np.repeat(np.arange(3), 30)
    f = centres[y] + rng.normal(size=(90, 8))
    assert simclr.knn_accuracy(f[::2], y[::2], f[1::2], y[1::2], k=5, num_classes=3) == 1.0
    assert simclr.knn_accuracy(f[::2], rng.permutation(y[::2]), f[1::2], y[1::2], k=5, num_classes=3) < 0.8
    assert simclr.linear_probe(f[::2], y[::2], f[1::2], y[1::2], epochs=100, learning_rate=0.05) > 0.95
    assert simclr.linear_probe(f[::2], rng.permutation(y[::2]), f[1::2], y[1::2], epochs=100,
                               learning_rate=0.05) < 0.8


def test_label_fraction_is_balanced():
    y = np.repeat(np.arange(10), 100)
    idx = simclr.label_fraction(y, 0.05)
    assert len(idx) == 50 and len(np.unique(idx)) == 50
    assert (np.bincount(y[idx]) == 5).all()
    with pytest.raises(ValueError):
        simclr.label_fraction(y, 0)


def test_fine_tune_probe_first_fits_the_head_before_end_to_end_training():
    # four classes that differ in colour: frozen random features already separate them
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 16)
    colours = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [200, 200, 200]])
    x = np.clip(colours[y][:, None, None, :] + rng.normal(0, 20, (64, 32, 32, 3)), 0, 255)
    x = x.astype(np.uint8)

    def accuracy(probe_first):
        cc.seed_everything(0)
        encoder = simclr.encoder_from(cc.build_small_cnn(width=4))
        features = simclr.extract_features(encoder, x)  # what the probe sees, before any training
        # a rate of zero: the end-to-end epoch moves no weight (only BatchNorm's running statistics),
        # so the classifier's own last layer shows what the probe did to it
        model = simclr.fine_tune(encoder, x, y, 1, probe_first=probe_first, batch_size=32,
                                 learning_rate=0.0, augment=None, probe_epochs=200)
        logits = model.layers[-1](features).numpy()
        return float(np.mean(logits.argmax(1) == y))

    fitted, random_head = accuracy(True), accuracy(False)
    assert fitted >= 0.75 and fitted > random_head + 0.25, (fitted, random_head)


def test_fine_tune_decays_its_rate_to_zero_by_default():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y = np.repeat(np.arange(4), 16)
    rates = {}
    for schedule in ("cosine", "constant"):
        encoder = simclr.encoder_from(cc.build_small_cnn(width=4))
        kwargs = {} if schedule == "cosine" else {"schedule": schedule}
        model = simclr.fine_tune(encoder, x, y, 2, batch_size=32, learning_rate=1e-3, augment=None,
                                 **kwargs)
        lr = model.optimizer.learning_rate
        steps = model.optimizer.iterations
        rates[schedule] = float(lr(steps) if callable(lr) else lr)
    assert rates["cosine"] < 1e-5 and rates["constant"] == pytest.approx(1e-3), rates


def test_pretrain_keeps_weights_and_logs_knn():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y = np.repeat(np.arange(4), 16)
    encoder = simclr.encoder_from(cc.build_small_cnn(width=4))
    monitor = simclr.KNNMonitor(encoder, x[:32], y[:32], x[32:], y[32:], k=5)
    run = simclr.pretrain(encoder, simclr.make_views_dataset(x, 32), 2, schedule_epochs=4,
                          monitor=monitor, keep_epochs=(1, 2))
    assert len(run["loss"]) == len(run["knn_accuracy"]) == 2
    assert sorted(run["weights"]) == [1, 2]
    assert all(np.allclose(a, b) for a, b in zip(run["weights"][2], encoder.get_weights()))
    assert not all(np.allclose(a, b) for a, b in zip(run["weights"][1], run["weights"][2]))
