"""Training: a thin layer over `model.fit`, not a framework.

`train_model(model, train_ds, epochs, val_ds)` compiles the model (optimizer, learning-rate schedule, loss with
optional label smoothing, gradient clipping), adds the callbacks a course run needs (a one-line-per-epoch
progress display that stays clean in notebooks, with a tqdm bar in a terminal; TerminateOnNaN; optional
checkpoint/resume, TensorBoard and early stopping) and returns Keras' own `History`. Everything else is
plain Keras: pass your own callbacks, loss or metrics and they are used as they are.

Schedules live in `schedules`, optimizers in `optim`; the flagship recipe (`flagship`) builds on this
module. GPU switches: `use_mixed_precision()`, `train_model(..., jit_compile=True)` (XLA), and
`distribution_strategy(...)` for several GPUs or machines (build the model under `strategy.scope()`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import tensorflow as tf
from tensorflow import keras
from tqdm import tqdm

from . import config
from .optim import current_learning_rate, make_optimizer
from .schedules import make_schedule

# ------------------------------------------------------------------------------------------------
# Callbacks


def _in_terminal() -> bool:
    """True where a progress bar can redraw in place: stderr is a terminal and this is no Jupyter
    kernel (notebooks, nbval and the book build run in one, and keep plain lines)."""
    stderr = sys.stderr
    return bool(stderr is not None and stderr.isatty()) and "ipykernel" not in sys.modules


class Progress(keras.callbacks.Callback):
    """One short line every `every` epochs (and the last); in a terminal also a tqdm bar over the steps.
    every=None prints nothing.

    bar=None shows the bar only where it can redraw in place (`_in_terminal`), so notebooks, nbval and
    logs get the lines alone; True or False forces it. Also adds `epoch_time_s` and `lr` to the epoch
    logs, so `history.history` has time and learning rate per epoch.
    """

    def __init__(self, every: int | None = 1, print_fn=None, bar: bool | None = None):
        super().__init__()
        self.every = int(every or 0)  # 0 or None: silent, still logging time and learning rate
        self.bar = bool(self.every) and (_in_terminal() if bar is None else bool(bar))
        self.print_fn = print_fn
        self._supports_tf_logs = True  # the step hook reads no logs: no device sync per step
        self._bar = None

    def on_train_begin(self, logs=None):
        self.epochs = self.params.get("epochs")

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        if self.bar:
            if self._bar is None:  # created here, so a resumed run counts only its remaining epochs
                steps = self.params.get("steps")
                self._bar = tqdm(total=steps and steps * (self.epochs - epoch), unit="step",
                                 file=sys.stderr, dynamic_ncols=True, leave=False)
            self._bar.set_description(f"epoch {epoch + 1}/{self.epochs}")
            self._steps_shown = 0

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(batch + 1 - self._steps_shown)  # batch: steps done in this epoch - 1
            self._steps_shown = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["epoch_time_s"] = time.perf_counter() - self._start
        logs["lr"] = current_learning_rate(self.model.optimizer)
        if not self.every or ((epoch + 1) % self.every and epoch + 1 != self.epochs):
            return
        shown = " ".join(f"{k} {v:.4f}" for k, v in logs.items() if k not in ("epoch_time_s", "lr"))
        print_fn = self.print_fn or (tqdm.write if self._bar is not None else print)
        print_fn(f"epoch {epoch + 1}/{self.epochs}  {shown}  lr {logs['lr']:.2e}  "
                 f"{logs['epoch_time_s']:.1f}s")

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


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


def training_speed(build_model, policy: str = "float32", batch_size: int = 256, steps: int = 3) -> float:
    """Training images per second of `build_model()` under a mixed-precision `policy`, on random batches
    (one warm-up step, then `steps` timed ones). Whether bfloat16 pays depends on the CPU: with
    AVX-512-BF16 or AMX it computes natively, without them it is emulated and can be slower than float32.
    """
    import numpy as np

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model()
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(
                          from_logits=not outputs_probabilities(model)))
        rng = np.random.default_rng(0)
        x = rng.normal(size=(batch_size, *model.input_shape[1:])).astype("float32")
        y = rng.integers(0, model.output_shape[-1], batch_size)
        model.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        return batch_size * steps / (time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_global_policy("float32")


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


def final_layer(model):
    """The layer that makes the model's output, looking inside nested models (a backbone as a layer)."""
    layer = model.layers[-1]
    return final_layer(layer) if isinstance(layer, keras.Model) else layer


def outputs_probabilities(model) -> bool:
    """True when the model ends in a softmax (the course's default), False when it outputs logits.

    The loss (here), Grad-CAM and the attacks all need to know which of the two a model gives."""
    activation = getattr(final_layer(model), "activation", None)
    return activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"


def _label_rank(ds) -> int:
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError("train_model() needs a dataset of (images, labels) batches, e.g. from "
                         "cc.make_dataset.")
    return spec[1].shape.rank


def make_loss(sparse: bool, from_logits: bool = False, label_smoothing: float = 0.0):
    """Cross-entropy for integer (sparse) or one-hot labels. Label smoothing needs one-hot labels in
    TF 2.14 (`train` converts sparse labels for you when label_smoothing > 0)."""
    if sparse:
        if label_smoothing:
            raise ValueError("SparseCategoricalCrossentropy has no label smoothing in TF 2.14: use one-hot "
                             "labels (make_dataset(..., one_hot=True)) or let train_model() convert them.")
        return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    return keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)


def train_model(model, train_ds, epochs: int, val_ds=None, *, optimizer="adam", learning_rate=1e-3,
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
                loss = make_loss(sparse, from_logits=not outputs_probabilities(model),
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
# Recipes: hyperparameters per profile (the flagship's are in `flagship`)


def recipe_with(recipe: dict, overrides: dict, what: str) -> dict:
    """`recipe` updated with `overrides`, refusing keys it does not have (a mistyped key would otherwise
    be ignored without a word)."""
    unknown = set(overrides) - set(recipe)
    if unknown:
        raise ValueError(f"Unknown {what} recipe keys {sorted(unknown)}; known: {sorted(recipe)}.")
    return {**recipe, **overrides}


# Full-profile (one GPU) accuracy targets. TARGETS, NOT MEASUREMENTS: no GPU was available to the course's
# authors; resnet_recipe below and flagship.flagship_recipe are configured to reach them (mean of
# several seeds).
FULL_PROFILE_TARGETS = {"resnet20": 0.915, "flagship": 0.94}


def resnet_recipe(profile=None, **overrides) -> dict:
    """Hyperparameters for CIFAR ResNet-20 (He et al. 2016 with a cosine schedule and warm-up).

    full: 100 epochs, batch 128, SGD+Nesterov 0.1, mixed float16 and XLA on a GPU: aimed at
    FULL_PROFILE_TARGETS["resnet20"] (91.5%); quick/smoke: short runs for the chapters.
    """
    prof = config.resolve(profile)
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
    return recipe_with(recipe, overrides, "ResNet")
