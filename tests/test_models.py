"""Every builder in MODELS builds and runs; parameter counts follow from the architecture."""

import numpy as np
import pytest
import tensorflow as tf

import cifar_course as cc
from cifar_course.models import MODELS, build_baseline_cnn, build_flagship, build_resnet, build_small_cnn


def conv_params(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def dense_params(n_in, n_out, bias=True):
    return n_in * n_out + (n_out if bias else 0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_runs_on_a_tiny_batch(name):
    model = MODELS[name]()
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    probs = model(x, training=False).numpy()
    assert probs.shape == (2, 10)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.output.dtype == tf.float32


@pytest.mark.parametrize("name", sorted(MODELS))
def test_logits_option_drops_the_softmax(name):
    model = MODELS[name](logits=True)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    out = model(x, training=False).numpy()
    assert out.shape == (2, 10) and (out < 0).any()  # probabilities are never negative


def test_baseline_parameter_count_follows_from_its_layers():
    # Conv 3x3 valid: 32 -> 30 -> pool 15 -> 13 -> pool 6 -> 4; flatten 4*4*64 = 1024.
    expected = (conv_params(3, 3, 32) + conv_params(3, 32, 64) + conv_params(3, 64, 64)
                + dense_params(4 * 4 * 64, 64) + dense_params(64, 10))
    model = build_baseline_cnn()
    assert model.count_params() == expected == 122_570
    assert model.layers[-2].output_shape == (None, 64)


def _bn(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


def test_resnet20_parameter_count_follows_from_its_blocks():
    n, w = 3, 16
    total = conv_params(3, 3, w, bias=False) + _bn(w)
    c_in = w
    for filters in (w, 2 * w, 4 * w):
        for i in range(n):
            block_in = c_in if i == 0 else filters
            total += conv_params(3, block_in, filters, bias=False) + conv_params(3, filters, filters, bias=False)
            total += 2 * _bn(filters)
            if i == 0 and c_in != filters:
                total += conv_params(1, c_in, filters, bias=False) + _bn(filters)  # projection shortcut
            c_in = filters
    total += dense_params(4 * w, 10)
    assert build_resnet(20).count_params() == total
    # Plain (no shortcuts) drops exactly the two projection shortcuts.
    projections = sum(conv_params(1, c, 2 * c, bias=False) + _bn(2 * c) for c in (w, 2 * w))
    assert build_resnet(20, residual=False).count_params() == total - projections


def test_se_block_adds_its_two_dense_layers_per_block():
    extra = sum(3 * (dense_params(c, c // 8) + dense_params(c // 8, c)) for c in (16, 32, 64))
    assert build_resnet(20, se=True).count_params() - build_resnet(20).count_params() == extra


def test_gap_head_saves_the_flatten_dense_layer():
    width = 32
    gap, flat = build_small_cnn(width=width), build_small_cnn(width=width, head="flatten")
    c = 4 * width
    saving = dense_params(8 * 8 * c, c) + dense_params(c, 10) - dense_params(c, 10)
    assert flat.count_params() - gap.count_params() == saving


@pytest.mark.parametrize("depth", [19, 21, 0])
def test_resnet_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        build_resnet(depth)


def test_bad_configurations_say_what_to_do():
    with pytest.raises(ValueError, match="preact=False"):
        build_resnet(20, preact=True, residual=False)
    with pytest.raises(ValueError, match="head"):
        build_small_cnn(head="avg")
    with pytest.raises(ValueError, match="three"):
        build_flagship(widths=(32, 64))


def test_deeper_resnets_have_more_blocks():
    assert build_resnet(32).count_params() > build_resnet(20).count_params()
    assert len(build_resnet(32).layers) > len(build_resnet(20).layers)


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


def test_layer_table_lists_shapes_and_parameters():
    rows = cc.layer_table(build_baseline_cnn())
    assert rows[0]["output shape"] == (32, 32, 3) and rows[-1]["output shape"] == (10,)
    assert sum(r["parameters"] for r in rows) == 122_570
    assert [r["type"] for r in rows][:3] == ["InputLayer", "Conv2D", "MaxPooling2D"]


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
