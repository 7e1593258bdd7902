"""Distillation: the loss against a hand computation, alpha=1 is plain cross-entropy, the teacher is frozen,
precomputed teacher logits follow the flip of their image."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from cifar_course.distill import (
    Distiller, compare_with_teacher, distillation_loss, fit_student, logits_model,
    make_distillation_dataset, plot_students, teacher_logits,
)


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


def tiny_image_model(seed, softmax=False):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(3, 3, padding="same")(inputs)
    x = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    if softmax:
        x = keras.layers.Activation("softmax")(x)
    return keras.Model(inputs, x)


def test_logits_model_drops_only_a_softmax():
    with_softmax, plain = tiny_image_model(0, softmax=True), tiny_image_model(0)
    assert logits_model(plain) is plain
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    logits = teacher_logits(with_softmax, x, mirror=False)
    assert logits.shape == (4, 10)
    np.testing.assert_allclose(softmax(logits), with_softmax.predict(x / 255.0, verbose=0), rtol=1e-4,
                               atol=1e-6)


def test_teacher_logits_of_mirror_images():
    model = tiny_image_model(1)
    x = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    both = teacher_logits(model, x, batch_size=2)
    assert both.shape == (3, 2, 10) and both.dtype == np.float32
    np.testing.assert_allclose(both[:, 1], teacher_logits(model, x[:, :, ::-1], mirror=False), rtol=1e-5)
    assert not np.allclose(both[:, 0], both[:, 1])


def test_distillation_dataset_flips_targets_with_images():
    # Bright left half, dark right half; the "teacher" says class 0 for that view, class 1 mirrored.
    n = 64
    x = np.zeros((n, 32, 32, 3), "uint8")
    x[:, :, :16] = 255
    y = np.arange(n) % 10
    logits = np.zeros((n, 2, 10), "float32")
    logits[:, 0, 0] = logits[:, 1, 1] = 5.0
    ds = make_distillation_dataset(x, y, logits, batch_size=16, pad=0, seed=0)
    seen = set()
    for images, labels, targets in ds:
        left_bright = images.numpy()[:, :, :16].mean(axis=(1, 2, 3)) > images.numpy()[:, :, 16:].mean(
            axis=(1, 2, 3))
        np.testing.assert_array_equal(targets.numpy().argmax(1), np.where(left_bright, 0, 1))
        seen |= set(left_bright.tolist())
        assert labels.shape == (16,)
    assert seen == {True, False}  # both orientations occur
    with pytest.raises(ValueError, match="logits"):
        make_distillation_dataset(x, y, logits[:, 0], batch_size=16)


def test_precomputed_logits_give_the_online_loss():
    student, teacher = tiny(0, "student"), tiny(1, "teacher")
    x = np.random.default_rng(2).normal(size=(8, 4)).astype("float32")
    y = np.arange(8) % 3
    online = Distiller(student, teacher)
    online.compile(alpha=0.2, temperature=3.0)
    offline = Distiller(student)
    offline.compile(alpha=0.2, temperature=3.0)
    expected, *_ = online.compute_losses(x, y)
    total, *_ = offline.compute_losses(x, y, teacher(x))
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="no teacher"):
        offline.compute_losses(x, y)
    # fit on (images, labels, logits) batches; evaluate on plain (images, labels)
    ds = tf.data.Dataset.from_tensor_slices((x, y, teacher(x).numpy())).batch(4)
    before = [w.copy() for w in student.get_weights()]
    offline.fit(ds, epochs=1, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, student.get_weights()))
    assert "accuracy" in offline.evaluate(x, y, verbose=0, return_dict=True)


def test_fit_student_scratch_and_distilled_differ_only_in_the_loss():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (64, 32, 32, 3)).astype("uint8")
    y = np.arange(64) % 10
    logits_a = rng.normal(size=(64, 2, 10)).astype("float32")
    logits_b = rng.normal(size=(64, 2, 10)).astype("float32")

    def fit(logits, alpha):
        kd = fit_student(lambda: tiny_image_model(0), x, y, logits, epochs=2, alpha=alpha, batch_size=16,
                         seed=4)
        return kd.student.get_weights()

    # alpha = 1: the teacher's logits have weight 0, so two different teachers give the same student
    for a, b in zip(fit(logits_a, 1.0), fit(logits_b, 1.0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(fit(logits_a, 1.0), fit(logits_a, 0.5)))


def test_compare_with_teacher():
    model = tiny_image_model(5)
    x = np.random.default_rng(5).integers(0, 256, (20, 32, 32, 3)).astype("uint8")
    own = teacher_logits(model, x, mirror=False)
    y = own.argmax(1)
    same = compare_with_teacher(model, x, y, own)
    assert same["accuracy"] == same["agreement"] == 1.0 and same["kl"] == pytest.approx(0, abs=1e-5)
    other = compare_with_teacher(model, x, (y + 1) % 10, teacher_logits(tiny_image_model(6), x, mirror=False))
    assert other["accuracy"] == 0.0 and other["kl"] > 0.01


def test_plot_students_draws_both_panels():
    import matplotlib

    matplotlib.use("Agg")
    fig = plot_students({0: 0.5, 1: 0.52}, {0: 0.55, 1: 0.56}, {1.0: 0.53, 4.0: 0.55}, 4.0)
    left, right = fig.axes
    assert len(left.lines) == 2 and len(right.lines) == 2  # scratch mean line + distilled curve
    assert right.get_xscale() == "log"
