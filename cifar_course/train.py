"""Training: a thin layer over `model.fit`, not a framework.

`train(model, train_ds, epochs, val_ds)` compiles the model (optimizer, learning-rate schedule, loss with
optional label smoothing, gradient clipping), adds the callbacks a course run needs (a one-line-per-epoch
progress display that stays clean in notebooks, TerminateOnNaN, optional checkpoint/resume, TensorBoard and
early stopping) and returns Keras' own `History`. Everything else is plain Keras: pass your own callbacks,
loss or metrics and they are used as they are.

Schedules are `keras.optimizers.schedules.LearningRateSchedule` objects evaluated per optimizer step, so
they can be plotted before training (`plot_schedule`) and go straight into any Keras optimizer.
GPU switches: `use_mixed_precision()`, `train(..., jit_compile=True)` (XLA), and
`distribution_strategy(...)` for several GPUs or machines (build the model under `strategy.scope()`).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow import keras

SCHEDULES = ("constant", "seed_step", "step", "cosine", "onecycle")
OPTIMIZERS = ("adam", "adamw", "sgd")


# ------------------------------------------------------------------------------------------------
# Learning-rate schedules (per optimizer step)


class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """One schedule class for the course's shapes; build it with `make_schedule`.

    The learning rate at `step` (0-based optimizer steps):
      constant   base_lr
      seed_step  the classic tutorial rule per epoch index e (Keras counts from 0): base_lr, then x0.8 for
                 e > 10, x0.5 for e > 20 (needs steps_per_epoch)
      step       base_lr * factor ** (number of milestones passed)
      cosine     cosine decay from base_lr to base_lr * final_fraction
      onecycle   triangular: linear from base_lr * initial_fraction up to base_lr at peak_fraction of the
                 run, then linear down to base_lr * final_fraction (airbench's shape)
    A linear warm-up from 0 over `warmup_steps` comes first for every shape except onecycle (which has
    its own ramp); the shape then runs over the remaining steps.
    """

    def __init__(self, name, base_lr, total_steps, warmup_steps=0, steps_per_epoch=None,
                 milestones=(0.5, 0.75), factor=0.1, final_fraction=0.0, initial_fraction=0.1,
                 peak_fraction=0.25):
        super().__init__()
        self.name = name
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.steps_per_epoch = steps_per_epoch and int(steps_per_epoch)
        self.milestones = tuple(milestones)
        self.factor = float(factor)
        self.final_fraction = float(final_fraction)
        self.initial_fraction = float(initial_fraction)
        self.peak_fraction = float(peak_fraction)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        base = tf.constant(self.base_lr, tf.float32)
        if self.name == "onecycle":
            peak = max(1.0, round(self.peak_fraction * self.total_steps))
            up = self.initial_fraction + (1.0 - self.initial_fraction) * step / peak
            down_len = max(1.0, self.total_steps - 1 - peak)  # reaches the final rate at the last step
            down = 1.0 - (1.0 - self.final_fraction) * tf.minimum((step - peak) / down_len, 1.0)
            return base * tf.where(step < peak, up, down)
        warm = float(self.warmup_steps)
        t = tf.maximum(step - warm, 0.0)  # steps since the end of warm-up
        span = float(max(self.total_steps - self.warmup_steps - 1, 1))  # the last step ends the shape
        if self.name == "constant":
            lr = base
        elif self.name == "seed_step":
            epoch = tf.floor(step / float(self.steps_per_epoch))
            lr = base * tf.where(epoch > 20, 0.5, tf.where(epoch > 10, 0.8, 1.0))
        elif self.name == "step":
            marks = [m * span if m < 1 else float(m) for m in self.milestones]
            passed = tf.add_n([tf.cast(t >= m, tf.float32) for m in marks]) if marks else 0.0
            lr = base * tf.pow(self.factor, passed)
        elif self.name == "cosine":
            progress = tf.minimum(t / span, 1.0)
            lr = base * (self.final_fraction
                         + (1.0 - self.final_fraction) * 0.5 * (1.0 + tf.cos(math.pi * progress)))
        else:
            raise ValueError(f"Unknown schedule {self.name!r}; choose one of {SCHEDULES}.")
        if self.warmup_steps:
            lr = tf.where(step < warm, base * (step + 1.0) / warm, lr)
        return lr

    def get_config(self):
        return {k: getattr(self, k) for k in (
            "name", "base_lr", "total_steps", "warmup_steps", "steps_per_epoch", "milestones", "factor",
            "final_fraction", "initial_fraction", "peak_fraction")}


def make_schedule(name: str, base_lr: float, total_steps: int, warmup_steps: int = 0,
                  steps_per_epoch: int | None = None, **options) -> Schedule:
    """A learning-rate schedule by name: constant, seed_step, step, cosine or onecycle (see `Schedule`).

    options: milestones (fractions of the post-warm-up run, or step numbers >= 1) and factor for "step";
    final_fraction for cosine/onecycle; initial_fraction and peak_fraction for onecycle.
    """
    if name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}.")
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}.")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must lie in [0, total_steps={total_steps}), got {warmup_steps}.")
    if name == "seed_step" and not steps_per_epoch:
        raise ValueError("The seed_step schedule changes per epoch: pass steps_per_epoch.")
    return Schedule(name, base_lr, total_steps, warmup_steps, steps_per_epoch, **options)


def schedule_values(schedule, total_steps: int) -> np.ndarray:
    """The learning rate at every step 0..total_steps-1 (a constant float is repeated)."""
    if not callable(schedule):
        return np.full(total_steps, float(schedule), np.float32)
    return np.asarray(schedule(tf.range(total_steps)), np.float32)


def plot_schedule(schedules, total_steps: int, steps_per_epoch: int | None = None, ax=None):
    """Plot one schedule or a {label: schedule} dict against steps (or epochs when steps_per_epoch)."""
    import matplotlib.pyplot as plt

    if not isinstance(schedules, dict):
        schedules = {getattr(schedules, "name", "schedule"): schedules}
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(total_steps) / (steps_per_epoch or 1)
    for label, sched in schedules.items():
        ax.plot(x, schedule_values(sched, total_steps), label=label)
    ax.set_xlabel("epoch" if steps_per_epoch else "step")
    ax.set_ylabel("learning rate")
    ax.legend()
    return ax


# ------------------------------------------------------------------------------------------------
# Optimizers


def make_optimizer(name: str = "adam", learning_rate=1e-3, weight_decay: float = 0.0,
                   momentum: float = 0.9, nesterov: bool = True, clipnorm: float | None = None):
    """Adam, AdamW or SGD (with momentum, Nesterov by default).

    learning_rate: a float or a schedule. weight_decay is Keras' decoupled weight decay (the weights shrink
    by lr * weight_decay each step, separate from the gradient), for every optimizer; "adamw" is Adam with
    it on (default 1e-4 if you give none). clipnorm clips the gradients by their global norm.
    """
    name = name.lower()
    common = {"learning_rate": learning_rate, "global_clipnorm": clipnorm}
    if name == "adam":
        return keras.optimizers.Adam(weight_decay=weight_decay or None, **common)
    if name == "adamw":
        return keras.optimizers.AdamW(weight_decay=weight_decay or 1e-4, **common)
    if name == "sgd":
        return keras.optimizers.SGD(momentum=momentum, nesterov=nesterov and momentum > 0,
                                    weight_decay=weight_decay or None, **common)
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)} "
                     "or pass a keras optimizer object.")


class SGDScaledBiases(keras.optimizers.SGD):
    """SGD whose listed variables (the BatchNorm biases, in the flagship) take `bias_scaler` times larger
    gradient steps; weight decay still shrinks them by the same fraction as every other weight.

    BatchNorm biases are few and decide which units fire; airbench found they learn best with 64x the
    learning rate. Keras has no per-variable learning rate, so the gradient is scaled, which is the same
    thing for SGD with momentum.
    """

    def __init__(self, scaled_variables, bias_scaler: float = 64.0, **kwargs):
        super().__init__(**kwargs)
        self.bias_scaler = float(bias_scaler)
        self._scaled_keys = {self._var_key(v) for v in scaled_variables}

    def update_step(self, gradient, variable):
        if self._var_key(variable) in self._scaled_keys:
            gradient = gradient * tf.cast(self.bias_scaler, gradient.dtype)
        return super().update_step(gradient, variable)

    def get_config(self):
        return {**super().get_config(), "bias_scaler": self.bias_scaler}


def orthogonalize(matrix, steps: int = 3):
    """An approximately orthogonal matrix with the singular vectors of `matrix` (its singular values all
    pushed to roughly 0.5-1.5): Muon's quintic Newton-Schulz iteration, a few matrix products, no SVD."""
    a, b, c = 3.4445, -4.7750, 2.0315  # coefficients chosen for speed, not exact convergence (Jordan 2024)
    x = matrix / (tf.norm(matrix) + 1e-7)  # every singular value <= 1
    tall = matrix.shape[0] > matrix.shape[1]
    if tall:
        x = tf.transpose(x)
    for _ in range(steps):
        gram = x @ tf.transpose(x)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return tf.transpose(x) if tall else x


class Muon(SGDScaledBiases):
    """Muon (Jordan et al. 2024) for the convolution kernels, SGD for everything else.

    For each kernel in `muon_variables`: Nesterov momentum (`muon_momentum`), then the step is replaced by
    its orthogonalized version (`orthogonalize` of the kernel reshaped to a matrix, one column per filter),
    so every direction the gradient points in moves by about the same amount; the kernel is rescaled to
    norm sqrt(filters) first, which BatchNorm makes harmless and which keeps a step of `muon_learning_rate`
    a fixed fraction of the weights. That step follows the `learning_rate` schedule relative to its value
    at step 0. Other variables take the SGDScaledBiases step with `learning_rate` and weight decay; Muon
    kernels get no weight decay.

    Keras 3 ships keras.optimizers.Muon; the Keras 2 of TF 2.14 has none, hence this subclass.
    """

    def __init__(self, muon_variables, muon_learning_rate: float = 0.24, muon_momentum: float = 0.6,
                 scaled_variables=(), bias_scaler: float = 64.0, **kwargs):
        super().__init__(scaled_variables, bias_scaler, **kwargs)
        self.muon_learning_rate, self.muon_momentum = float(muon_learning_rate), float(muon_momentum)
        self._muon_keys = {self._var_key(v) for v in muon_variables}
        self.exclude_from_weight_decay(var_list=list(muon_variables))
        lr = self._learning_rate
        self._initial_lr = float(lr(0) if callable(lr) else keras.backend.get_value(lr))
        if self._initial_lr <= 0:  # Muon's steps follow the schedule's value relative to its first one
            raise ValueError("Muon needs a learning rate (schedule) that starts above 0, "
                             f"got {self._initial_lr}; ramp it up with a onecycle initial_fraction > 0.")

    def update_step(self, gradient, variable):
        if self._var_key(variable) not in self._muon_keys:
            return super().update_step(gradient, variable)
        fraction = tf.cast(self.learning_rate / self._initial_lr, variable.dtype)  # the schedule's shape
        mu = tf.cast(self.muon_momentum, variable.dtype)
        m = self.momentums[self._index_dict[self._var_key(variable)]]
        m.assign(mu * m + gradient)
        step = gradient + mu * m  # Nesterov
        filters = variable.shape[-1]
        variable.assign(variable * (filters ** 0.5 / (tf.norm(variable) + 1e-12)))
        update = tf.reshape(orthogonalize(tf.reshape(step, [-1, filters])), variable.shape)
        variable.assign_sub(self.muon_learning_rate * fraction * update)

    def get_config(self):
        return {**super().get_config(), "muon_learning_rate": self.muon_learning_rate,
                "muon_momentum": self.muon_momentum}


def current_learning_rate(optimizer) -> float:
    """The learning rate the optimizer uses at its current step (schedules included)."""
    lr = getattr(optimizer, "_learning_rate", None)  # Keras keeps the schedule object here
    if not isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        lr = optimizer.learning_rate  # legacy optimizers and tfa wrappers hand the schedule out here
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        lr = lr(optimizer.iterations)
    return float(keras.backend.get_value(lr))


# ------------------------------------------------------------------------------------------------
# Callbacks


class Progress(keras.callbacks.Callback):
    """One short line every `every` epochs (and the last), nothing else: clean in notebooks and logs.
    every=None prints nothing.

    Also adds `epoch_time_s` and `lr` to the epoch logs, so `history.history` has time and learning
    rate per epoch.
    """

    def __init__(self, every: int | None = 1, print_fn=print):
        super().__init__()
        self.every = int(every or 0)  # 0 or None: silent, still logging time and learning rate
        self.print_fn = print_fn

    def on_train_begin(self, logs=None):
        self.epochs = self.params.get("epochs")

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["epoch_time_s"] = time.perf_counter() - self._start
        logs["lr"] = current_learning_rate(self.model.optimizer)
        if not self.every or ((epoch + 1) % self.every and epoch + 1 != self.epochs):
            return
        shown = " ".join(f"{k} {v:.4f}" for k, v in logs.items() if k not in ("epoch_time_s", "lr"))
        self.print_fn(f"epoch {epoch + 1}/{self.epochs}  {shown}  lr {logs['lr']:.2e}  "
                      f"{logs['epoch_time_s']:.1f}s")


def make_callbacks(checkpoint_dir=None, tensorboard_dir=None, early_stopping_patience=None,
                   monitor: str = "val_loss", progress_every: int | None = 1) -> list:
    """The standard callbacks of a course run, in the order they should run."""
    callbacks = [keras.callbacks.TerminateOnNaN(), Progress(progress_every)]
    if checkpoint_dir is not None:
        # Saves model + optimizer + epoch at each epoch end; a rerun of the same call restores them and
        # continues with the next epoch. The backup is deleted once training finishes.
        callbacks.append(keras.callbacks.BackupAndRestore(os.fspath(Path(checkpoint_dir) / "backup")))
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(os.fspath(tensorboard_dir), write_graph=False,
                                                     profile_batch=0))
    if early_stopping_patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=early_stopping_patience,
                                                       restore_best_weights=True))
    return callbacks


# ------------------------------------------------------------------------------------------------
# GPU and multi-device switches


def use_mixed_precision(enabled: bool = True) -> str:
    """Compute in float16 and keep weights in float32 (2-3x faster on recent GPUs, slower on CPUs).

    Call before building the model. The course's builders keep their output layer in float32.
    """
    policy = "mixed_float16" if enabled else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def distribution_strategy(kind: str = "auto"):
    """A tf.distribute strategy: build and compile the model under `strategy.scope()`.

    kind: "default" (one device), "mirrored" (all GPUs of this machine), "multiworker" (several machines;
    each process reads its role from the TF_CONFIG environment variable), or "auto" (multiworker when
    TF_CONFIG is set, mirrored when there are several GPUs, else default).
    """
    if kind == "auto":
        if os.environ.get("TF_CONFIG"):
            kind = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("multiworker needs TF_CONFIG (cluster addresses and this worker's index) set "
                             "in the environment before TensorFlow starts.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {kind!r}; choose auto, default, mirrored or multiworker.")


# ------------------------------------------------------------------------------------------------
# Training


def _outputs_probabilities(model) -> bool:
    """True when the model ends in a softmax (the course's default), False for logits."""
    activation = getattr(model.layers[-1], "activation", None)
    return activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"


def _label_rank(ds) -> int:
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError("train() needs a dataset of (images, labels) batches, e.g. from cc.make_dataset.")
    return spec[1].shape.rank


def make_loss(sparse: bool, from_logits: bool = False, label_smoothing: float = 0.0):
    """Cross-entropy for integer (sparse) or one-hot labels. Label smoothing needs one-hot labels in
    TF 2.14 (`train` converts sparse labels for you when label_smoothing > 0)."""
    if sparse:
        if label_smoothing:
            raise ValueError("SparseCategoricalCrossentropy has no label smoothing in TF 2.14: use one-hot "
                             "labels (make_dataset(..., one_hot=True)) or let train() convert them.")
        return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    return keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)


def train(model, train_ds, epochs: int, val_ds=None, *, optimizer="adam", learning_rate=1e-3,
          schedule=None, warmup_epochs: float = 0, weight_decay: float = 0.0, momentum: float = 0.9,
          label_smoothing: float = 0.0, clipnorm: float | None = None, loss=None,
          metrics=("accuracy",), checkpoint_dir=None, tensorboard_dir=None,
          early_stopping_patience: int | None = None, callbacks=(), progress_every: int | None = 1,
          jit_compile: bool | None = None, steps_per_execution: int = 1, verbose: int = 0,
          compile: bool = True, steps_per_epoch: int | None = None):
    """Compile `model` and fit it on `train_ds` (a batched tf.data dataset of (images, labels)).

    optimizer: "adam", "adamw", "sgd" or a keras optimizer (then learning_rate/schedule/weight_decay/
        clipnorm are ignored). schedule: a name from SCHEDULES (sized from epochs and the dataset's batch
        count, peak learning_rate, linear warm-up over warmup_epochs) or a LearningRateSchedule.
    Labels may be integers or one-hot; with label_smoothing > 0 integer labels are one-hot encoded here.
    steps_per_epoch: for a dataset that holds all epochs at once (make_alternating_flip_dataset).
    checkpoint_dir: back up at every epoch end; calling train again after an interruption resumes at the
        first unfinished epoch. compile=False fits a model you compiled yourself.
    Returns Keras' History, with `history.wall_time_s` (the whole fit) added.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    sparse = _label_rank(train_ds) == 1
    num_classes = model.output_shape[-1]
    if sparse and label_smoothing and loss is None:
        def to_one_hot(x, y):
            return x, tf.one_hot(tf.cast(y, tf.int32), num_classes)

        train_ds = train_ds.map(to_one_hot, num_parallel_calls=tf.data.AUTOTUNE)
        if val_ds is not None:
            val_ds = val_ds.map(to_one_hot, num_parallel_calls=tf.data.AUTOTUNE)
        sparse = False

    if compile:
        batches = steps_per_epoch or int(train_ds.cardinality())
        if isinstance(schedule, str):
            if batches < 1:
                raise ValueError("A named schedule needs a dataset of known length (tf.data cardinality); "
                                 "pass a LearningRateSchedule made with make_schedule instead.")
            schedule = make_schedule(schedule, learning_rate, epochs * batches,
                                     warmup_steps=int(warmup_epochs * batches), steps_per_epoch=batches)
        with model.distribute_strategy.scope():  # optimizer variables live where the model's do
            if isinstance(optimizer, str):
                optimizer = make_optimizer(optimizer, schedule if schedule is not None else learning_rate,
                                           weight_decay=weight_decay, momentum=momentum, clipnorm=clipnorm)
            if loss is None:
                loss = make_loss(sparse, from_logits=not _outputs_probabilities(model),
                                 label_smoothing=label_smoothing)
            model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics), jit_compile=jit_compile,
                          steps_per_execution=steps_per_execution)

    monitor = "val_loss" if val_ds is not None else "loss"
    all_callbacks = make_callbacks(checkpoint_dir, tensorboard_dir, early_stopping_patience, monitor,
                                   progress_every) + list(callbacks)
    start = time.perf_counter()
    history = model.fit(train_ds, epochs=epochs, validation_data=val_ds, callbacks=all_callbacks,
                        verbose=verbose, steps_per_epoch=steps_per_epoch)
    history.wall_time_s = time.perf_counter() - start
    return history


# ------------------------------------------------------------------------------------------------
# The flagship fast recipe (after airbench94_muon, Jordan 2024), sized per profile


def flagship_recipe(profile=None, **overrides) -> dict:
    """Hyperparameters of the flagship recipe for a profile (a Profile or its name); keyword overrides.

    quick: sized for about 5 minutes of training on a 2-core laptop CPU (FLAGSHIP_15_MINUTES for the
    longer budget; both measured in benchmarks/flagship.py); full: airbench94_muon's widths and epochs on
    one GPU, a target not measured here. FLAGSHIP_SGD turns it back into airbench94 (SGD and Lookahead).
    """
    from . import config

    prof = config.profile(profile) if profile is None or isinstance(profile, str) else profile
    recipe = {
        "widths": prof.choose(smoke=(16, 32, 32), quick=(32, 128, 128), full=(64, 256, 256)),
        "epochs": prof.choose(smoke=2, quick=7, full=8),
        "batch_size": prof.choose(smoke=128, quick=2000, full=2000),
        # Muon (cc.Muon) steps the conv kernels: each step a fixed fraction of the (renormalized) kernel,
        # 0.24 at the start, falling with the schedule; Nesterov momentum 0.6.
        "optimizer": "muon",
        "muon_learning_rate": 0.24,
        "muon_momentum": 0.6,
        # SGD (mean loss, Nesterov momentum 0.85) steps the rest, the BatchNorm biases 64x further
        # (cc.SGDScaledBiases). airbench94_muon's rates (0.053 for biases, 0.67 for the head, on a summed
        # loss over 2000 images with logits divided by 256) come to 0.85 per 1024 images here.
        "learning_rate_per_1024": 0.85,
        "momentum": 0.85,
        "bias_scaler": 64.0,
        "weight_decay": 0.016,  # decoupled, SGD variables only: they shrink by lr * weight_decay per step
        "schedule": {"initial_fraction": 1.0, "peak_fraction": 0.0, "final_fraction": 0.0},  # linear to 0
        "lookahead": False,  # weight averaging with restarts every 5 steps (cc.Lookahead), for SGD
        "label_smoothing": 0.2,
        "translate": 2,  # random shift by up to 2 pixels (reflect padding), plus horizontal flips:
        "alternating_flip": True,  # each image's flip alternates between epochs (airbench)
        "activation": "gelu",
        "mixed_precision": prof.choose(smoke=None, quick="mixed_bfloat16", full="mixed_float16"),
        "jit_compile": prof.choose(smoke=False, quick=False, full=True),
        # Test-time augmentation: 0 none, 1 the image and its mirror, 2 also both shifted by one pixel.
        "tta_level": 2,
    }
    unknown = set(overrides) - set(recipe)
    if unknown:
        raise ValueError(f"Unknown flagship recipe keys {sorted(unknown)}; known: {sorted(recipe)}.")
    if overrides.get("optimizer", recipe["optimizer"]) not in ("muon", "sgd"):
        raise ValueError(f"optimizer must be 'muon' or 'sgd', got {overrides['optimizer']!r}")
    recipe.update(overrides)
    return recipe


# The quick profile's longer budget: airbench's full widths for 8 epochs, about 15 minutes of training on a
# 2-core CPU (benchmarks/README.md), for cc.flagship_recipe("quick", **FLAGSHIP_15_MINUTES).
FLAGSHIP_15_MINUTES = {"widths": (64, 256, 256), "epochs": 8}

# airbench94 before Muon: SGD for every weight, a triangular schedule, Lookahead, batches of 1024. Its peak
# rate is airbench's 11.5 per 1024 images divided by its momentum gain 1 + 1/(1 - 0.85) = 7.67. airbench94
# takes 9.9 epochs to 94% on a GPU where airbench94_muon takes 8; here see benchmarks/README.md.
FLAGSHIP_SGD = {
    "optimizer": "sgd", "batch_size": 1024, "learning_rate_per_1024": 1.5, "weight_decay": 9e-3,
    "schedule": {"initial_fraction": 0.2, "peak_fraction": 0.23, "final_fraction": 0.07}, "lookahead": True,
}

# Full-profile (one GPU) accuracy targets. TARGETS, NOT MEASUREMENTS: no GPU was available to the course's
# authors; the recipes below are configured to reach them (mean of several seeds).
FULL_PROFILE_TARGETS = {"resnet20": 0.915, "flagship": 0.94}


def resnet_recipe(profile=None, **overrides) -> dict:
    """Hyperparameters for CIFAR ResNet-20 (He et al. 2016 with a cosine schedule and warm-up).

    full: 100 epochs, batch 128, SGD+Nesterov 0.1, mixed float16 and XLA on a GPU: aimed at
    FULL_PROFILE_TARGETS["resnet20"] (91.5%); quick/smoke: short runs for the chapters.
    """
    from . import config

    prof = config.profile(profile) if profile is None or isinstance(profile, str) else profile
    recipe = {
        "depth": 20, "width": 16,
        "epochs": prof.choose(smoke=2, quick=10, full=100),
        "batch_size": 128,
        "optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9, "schedule": "cosine", "warmup_epochs": 2,
        "weight_decay": 5e-4,  # decoupled (Keras): about the classic coupled 5e-5..1e-4 under momentum 0.9
        "label_smoothing": 0.0, "augment": "padcrop",
        "mixed_precision": prof.choose(smoke=None, quick=None, full="mixed_float16"),
        "jit_compile": prof.choose(smoke=False, quick=False, full=True),
    }
    unknown = set(overrides) - set(recipe)
    if unknown:
        raise ValueError(f"Unknown ResNet recipe keys {sorted(unknown)}; known: {sorted(recipe)}.")
    recipe.update(overrides)
    return recipe


def predict_tta(model, x, batch_size: int = 1000, flip: bool = True, translate: int = 0, stats=None):
    """Class probabilities averaged over views of each image: itself and (flip=True) its mirror image;
    with translate=k, also weighted equally against the same views shifted k pixels up-left and
    down-right (reflect padding): airbench's 6-view test-time augmentation for translate=1.

    x: uint8 images (N, 32, 32, 3) or a float dataset-ready array; stats as for make_dataset.
    """
    from .pipeline import normalize

    def views(batch):
        p = model(batch, training=False)
        if flip:
            p = (p + model(tf.reverse(batch, axis=[2]), training=False)) / 2
        return tf.cast(p, tf.float32)

    out = []
    for start in range(0, len(x), batch_size):
        batch = normalize(x[start:start + batch_size], stats)
        p = views(batch)
        if translate:
            k, (h, w) = translate, batch.shape[1:3]
            padded = tf.pad(batch, [[0, 0], [k, k], [k, k], [0, 0]], mode="REFLECT")
            shifted = (views(padded[:, :h, :w]) + views(padded[:, 2 * k:, 2 * k:])) / 2
            p = (p + shifted) / 2
        out.append(p.numpy())
    return np.concatenate(out)


class Lookahead(keras.callbacks.Callback):
    """Weight averaging with restarts (Zhang et al. 2019, in airbench's form): every `period` steps the
    slow copy moves toward the weights, slow = decay * slow + (1 - decay) * weights, and training
    continues from the slow copy. decay grows as max_decay * (step / total_steps) ** 3, so early training
    runs free and late training averages out the noise of large steps; after the last step the weights
    are the slow copy. BatchNorm statistics are averaged with the weights.

    tfa.optimizers.Lookahead is the classic form (fixed step size) but wraps only legacy optimizers.
    The slow copy is not checkpointed: a resumed run restarts the averaging from the restored weights.
    """

    def __init__(self, total_steps: int, period: int = 5, max_decay: float = 0.95 ** 5):
        super().__init__()
        self.total_steps, self.period, self.max_decay = int(total_steps), int(period), float(max_decay)

    def on_train_begin(self, logs=None):
        self.slow = [tf.Variable(w, trainable=False) for w in self.model.weights]

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step >= self.total_steps:
            self._sync(1.0)  # the end: keep the average
        elif step % self.period == 0:
            self._sync(self.max_decay * (step / self.total_steps) ** 3)

    def _sync(self, decay: float):
        for slow, w in zip(self.slow, self.model.weights):
            slow.assign(decay * slow + (1 - decay) * tf.cast(w, slow.dtype))
            w.assign(tf.cast(slow, w.dtype))


class EpochEval(keras.callbacks.Callback):
    """Test accuracy (with TTA) after every epoch, timed apart from training: accuracy vs wall time."""

    def __init__(self, x, y, stats=None, tta_level: int = 1, every: int = 1):
        super().__init__()
        if tta_level not in (0, 1, 2):
            raise ValueError(f"tta_level must be 0 (none), 1 (mirror) or 2 (mirror and shifts), "
                             f"got {tta_level!r}")
        self.x, self.y, self.stats, self.every = x, np.asarray(y).ravel(), stats, every
        self.tta_level = tta_level
        self.rows = []

    def on_train_begin(self, logs=None):
        self.train_time = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.train_time += time.perf_counter() - self._start
        if (epoch + 1) % self.every and epoch + 1 != self.params.get("epochs"):
            return
        probs = predict_tta(self.model, self.x, flip=self.tta_level >= 1, translate=int(self.tta_level == 2),
                            stats=self.stats)
        acc = float((probs.argmax(1) == self.y).mean())
        self.rows.append({"epoch": epoch + 1, "train_time_s": round(self.train_time, 1), "test_acc": acc})
        if logs is not None:
            logs["test_acc_tta"] = acc


def train_flagship(data, recipe: dict | None = None, eval_every: int | None = None, callbacks=(),
                   progress_every: int | None = 1, seed: int = 0):
    """Train the flagship network on `data` (cc.load_cifar10 splits) with `recipe` (flagship_recipe()).

    Returns (model, history, rows): rows is accuracy vs training time after every `eval_every` epochs
    (test set, TTA as the recipe says; None: only at the end).
    """
    from .config import seed_everything
    from .models import build_flagship, init_whitening
    from .pipeline import channel_stats, make_alternating_flip_dataset, make_dataset, normalize, pad_crop_flip

    recipe = recipe or flagship_recipe()
    (x_train, y_train), (x_test, y_test) = data
    seed_everything(seed, deterministic=False)
    use_mixed_precision(False)
    if recipe["mixed_precision"]:
        keras.mixed_precision.set_global_policy(recipe["mixed_precision"])
    try:
        stats = channel_stats(x_train)
        translate, batch_size = recipe["translate"], recipe["batch_size"]
        steps_per_epoch = len(x_train) // batch_size
        if recipe["alternating_flip"]:
            train_ds = make_alternating_flip_dataset(x_train, y_train, recipe["epochs"], batch_size,
                                                     pad=translate, stats=stats, seed=seed)
        else:
            train_ds = make_dataset(x_train, y_train, batch_size=batch_size, training=True, stats=stats,
                                    augment=lambda b: pad_crop_flip(b, pad=translate), seed=seed)
        model = build_flagship(widths=recipe["widths"], activation=recipe["activation"])
        # A random sample: loaders may return images sorted by class.
        sample = np.random.default_rng(seed).choice(len(x_train), min(5000, len(x_train)), replace=False)
        init_whitening(model, normalize(x_train[np.sort(sample)], stats).numpy())
        steps = steps_per_epoch * recipe["epochs"]
        lr = recipe["learning_rate_per_1024"] * recipe["batch_size"] / 1024
        schedule = make_schedule("onecycle", lr, steps, **recipe["schedule"])
        bn_biases = [layer.beta for layer in model.layers
                     if isinstance(layer, keras.layers.BatchNormalization) and layer.center]
        sgd = dict(learning_rate=schedule, momentum=recipe["momentum"], nesterov=True,
                   weight_decay=recipe["weight_decay"])
        if recipe["optimizer"] == "muon":
            kernels = [layer.kernel for layer in model.layers
                       if isinstance(layer, keras.layers.Conv2D) and layer.trainable]
            opt = Muon(kernels, recipe["muon_learning_rate"], recipe["muon_momentum"], bn_biases,
                       recipe["bias_scaler"], **sgd)
        else:
            opt = SGDScaledBiases(bn_biases, recipe["bias_scaler"], **sgd)
        evaluator = EpochEval(x_test, y_test, stats, tta_level=recipe["tta_level"],
                              every=eval_every or recipe["epochs"])
        averaging = [Lookahead(steps)] if recipe["lookahead"] else []
        history = train(model, train_ds, recipe["epochs"], optimizer=opt,
                        label_smoothing=recipe["label_smoothing"], jit_compile=recipe["jit_compile"],
                        callbacks=[*averaging, evaluator, *callbacks], progress_every=progress_every,
                        steps_per_epoch=steps_per_epoch)
    finally:
        use_mixed_precision(False)
    history.train_time_s = evaluator.train_time
    return model, history, evaluator.rows


def plot_history(histories, metrics=("loss", "accuracy"), axes=None):
    """Learning curves: one panel per metric, training solid and validation dashed, for one History
    or a {label: History} dict (curves of several runs on shared axes)."""
    import matplotlib.pyplot as plt

    if not isinstance(histories, dict):
        histories = {"": histories}
    if axes is None:
        _, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
        axes = axes[0]
    for ax, metric in zip(axes, metrics):
        for i, (label, hist) in enumerate(histories.items()):
            h = getattr(hist, "history", hist)
            epochs = np.arange(1, len(h[metric]) + 1)
            color = f"C{i}"
            ax.plot(epochs, h[metric], color=color, label=f"{label} train".strip())
            if f"val_{metric}" in h:
                ax.plot(epochs, h[f"val_{metric}"], "--", color=color, label=f"{label} validation".strip())
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend(fontsize="small")
    return axes
