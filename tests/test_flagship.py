"""The flagship recipe: hyperparameters, network and whitening, alternating flips, Lookahead, TTA, and
short training runs with Muon and with SGD."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

import cifar_course as cc
from cifar_course.flagship import build_flagship


# ------------------------------------------------------------------------------------------------
# Hyperparameters


def test_flagship_recipe_per_profile_and_overrides():
    quick, full = cc.flagship_recipe("quick"), cc.flagship_recipe("full")
    assert full["widths"] == (64, 256, 256) and full["jit_compile"] and full["mixed_precision"]
    assert cc.flagship_recipe("quick", epochs=3)["epochs"] == 3 != quick["epochs"]
    with pytest.raises(ValueError, match="Unknown flagship"):
        cc.flagship_recipe("quick", epoch=3)
    with pytest.raises(ValueError, match="optimizer must be 'muon' or 'sgd'"):
        cc.flagship_recipe("quick", optimizer="adam")
    assert quick["optimizer"] == "muon" and cc.flagship_recipe("quick", **cc.FLAGSHIP_SGD)["lookahead"]


# ------------------------------------------------------------------------------------------------
# Network: partial-identity convolutions, the whitening stem


def test_partial_identity_passes_the_first_channels_through():
    # One initializer per use, as the models do (a reused one draws the same numbers each call).
    kernel = cc.PartialIdentity()((3, 3, 4, 6)).numpy()
    conv = tf.keras.layers.Conv2D(6, 3, padding="same", use_bias=False,
                                  kernel_initializer=cc.PartialIdentity())
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    y = conv(x).numpy()
    np.testing.assert_allclose(y[..., :4], x, atol=1e-6)  # identity for min(in, out) = 4 filters
    assert np.abs(kernel[..., 4:]).max() > 0  # the other filters are random
    assert np.abs(kernel[..., 4:]).max() <= 1 / np.sqrt(9 * 4) + 1e-6  # U(+-1/sqrt(fan_in))
    # More inputs than outputs: every filter is an identity.
    wide_in = cc.PartialIdentity()((3, 3, 6, 4)).numpy()
    assert np.count_nonzero(wide_in) == 4 and wide_in[1, 1, 3, 3] == 1


def test_init_whitening_decorrelates_patches_and_freezes_the_stem():
    rng = np.random.default_rng(0)
    # Correlated images: smooth random fields, so neighbouring pixels and channels correlate strongly.
    base = rng.normal(size=(200, 8, 8, 1))
    images = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2) + 0.1 * rng.normal(size=(200, 32, 32, 3))
    images = images.astype("float32")
    model = cc.init_whitening(build_flagship(widths=(8, 8, 8)), images, eps=1e-6)
    stem = model.get_layer("whiten")
    assert not stem.trainable
    out = tf.keras.Model(model.input, stem.output)(images).numpy().reshape(-1, 24)
    cov = np.cov(out[:, :12], rowvar=False)
    np.testing.assert_allclose(cov, np.eye(12), atol=0.05)
    np.testing.assert_allclose(out[:, 12:], -out[:, :12], atol=1e-4)  # the mirrored half


# ------------------------------------------------------------------------------------------------
# Data: alternating flips


def test_alternating_flip_mirrors_every_image_on_odd_epochs():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8, 3)).astype("uint8")
    y = np.arange(40)  # the label tells which image it is
    ds = cc.make_alternating_flip_dataset(x, y, epochs=3, batch_size=40, pad=0)
    epochs = []
    for images, labels in ds:  # one batch per epoch, back in image order, back to uint8
        epochs.append(np.round(images.numpy() * 255).astype("uint8")[np.argsort(labels.numpy())])
    assert len(epochs) == 3
    mirrored = np.array([np.array_equal(e, x[i, :, ::-1]) for i, e in enumerate(epochs[0])])
    assert all(np.array_equal(e, x[i]) or mirrored[i] for i, e in enumerate(epochs[0]))
    assert 0.2 < mirrored.mean() < 0.8  # a coin toss per image, once
    np.testing.assert_array_equal(epochs[1], epochs[0][:, :, ::-1])  # odd epoch: all flipped
    np.testing.assert_array_equal(epochs[2], epochs[0])


def test_progressive_resizing_shrinks_the_first_epochs_only():
    x = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3)).astype("uint8")
    ds = cc.make_alternating_flip_dataset(x, np.arange(20), epochs=3, batch_size=10, pad=0,
                                          sizes=[16, 16, 32])
    assert [tuple(images.shape) for images, _ in ds] == [(10, 16, 16, 3)] * 4 + [(10, 32, 32, 3)] * 2
    recipe = cc.flagship_recipe("smoke", epochs=5, low_resolution=24, low_resolution_epochs=2)
    assert cc.flagship.resolution_per_epoch(recipe, 32) == [24, 24, 32, 32, 32]
    assert cc.flagship.resolution_per_epoch(cc.flagship_recipe("smoke"), 32) is None
    with pytest.raises(ValueError, match="low_resolution_epochs"):
        cc.flagship.resolution_per_epoch({**recipe, "low_resolution_epochs": 5}, 32)
    with pytest.raises(ValueError, match="one image size of at least 8 pixels per epoch"):
        cc.make_alternating_flip_dataset(x, np.arange(20), epochs=3, batch_size=10, sizes=[16, 32])
    with pytest.raises(ValueError, match="needs alternating_flip=True"):
        cc.train_flagship(cc.make_synthetic(64, 32, seed=0), {**recipe, "alternating_flip": False},
                          progress_every=None)


def test_alternating_flip_dataset_refuses_mismatched_labels():
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        cc.make_alternating_flip_dataset(np.zeros((10, 8, 8, 3), "uint8"), np.zeros(9), epochs=1,
                                         batch_size=2)


# ------------------------------------------------------------------------------------------------
# Averaging and test-time augmentation


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


def test_epoch_eval_refuses_an_unknown_tta_level():
    with pytest.raises(ValueError, match="tta_level must be"):
        cc.EpochEval(np.zeros((2, 32, 32, 3), "uint8"), np.zeros(2), tta_level=3)


# ------------------------------------------------------------------------------------------------
# Training


def test_train_flagship_learns_on_a_small_synthetic_run():
    # 512 images, 4 steps an epoch: on a CPU without bfloat16 instructions (AVX2) a mixed_bfloat16 step
    # costs about 3x a float32 one.
    data = cc.make_synthetic(512, 256, seed=0)
    recipe = cc.flagship_recipe("smoke", epochs=3, mixed_precision="mixed_bfloat16")
    model, hist, rows = cc.train_flagship(data, recipe, eval_every=1, progress_every=None)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["test_acc"] > 0.2  # chance is 0.1 (standard error 0.02 on 256 images)
    assert keras.mixed_precision.global_policy().name == "float32"  # switched back afterwards
    assert not model.get_layer("whiten").trainable


def test_train_flagship_with_progressive_resizing_learns_and_evaluates_at_full_size():
    data = cc.make_synthetic(512, 256, seed=0)
    recipe = cc.flagship_recipe("smoke", epochs=3, low_resolution=16, low_resolution_epochs=2)
    model, _, rows = cc.train_flagship(data, recipe, progress_every=None)
    assert model.input_shape == (None, None, None, 3)
    assert rows[-1]["test_acc"] > 0.2  # chance is 0.1 (standard error 0.02 on 256 images)


def test_train_flagship_with_sgd_and_lookahead_learns_on_a_small_synthetic_run():
    data = cc.make_synthetic(1024, 256, seed=0)
    recipe = cc.flagship_recipe("smoke", **{**cc.FLAGSHIP_SGD, "batch_size": 128, "epochs": 3})
    _, _, rows = cc.train_flagship(data, recipe, progress_every=None)
    assert rows[-1]["test_acc"] > 0.2  # chance is 0.1 (standard error 0.02 on 256 images)
