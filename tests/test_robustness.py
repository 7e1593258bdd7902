"""Attacks, robust accuracy, fast adversarial training and background edits."""

import numpy as np
import pytest
import tensorflow as tf

import cifar_course as cc
from cifar_course.robustness import (
    EPSILON, FastAdversarialModel, RobustnessMonitor, accuracy, background_sensitivity, border_mask,
    centre_mask, fgsm, grey_out, pgd, robust_accuracy, shift_hue, to_pixels,
)


@pytest.fixture(scope="module")
def setup():
    """A small CNN trained on standardized synthetic images, so the attacks must mind the normalization."""
    cc.seed_everything(0)
    (x_train, y_train), (x_test, y_test) = cc.make_synthetic(1500, 200)
    stats = cc.channel_stats(x_train)
    # 279 steps of 16 images, BatchNorm momentum 0.9: the running statistics that inference uses have
    # caught up (with Keras' 0.99 and batches of 32, 138 steps, test accuracy was 14%, near chance).
    model = cc.build_small_cnn(width=16, bn_momentum=0.9)
    cc.train_model(model, cc.make_dataset(x_train, y_train, 16, training=True, stats=stats), epochs=3,
                   learning_rate=2e-3, progress_every=None)
    return model, stats, x_test, y_test


def test_perturbations_stay_within_epsilon_and_the_pixel_range(setup):
    model, stats, x, y = setup
    pixels = to_pixels(x[:50])
    for x_adv in (fgsm(model, x[:50], y[:50], stats=stats), fgsm(model, x[:50], y[:50], stats=stats,
                                                                   random_start=True),
                  pgd(model, x[:50], y[:50], steps=3, stats=stats, restarts=2)):
        assert x_adv.shape == pixels.shape and x_adv.dtype == np.float32
        assert np.abs(x_adv - pixels).max() <= EPSILON + 1e-6
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        assert np.abs(x_adv - pixels).max() > EPSILON / 2  # it did move


def test_epsilon_zero_is_a_no_op(setup):
    model, stats, x, y = setup
    np.testing.assert_array_equal(fgsm(model, x[:10], y[:10], epsilon=0.0, stats=stats), to_pixels(x[:10]))
    np.testing.assert_array_equal(pgd(model, x[:10], y[:10], epsilon=0.0, steps=2, stats=stats),
                                  to_pixels(x[:10]))


def test_attacks_lower_accuracy_and_pgd_is_at_least_as_strong_as_fgsm(setup):
    model, stats, x, y = setup
    clean = accuracy(model, x, y, stats)
    fgsm_acc = robust_accuracy(model, x, y, "fgsm", stats=stats)
    pgd_acc = robust_accuracy(model, x, y, "pgd", stats=stats, steps=7)
    assert clean > 0.3
    assert fgsm_acc < clean - 0.15
    assert pgd_acc <= fgsm_acc + 1e-9


def test_bad_inputs_get_clear_errors(setup):
    model, stats, x, y = setup
    with pytest.raises(ValueError, match="pixel units"):
        fgsm(model, x[:2], y[:2], epsilon=8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fgsm(model, cc.normalize(x[:2], stats).numpy(), y[:2])
    with pytest.raises(ValueError, match="Unknown attack"):
        robust_accuracy(model, x[:2], y[:2], attack="cw")


def test_fast_adversarial_training_runs_and_the_monitor_records_pgd(setup):
    _, stats, x, y = setup
    (x_train, y_train), _ = cc.make_synthetic(600, 10, seed=3)
    cc.seed_everything(0)
    robust = FastAdversarialModel(cc.build_small_cnn(width=8, logits=True), stats=stats)
    monitor = RobustnessMonitor(x[:100], y[:100], steps=3)
    history = cc.train_model(robust, cc.make_dataset(x_train, y_train, 32, training=True), epochs=2,
                             progress_every=None, callbacks=[monitor])
    assert np.isfinite(history.history["loss"]).all()
    assert [r["epoch"] for r in monitor.rows] == [1, 2]
    assert all(0 <= r["pgd_acc"] <= r["clean_acc"] + 0.05 for r in monitor.rows)


def test_monitor_flags_a_collapse_of_pgd_accuracy():
    monitor = RobustnessMonitor(np.zeros((2, 32, 32, 3), np.uint8), [0, 1], stop=False, print_fn=lambda s: None)
    scores = iter([0.4, 0.05])
    import cifar_course.robustness as rb

    original = rb.robust_accuracy
    rb.robust_accuracy = lambda *a, **k: next(scores)
    try:
        monitor.set_model(cc.build_small_cnn(width=4))
        monitor.on_epoch_end(0, {})
        assert not monitor.catastrophic
        monitor.on_epoch_end(1, {})
        assert monitor.catastrophic
    finally:
        rb.robust_accuracy = original


def test_background_edits_touch_only_their_region():
    x = cc.make_synthetic(10, 20)[1][0]
    border, centre = border_mask(32, 4), centre_mask(32, 4)
    assert abs(int(border.sum()) - int(centre.sum())) <= 2 * 22  # same area up to rounding of the side
    assert not (border & centre).any()
    for edited in (grey_out(x, border), shift_hue(x, border)):
        np.testing.assert_array_equal(edited[:, ~border], x[:, ~border])
        assert (edited[:, border] != x[:, border]).any()
    assert (grey_out(x, border)[:, border] == 128).all()


def test_background_sensitivity_rows(setup):
    model, stats, x, y = setup
    rows = background_sensitivity(model, x[:100], y[:100], stats)
    assert [r["images"] for r in rows] == ["original", "border grey", "border hue shift", "centre grey",
                                          "centre hue shift"]
    assert rows[0]["predictions changed"] == 0.0
    assert all(0.0 <= r["predictions changed"] <= 1.0 for r in rows)
