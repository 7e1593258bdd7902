"""Tools for the troubleshooting chapter: per-step loss curves, label-sorted data, a roughness measure.

The chapter reproduces the usual training failures on purpose; these helpers make them measurable.
"""

from __future__ import annotations

import numpy as np
from tensorflow import keras


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
