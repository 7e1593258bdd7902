"""Optimizers: Keras' own by name, SGD with scaled biases, Muon, and reading the current rate."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

import cifar_course as cc
from cifar_course.optim import current_learning_rate, make_optimizer
from cifar_course.schedules import make_schedule


# ------------------------------------------------------------------------------------------------
# Keras' optimizers by name


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


def test_current_learning_rate_reads_schedules():
    opt = make_optimizer("sgd", make_schedule("step", 1.0, 10, milestones=(2,), factor=0.5))
    assert current_learning_rate(opt) == 1.0
    opt.iterations.assign(5)
    assert current_learning_rate(opt) == 0.5


def test_current_learning_rate_reads_schedules_through_tfa_wrappers():
    import tensorflow_addons as tfa

    schedule = make_schedule("cosine", 0.1, total_steps=10)
    wrapped = tfa.optimizers.Lookahead(keras.optimizers.legacy.SGD(schedule))
    assert current_learning_rate(wrapped) == pytest.approx(0.1)
    wrapped.iterations.assign(5)
    assert current_learning_rate(wrapped) == pytest.approx(float(schedule(5)))


# ------------------------------------------------------------------------------------------------
# SGD with scaled BatchNorm biases, orthogonalize, Muon


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
