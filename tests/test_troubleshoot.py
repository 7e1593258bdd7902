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
