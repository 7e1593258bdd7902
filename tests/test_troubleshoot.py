"""Troubleshooting helpers: per-step losses recovered from Keras' running mean, sorting, roughness."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

import cifar_course as cc


def test_batch_losses_match_the_loss_of_each_step():
    # A model with no trainable weights (learning has no effect) and a loss we can compute per batch.
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Softmax()(inputs))
    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    y = np.arange(40) % 3
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    steps = cc.BatchLosses()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy())
    model.fit(ds, epochs=2, callbacks=[steps], verbose=0)
    loss = keras.losses.SparseCategoricalCrossentropy()
    expected = [float(loss(y[i:i + 8], tf.nn.softmax(x[i:i + 8]))) for i in range(0, 40, 8)] * 2
    np.testing.assert_allclose(steps.losses, expected, rtol=1e-4)


def test_sort_by_label_groups_classes_and_keeps_pairs():
    x = np.arange(12)[:, None] * np.ones((1, 2))
    y = np.array([2, 0, 1] * 4)
    xs, ys = cc.sort_by_label(x, y)
    assert ys.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert np.array_equal(y[xs[:, 0].astype(int)], ys)  # every image still carries its own label


def test_roughness_separates_smooth_from_oscillating():
    smooth = np.linspace(2.0, 1.0, 100)
    noisy = smooth + 0.5 * (np.arange(100) % 2)
    assert cc.roughness(smooth) < 0.02 < 0.4 < cc.roughness(noisy)
    with pytest.raises(ValueError):
        cc.roughness([1.0])


def test_gradient_norms_match_a_hand_computed_gradient_and_change_nothing():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", use_bias=False)(inputs))
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.arange(8) % 2
    before = [w.copy() for w in model.get_weights()]
    rows = cc.gradient_norms(model, x, y)
    # softmax cross-entropy: dL/dW = x^T (p - onehot(y)) / batch
    p = model.predict(x, verbose=0)
    expected = np.linalg.norm(x.T @ (p - np.eye(2)[y]) / len(x))
    assert [r["layer"] for r in rows] == [model.layers[-1].name]
    np.testing.assert_allclose(rows[0]["gradient norm"], expected, rtol=1e-4)
    np.testing.assert_allclose(rows[0]["ratio"], expected / np.linalg.norm(before[0]), rtol=1e-4)
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)


def test_gradient_norms_cover_every_kernel_of_a_resnet_in_forward_order():
    model = cc.build_resnet(8, width=4, residual=False)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    rows = cc.gradient_norms(model, x, np.arange(4))
    assert [r["kind"] for r in rows] == ["Conv2D"] * 7 + ["Dense"]
    assert rows[0]["layer"] == "stem_conv" and rows[-1]["layer"] == "classifier"
    assert all(r["gradient norm"] > 0 for r in rows)


def test_gradient_norm_monitor_records_every_epoch_and_leaves_batchnorm_state_alone():
    model = cc.build_resnet(8, width=4)
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
    y = np.arange(8) % 10
    moving = [w.numpy() for w in model.non_trainable_weights]
    cc.gradient_norms(model, x, y)
    for w, before in zip(model.non_trainable_weights, moving):
        np.testing.assert_array_equal(w.numpy(), before)
    monitor = cc.GradientNormMonitor(x[:4], y[:4])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy())
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[monitor], verbose=0)
    assert len(monitor.history) == 2
    assert [r["layer"] for r in monitor.history[0]] == [r["layer"] for r in monitor.history[1]]
