"""Tools for the troubleshooting chapter: per-step loss curves, label-sorted data, a roughness measure;
and per-layer gradient norms (the residual chapter's check for vanishing gradients).

The chapter reproduces the usual training failures on purpose; these helpers make them measurable.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow import keras

from .train import make_loss, outputs_probabilities


class BatchLosses(keras.callbacks.Callback):
    """Record the training loss of every step (Keras logs a running mean over the epoch; we undo it)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_epoch_begin(self, epoch, logs=None):
        self._previous_mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        # mean_k = (l_1 + ... + l_k) / k, so l_k = k * mean_k - (k - 1) * mean_{k-1}
        self.losses.append((batch + 1) * mean - batch * self._previous_mean)
        self._previous_mean = mean


def sort_by_label(x, y):
    """The training set ordered class by class (a stable sort), as an unshuffled folder read would be."""
    order = np.argsort(np.asarray(y).reshape(-1), kind="stable")
    return x[order], np.asarray(y).reshape(-1)[order]


def roughness(losses, tail: float = 0.5) -> float:
    """Mean absolute change of the loss from one step to the next over the last `tail` of the run.

    Smooth, converging training gives a small number; oscillating training a large one.
    """
    losses = np.asarray(losses, np.float64)
    losses = losses[int(len(losses) * (1 - tail)):]
    if len(losses) < 2:
        raise ValueError("roughness needs at least two recorded steps in the tail of the run.")
    return float(np.mean(np.abs(np.diff(losses))))


def gradient_norms(model, x, y, loss=None) -> list[dict]:
    """The gradient of the loss on one batch for every Conv2D and Dense kernel, in forward order.

    How to see vanishing (or exploding) gradients: if the norms fall by orders of magnitude from the
    output back to the input, the first layers barely learn. Runs the model in training mode (BatchNorm on
    batch statistics, as a training step does) and changes no weight (BatchNorm's moving averages are put
    back). Rows: index, layer name, kind, gradient norm, kernel norm and their ratio (the relative size of
    a plain SGD step). Chapter 3.
    """
    y = tf.convert_to_tensor(y)
    if loss is None:
        loss = make_loss(sparse=y.shape.rank == 1 or y.shape[-1] == 1,
                         from_logits=not outputs_probabilities(model))
    kernels = [layer for layer in model.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    if not kernels:
        raise ValueError("gradient_norms found no Conv2D or Dense layer in the model.")
    state = [w.numpy() for w in model.non_trainable_weights]
    with tf.GradientTape() as tape:
        value = loss(y, model(x, training=True))
    grads = tape.gradient(value, [layer.kernel for layer in kernels])
    for w, saved in zip(model.non_trainable_weights, state):
        w.assign(saved)
    rows = []
    for i, (layer, grad) in enumerate(zip(kernels, grads)):
        g = float(tf.norm(grad)) if grad is not None else 0.0
        w = float(tf.norm(layer.kernel))
        rows.append({"index": i, "layer": layer.name, "kind": type(layer).__name__,
                     "gradient norm": g, "kernel norm": w, "ratio": g / w if w else float("nan")})
    return rows


class GradientNormMonitor(keras.callbacks.Callback):
    """`gradient_norms` on one fixed batch at the end of every epoch: `history[epoch]` is its rows.

    Monitoring the norms while training is how one tells vanishing gradients from a bad learning rate
    (chapter 3 watches a deep plain network and a ResNet this way)."""

    def __init__(self, x, y, loss=None):
        super().__init__()
        self.x, self.y, self.loss = x, y, loss
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        self.history.append(gradient_norms(self.model, self.x, self.y, self.loss))
