"""Checks for chapter 1 (data): pixel statistics, label encoding, a batch augmentation."""

from __future__ import annotations

import numpy as np

from . import report

__all__ = ["check_channel_means", "check_one_hot", "check_vertical_shift"]


def check_channel_means(answer, x_train) -> bool:
    """Per-channel mean of uint8 images in [0, 1] units: three numbers, red, green, blue."""
    from ..pipeline import channel_stats

    expected = channel_stats(x_train)[0]
    answer = np.asarray(answer, dtype=np.float64).reshape(-1) if answer is not None else np.array([])
    ok = answer.shape == (3,) and np.allclose(answer, expected, atol=2e-3)
    return report(ok, f"means R, G, B = {[round(float(m), 4) for m in expected]}.",
                  "average over images, rows and columns (axes 0, 1, 2) but not over channels, "
                  "and divide by 255 first (one number per channel, three in all).")


def check_one_hot(answer, labels, num_classes: int = 10) -> bool:
    """One-hot encoding of integer labels: shape (N, num_classes), a single 1 per row at the label."""
    labels = np.asarray(labels).reshape(-1)
    expected = np.eye(num_classes, dtype=np.float32)[labels]
    answer = np.asarray(answer) if answer is not None else np.array([])
    ok = answer.shape == expected.shape and np.array_equal(answer, expected)
    return report(ok, f"shape {expected.shape}, one 1 per row in the label's column.",
                  f"you need one row per label and {num_classes} columns; "
                  "tf.one_hot(labels, 10) or np.eye(10)[labels] builds it.")


def check_vertical_shift(shift_fn) -> bool:
    """A batch function that moves every image down by 2 pixels, filling the top rows with zeros."""
    import tensorflow as tf

    batch = tf.random.uniform([4, 32, 32, 3], 0, 255, seed=1)
    expected = tf.concat([tf.zeros([4, 2, 32, 3]), batch[:, :-2]], axis=1)
    try:
        out = shift_fn(batch)
        ok = tuple(out.shape) == (4, 32, 32, 3) and bool(tf.reduce_all(tf.abs(out - expected) < 1e-4))
    except Exception as err:  # a learner's function may fail in many ways: show why
        print(f"Your function raised {type(err).__name__}: {err}")
        ok = False
    return report(ok, "every image moved down 2 pixels in one batched op, no Python loop over images.",
                  "pad 2 zero rows on top of axis 1 (tf.pad) and keep the first 32 rows, "
                  "or concatenate zeros with images[:, :-2].")
