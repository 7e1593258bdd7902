"""Distillation: the loss against a hand computation, alpha=1 is plain cross-entropy, the teacher is frozen."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from cifar_course.distill import Distiller, distillation_loss


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def tiny(seed, name):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(5, activation="relu")(inputs)),
                       name=name)


def test_distillation_loss_by_hand():
    t = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
    s = np.array([[1.0, 1.5, 0.0], [0.0, 0.2, 0.3]])
    temp = 3.0
    p, q = softmax(t / temp), softmax(s / temp)
    expected = temp**2 * np.mean(np.sum(p * np.log(p / q), axis=1))
    assert float(distillation_loss(t, s, temp)) == pytest.approx(expected, rel=1e-5)
    assert float(distillation_loss(t, t, temp)) == pytest.approx(0.0, abs=1e-6)


def test_total_loss_and_alpha_one():
    student, teacher = tiny(0, "student"), tiny(1, "teacher")
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    d = Distiller(student, teacher)
    d.compile(alpha=0.3, temperature=2.0)
    total, hard, soft, _ = d.compute_losses(x, y)
    s, t = student(x).numpy(), teacher(x).numpy()
    ce = -np.mean(np.log(softmax(s)[np.arange(6), y]))
    kl = 4.0 * np.mean(np.sum(softmax(t / 2) * np.log(softmax(t / 2) / softmax(s / 2)), axis=1))
    assert float(hard) == pytest.approx(ce, rel=1e-5)
    assert float(total) == pytest.approx(0.3 * ce + 0.7 * kl, rel=1e-5)
    d.compile(alpha=1.0, temperature=5.0)
    total, *_ = d.compute_losses(x, y)
    assert float(total) == pytest.approx(ce, rel=1e-5)


def test_fit_moves_student_not_teacher():
    student, teacher = tiny(0, "student"), tiny(1, "teacher")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, 64)
    t_before = [w.copy() for w in teacher.get_weights()]
    s_before = [w.copy() for w in student.get_weights()]
    d = Distiller(student, teacher)
    d.compile(optimizer=keras.optimizers.Adam(0.01), alpha=0.5, temperature=4.0)
    logs = d.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert {"loss", "student_loss", "distillation_loss", "accuracy"} <= set(logs)
    assert all(np.array_equal(a, b) for a, b in zip(t_before, teacher.get_weights()))
    assert any(not np.allclose(a, b) for a, b in zip(s_before, student.get_weights()))
    assert d.evaluate(x, y, verbose=0, return_dict=True)["accuracy"] >= 0


def test_bad_settings_are_refused():
    d = Distiller(tiny(0, "s"), tiny(1, "t"))
    with pytest.raises(ValueError, match="alpha"):
        d.compile(alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        d.compile(temperature=0)
