"""Learning-rate schedules: the shapes the course trains with, as Keras `LearningRateSchedule` objects.

A schedule is evaluated per optimizer step, so it can be plotted before training (`cc.plot_schedule`,
chapter 4) and goes straight into any Keras optimizer. Keras' own classes give the cosine
(`CosineDecay`) and step (`PiecewiseConstantDecay`) shapes; the course adds only what Keras lacks: a
constant rate, the triangular one-cycle shape (airbench's) and one linear warm-up for every shape.

Keras' `CosineDecay(warmup_target=..., warmup_steps=...)` has a warm-up too, but it starts from
`initial_learning_rate` at step 0 (a step at rate 0 when that is 0), and `PiecewiseConstantDecay` has
none, so `LinearWarmup` wraps any of them the same way.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from tensorflow import keras

SCHEDULES = ("constant", "step_at_epochs_10_20", "step", "cosine", "onecycle")


@keras.utils.register_keras_serializable(package="cifar_course")
class Constant(keras.optimizers.schedules.LearningRateSchedule):
    """The same learning rate at every step (a schedule, so a warm-up can wrap it)."""

    def __init__(self, learning_rate: float, name: str = "constant"):
        super().__init__()
        self.learning_rate, self.name = float(learning_rate), name

    def __call__(self, step):
        return tf.fill(tf.shape(step), tf.constant(self.learning_rate, tf.float32))

    def get_config(self):
        return {"learning_rate": self.learning_rate, "name": self.name}


@keras.utils.register_keras_serializable(package="cifar_course")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Triangular one-cycle shape (airbench's): linear from base_lr * initial_fraction up to base_lr at
    peak_fraction of the run, then linear down to base_lr * final_fraction at the last step.

    initial_fraction=1, peak_fraction=0 gives a straight line from base_lr down (the flagship's).
    """

    def __init__(self, base_lr: float, total_steps: int, initial_fraction: float = 0.1,
                 peak_fraction: float = 0.25, final_fraction: float = 0.0, name: str = "onecycle"):
        super().__init__()
        self.base_lr, self.total_steps = float(base_lr), int(total_steps)
        self.initial_fraction, self.peak_fraction = float(initial_fraction), float(peak_fraction)
        self.final_fraction, self.name = float(final_fraction), name

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak = max(1.0, round(self.peak_fraction * self.total_steps))
        up = self.initial_fraction + (1.0 - self.initial_fraction) * step / peak
        down_len = max(1.0, self.total_steps - 1 - peak)  # reaches the final rate at the last step
        down = 1.0 - (1.0 - self.final_fraction) * tf.minimum((step - peak) / down_len, 1.0)
        return self.base_lr * tf.where(step < peak, up, down)

    def get_config(self):
        return {k: getattr(self, k) for k in ("base_lr", "total_steps", "initial_fraction",
                                              "peak_fraction", "final_fraction", "name")}


@keras.utils.register_keras_serializable(package="cifar_course")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """base_lr * (step + 1) / warmup_steps for the first warmup_steps steps (the last of them at base_lr),
    then `schedule` evaluated at the steps since the warm-up ended."""

    def __init__(self, schedule, base_lr: float, warmup_steps: int):
        super().__init__()
        self.schedule = schedule
        self.base_lr, self.warmup_steps = float(base_lr), int(warmup_steps)
        self.name = getattr(schedule, "name", None)

    def __call__(self, step):
        step = tf.convert_to_tensor(step)
        after = self.schedule(tf.maximum(step - tf.cast(self.warmup_steps, step.dtype), 0))
        ramp = self.base_lr * (tf.cast(step, tf.float32) + 1.0) / self.warmup_steps
        return tf.where(step < self.warmup_steps, ramp, tf.cast(after, tf.float32))

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule),
                "base_lr": self.base_lr, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        config = dict(config, schedule=keras.optimizers.schedules.deserialize(config["schedule"]))
        return cls(**config)


def _piecewise(name: str, base_lr: float, first_steps_of_each_stage, factors):
    """base_lr * factors[i] from the i-th step of `first_steps_of_each_stage` on (factors[0] before)."""
    if not first_steps_of_each_stage:
        return Constant(base_lr, name=name)
    # PiecewiseConstantDecay switches after a boundary (step > b): the step before each stage's first.
    boundaries = [int(step) - 1 for step in first_steps_of_each_stage]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, [base_lr * f for f in factors], name=name)


def make_schedule(name: str, base_lr: float, total_steps: int, warmup_steps: int = 0,
                  steps_per_epoch: int | None = None, milestones=(0.5, 0.75), factor: float = 0.1,
                  final_fraction: float = 0.0, initial_fraction: float = 0.1,
                  peak_fraction: float = 0.25):
    """A learning-rate schedule by name, rate at `step` (0-based optimizer steps):

      constant              base_lr
      step_at_epochs_10_20  base_lr, x0.8 from epoch index 11 on, x0.5 from 21 on (Keras counts epochs
                            from 0; "after epoch 10 and 20"; needs steps_per_epoch)
      step                  base_lr * factor ** (number of milestones passed); milestones are fractions
                            of the post-warm-up run, or step numbers >= 1 counted from its start
      cosine                cosine decay from base_lr to base_lr * final_fraction at the last step
      onecycle              triangular, see `OneCycle` (initial_fraction, peak_fraction, final_fraction)

    A linear warm-up over `warmup_steps` (`LinearWarmup`) comes first for every shape except onecycle
    (which has its own ramp); the shape then runs over the remaining steps.
    """
    if name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}.")
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}.")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must lie in [0, total_steps={total_steps}), got {warmup_steps}.")
    if name == "step_at_epochs_10_20" and not steps_per_epoch:
        raise ValueError("The step_at_epochs_10_20 schedule changes per epoch: pass steps_per_epoch.")
    if name == "onecycle":
        return OneCycle(base_lr, total_steps, initial_fraction, peak_fraction, final_fraction)
    span = max(total_steps - warmup_steps - 1, 1)  # steps after the warm-up; the last one ends the shape
    if name == "constant":
        schedule = Constant(base_lr)
    elif name == "step_at_epochs_10_20":
        # Counted in steps since the warm-up (as LinearWarmup calls it): epochs 11 and 21 start there.
        starts = [e * int(steps_per_epoch) - warmup_steps for e in (11, 21)]
        schedule = _piecewise(name, base_lr, starts, (1.0, 0.8, 0.5))
    elif name == "step":
        # The first step at or after each milestone (compared in float32, as the step counter is).
        marks = sorted(m * span if m < 1 else float(m) for m in milestones)
        starts = [math.ceil(np.float32(m)) for m in marks]
        schedule = _piecewise(name, base_lr, starts, [factor ** i for i in range(len(starts) + 1)])
    else:
        schedule = keras.optimizers.schedules.CosineDecay(base_lr, span, alpha=final_fraction, name=name)
    return LinearWarmup(schedule, base_lr, warmup_steps) if warmup_steps else schedule


def schedule_values(schedule, total_steps: int) -> np.ndarray:
    """The learning rate at every step 0..total_steps-1 (a constant float is repeated)."""
    if not callable(schedule):
        return np.full(total_steps, float(schedule), np.float32)

    def every_step(steps):  # one step at a time: Keras' schedules take a scalar step
        return tf.map_fn(lambda s: tf.cast(schedule(s), tf.float32), steps,
                         fn_output_signature=tf.float32)

    # One graph for the whole loop (fast); traced as a concrete function, so plotting several schedules
    # in a row does not set off TensorFlow's retracing warning.
    steps = tf.range(total_steps)
    return tf.function(every_step).get_concrete_function(steps)(steps).numpy()
