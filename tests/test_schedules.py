"""Learning-rate schedules: the values each shape gives at every step."""

import numpy as np
import pytest
from tensorflow import keras

from cifar_course.schedules import SCHEDULES, make_schedule, schedule_values


def test_step_at_epochs_10_20_follows_its_rule():
    # lr 1e-3, x0.8 when Keras' epoch index exceeds 10, x0.5 when it exceeds 20.
    spe = 7
    s = make_schedule("step_at_epochs_10_20", 1e-3, total_steps=30 * spe, steps_per_epoch=spe)
    per_epoch = schedule_values(s, 30 * spe)[::spe]
    expected = [1e-3 * (0.5 if e > 20 else 0.8 if e > 10 else 1.0) for e in range(30)]
    np.testing.assert_allclose(per_epoch, expected, rtol=1e-6)


def test_step_schedule_decays_at_its_milestones():
    v = schedule_values(make_schedule("step", 0.1, 100, milestones=(0.5, 0.75), factor=0.1), 100)
    np.testing.assert_allclose(v[[0, 49, 50, 74, 75, 99]], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)


def test_cosine_decays_monotonically_to_the_final_fraction():
    v = schedule_values(make_schedule("cosine", 0.2, 101, final_fraction=0.1), 101)
    assert v[0] == pytest.approx(0.2) and v[-1] == pytest.approx(0.02, rel=1e-4)
    assert (np.diff(v) <= 1e-9).all()


def test_onecycle_rises_to_its_peak_then_falls():
    v = schedule_values(make_schedule("onecycle", 1.0, 100, initial_fraction=0.2, peak_fraction=0.25,
                                      final_fraction=0.0), 100)
    assert v[0] == pytest.approx(0.2) and v.argmax() == 25 and v.max() == pytest.approx(1.0)
    assert (np.diff(v[:25]) > 0).all() and (np.diff(v[25:]) < 0).all() and v[-1] < 0.02


@pytest.mark.parametrize("name", [s for s in SCHEDULES if s != "onecycle"])
def test_warmup_ramps_linearly_to_the_base_rate(name):
    s = make_schedule(name, 0.4, 200, warmup_steps=10, steps_per_epoch=20)
    v = schedule_values(s, 200)
    np.testing.assert_allclose(v[:10], 0.4 * np.arange(1, 11) / 10, rtol=1e-5)
    assert v[10] == pytest.approx(0.4)


def test_constant_schedule_is_constant():
    np.testing.assert_allclose(schedule_values(make_schedule("constant", 0.3, 20), 20), np.full(20, 0.3))
    np.testing.assert_allclose(schedule_values(0.3, 5), np.full(5, 0.3))  # a float is repeated


def test_cosine_and_step_shapes_are_keras_own():
    assert isinstance(make_schedule("cosine", 0.1, 10), keras.optimizers.schedules.CosineDecay)
    step = make_schedule("step", 0.1, 10)
    assert isinstance(step, keras.optimizers.schedules.PiecewiseConstantDecay)
    warm = make_schedule("cosine", 0.1, 10, warmup_steps=2)
    assert isinstance(warm.schedule, keras.optimizers.schedules.CosineDecay) and warm.name == "cosine"


def test_schedules_round_trip_through_keras_serialization():
    for s in (make_schedule("cosine", 0.1, 50, warmup_steps=5), make_schedule("onecycle", 0.1, 50),
              make_schedule("constant", 0.1, 50, warmup_steps=5)):
        copy = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
        np.testing.assert_allclose(schedule_values(copy, 50), schedule_values(s, 50))


def test_schedule_errors_say_what_to_do():
    with pytest.raises(ValueError, match="choose one of"):
        make_schedule("linear", 0.1, 10)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_schedule("step_at_epochs_10_20", 0.1, 10)
    with pytest.raises(ValueError, match="warmup_steps"):
        make_schedule("cosine", 0.1, 10, warmup_steps=10)
