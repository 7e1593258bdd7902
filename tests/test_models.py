"""Every builder in MODELS builds and runs (also under mixed precision); parameter counts follow from
the architecture."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

import cifar_course as cc
from cifar_course import models
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


@pytest.fixture
def mixed_policy(request):
    """Set a mixed-precision policy for one test, and put float32 back after it."""
    tf.keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    tf.keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("mixed_policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_gives_float32_probabilities_under_mixed_precision(name, mixed_policy):
    model = MODELS[name]()
    assert model.layers[1].compute_dtype == mixed_policy.split("_")[1]  # the body does run in 16 bits
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    probs = model(x, training=False)
    assert probs.dtype == tf.float32 and model.output.dtype == tf.float32
    probs = probs.numpy()
    assert probs.shape == (2, 10) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_mixed_precision_policy_is_reset_after_the_test():
    assert tf.keras.mixed_precision.global_policy().name == "float32"


def test_every_builder_in_models_is_in_the_registry():
    builders = {name for name, fn in inspect.getmembers(models, inspect.isfunction)
                if name.startswith("build_") and fn.__module__ == models.__name__}
    registered = {fn.__name__ for fn in MODELS.values()}  # lambdas name themselves "<lambda>"
    wrapped = {name for name in builders
               if any(name in (fn.__code__.co_names if fn.__name__ == "<lambda>" else ())
                      for fn in MODELS.values())}
    assert builders <= registered | wrapped


@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_probabilities_tells_softmax_from_logits(name):
    assert cc.outputs_probabilities(MODELS[name]())
    assert not cc.outputs_probabilities(MODELS[name](logits=True))


def test_outputs_probabilities_looks_inside_nested_models():
    inner = build_small_cnn(width=8)
    outer = tf.keras.Model(inner.input, inner(inner.input))
    assert isinstance(outer.layers[-1], tf.keras.Model) and cc.outputs_probabilities(outer)
    assert cc.train.final_layer(outer).name == "classifier"


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


def test_baseline_with_batchnorm_keeps_its_shapes_and_trades_biases_for_batchnorm():
    plain, with_bn = build_baseline_cnn(), build_baseline_cnn(batchnorm=True)
    conv_biases = 32 + 64 + 64
    assert with_bn.count_params() == plain.count_params() - conv_biases + 4 * conv_biases
    assert sum(isinstance(layer, tf.keras.layers.BatchNormalization) for layer in with_bn.layers) == 3
    assert with_bn.output_shape == plain.output_shape == (None, 10)


def test_baseline_bn_momentum_sets_how_far_one_batch_moves_the_running_statistics():
    x = tf.random.stateless_uniform((16, 32, 32, 3), seed=(1, 2))
    moved = {}
    for momentum in (0.99, 0.9):
        net = build_baseline_cnn(batchnorm=True, bn_momentum=momentum)
        bn = next(layer for layer in net.layers if isinstance(layer, tf.keras.layers.BatchNormalization))
        conv = net.layers[1]  # the first convolution, whose output the first BatchNorm sees
        batch_mean = tf.reduce_mean(conv(x), axis=(0, 1, 2))
        net(x, training=True)  # one forward pass in training mode updates the running mean
        moved[momentum] = bn.moving_mean.numpy()
        np.testing.assert_allclose(moved[momentum], (1 - momentum) * batch_mean.numpy(), rtol=1e-4,
                                   atol=1e-6)
    assert np.abs(moved[0.9]).sum() > 5 * np.abs(moved[0.99]).sum()


def test_small_cnn_bn_momentum_reaches_all_six_batchnorms():
    def momenta(model):
        bn = tf.keras.layers.BatchNormalization
        return [layer.momentum for layer in model.layers if isinstance(layer, bn)]

    assert momenta(build_small_cnn(width=4)) == [0.99] * 6  # Keras' default, unchanged
    assert momenta(build_small_cnn(width=4, bn_momentum=0.9)) == [0.9] * 6


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


def test_zero_init_residual_starts_every_block_as_its_shortcut():
    model = build_resnet(20, width=4, zero_init_residual=True)
    probe = tf.keras.Model(model.input, [model.get_layer("stem_relu").output,
                                         model.get_layer("stage1_block3_out").output])
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    stem, after_three_blocks = probe(x, training=True)
    np.testing.assert_allclose(after_three_blocks, stem, atol=1e-6)  # relu(0 + x) = x for x >= 0
    assert build_resnet(20, width=4).count_params() == model.count_params()
    with pytest.raises(ValueError, match="shortcut"):
        build_resnet(20, residual=False, zero_init_residual=True)
    with pytest.raises(ValueError, match="preact=False"):
        build_resnet(20, preact=True, zero_init_residual=True)


def test_deeper_resnets_have_more_blocks():
    assert build_resnet(32).count_params() > build_resnet(20).count_params()
    assert len(build_resnet(32).layers) > len(build_resnet(20).layers)


def test_layer_table_lists_shapes_and_parameters():
    rows = cc.layer_table(build_baseline_cnn())
    assert rows[0]["output shape"] == (32, 32, 3) and rows[-1]["output shape"] == (10,)
    assert sum(r["parameters"] for r in rows) == 122_570
    assert [r["type"] for r in rows][:3] == ["InputLayer", "Conv2D", "MaxPooling2D"]
