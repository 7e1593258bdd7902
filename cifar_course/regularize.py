"""Regularization pieces: batch mixing (mixup, CutMix), cutout, stochastic depth, L2 and dropout.

Introduced in the regularization chapter. The mixing functions take a batch of float images and one-hot
labels and return a mixed batch, so they go straight into a tf.data map after `make_dataset(...,
one_hot=True)`:

    train_ds = cc.make_dataset(x, y, 128, training=True, one_hot=True).map(cc.mixup)

`cutout` is an image-only augmentation (use it as `make_dataset(..., augment=cc.cutout)`);
`StochasticDepth` is a layer for the residual branch of a block. The small residual network the chapter
compares every technique on, `build_regularized_resnet`, is in `models` with the other builders.
`measure_gap` gives the overfitting gap a regularizer is meant to narrow (the regularization and
troubleshooting chapters), `mean_and_spread` the summary of a run repeated with several seeds, and
`plot_mixing_examples` what the mixing functions do to real images.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras import layers


# ------------------------------------------------------------------------------------------------
# Batch mixing: (images (B, H, W, C) float, one-hot labels (B, K)) -> same shapes


def _beta(shape, alpha: float, seed=None):
    """Beta(alpha, alpha) samples from two Gamma draws (tf.random has no Beta sampler)."""
    a = tf.random.gamma(shape, alpha, seed=seed)
    b = tf.random.gamma(shape, alpha, seed=None if seed is None else seed + 1)
    return a / (a + b)


def _check_one_hot(labels):
    if labels.shape.rank != 2:
        raise ValueError("Batch mixing needs one-hot labels of shape (batch, classes): build the dataset "
                         "with make_dataset(..., one_hot=True) and map the mixing function after it.")


def mixup(images, labels, alpha: float = 0.2, seed=None):
    """mixup (Zhang et al. 2018): each image becomes lam * itself + (1 - lam) * a partner from the same
    batch, and its label the same blend of the two labels. lam ~ Beta(alpha, alpha) per image.

    Small alpha (0.2, a common choice for CIFAR-10) keeps most mixes close to one of the two images.
    """
    _check_one_hot(labels)
    labels = tf.cast(labels, images.dtype)
    batch = tf.shape(images)[0]
    partner = tf.random.shuffle(tf.range(batch), seed=seed)
    lam = _beta([batch], alpha, seed)
    lam_img = tf.reshape(lam, [-1, 1, 1, 1])
    mixed = lam_img * images + (1.0 - lam_img) * tf.gather(images, partner)
    mixed_labels = lam[:, None] * labels + (1.0 - lam[:, None]) * tf.gather(labels, partner)
    return mixed, mixed_labels


def cutmix_boxes(batch, height, width, lam):
    """Boxes of area ~ (1 - lam) * H * W at uniform random centres, clipped to the image.

    Returns a (B, H, W, 1) float mask, 1 inside the box, and the box's true area fraction per image
    (clipping at the border can make it smaller than 1 - lam).
    """
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    cut = tf.sqrt(1.0 - lam)  # side ratio, so that the area ratio is 1 - lam
    cy = tf.random.uniform([batch], 0.0, h)
    cx = tf.random.uniform([batch], 0.0, w)
    y0 = tf.clip_by_value(tf.round(cy - cut * h / 2), 0.0, h)
    y1 = tf.clip_by_value(tf.round(cy + cut * h / 2), 0.0, h)
    x0 = tf.clip_by_value(tf.round(cx - cut * w / 2), 0.0, w)
    x1 = tf.clip_by_value(tf.round(cx + cut * w / 2), 0.0, w)
    rows = tf.range(h)[None, :]  # (1, H)
    cols = tf.range(w)[None, :]
    in_rows = tf.cast((rows >= y0[:, None]) & (rows < y1[:, None]), tf.float32)  # (B, H)
    in_cols = tf.cast((cols >= x0[:, None]) & (cols < x1[:, None]), tf.float32)  # (B, W)
    mask = in_rows[:, :, None, None] * in_cols[:, None, :, None]  # (B, H, W, 1)
    area = (y1 - y0) * (x1 - x0) / (h * w)
    return mask, area


def cutmix(images, labels, alpha: float = 1.0, seed=None):
    """CutMix (Yun et al. 2019): paste a box from a partner image; the label weights are the area shares.

    lam ~ Beta(alpha, alpha) per image sets the box area to (1 - lam) of the image; after clipping at
    the border the label weight is recomputed from the box actually pasted.
    """
    _check_one_hot(labels)
    labels = tf.cast(labels, images.dtype)
    shape = tf.shape(images)
    batch = shape[0]
    partner = tf.random.shuffle(tf.range(batch), seed=seed)
    lam = _beta([batch], alpha, seed)
    mask, area = cutmix_boxes(batch, shape[1], shape[2], lam)
    mask = tf.cast(mask, images.dtype)
    mixed = (1.0 - mask) * images + mask * tf.gather(images, partner)
    area = tf.cast(area, images.dtype)[:, None]
    mixed_labels = (1.0 - area) * labels + area * tf.gather(labels, partner)
    return mixed, mixed_labels


# ------------------------------------------------------------------------------------------------
# Cutout (DeVries and Taylor 2017), with tensorflow-addons


def cutout(images, size: int = 8, fill: float = 0.0):
    """Zero (or `fill`) one size x size square at a random place in every image of the batch.

    Uses `tfa.image.random_cutout`. tensorflow-addons is end of life (no releases after 2024); with
    Keras 3 use `keras_cv.layers.RandomCutout` (or `keras.layers.RandomErasing` in recent Keras).
    The square may hang over the border, so it can cover fewer than size * size pixels.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow_addons as tfa

    if size % 2:
        raise ValueError(f"tfa's random_cutout needs an even size, got {size}.")
    return tfa.image.random_cutout(images, (size, size), constant_values=fill)


# ------------------------------------------------------------------------------------------------
# Stochastic depth (Huang et al. 2016)


@keras.utils.register_keras_serializable(package="cifar_course")
class StochasticDepth(layers.Layer):
    """Drop a residual branch for whole samples during training: `x + StochasticDepth(0.1)(branch)`.

    Training: each sample keeps its branch with probability 1 - rate (else the branch is zero).
    Inference: the branch is scaled by 1 - rate, its expected value in training (Huang et al.'s rule).
    """

    def __init__(self, rate: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth rate is a drop probability in [0, 1), got {rate}.")
        self.rate = float(rate)

    def call(self, branch, training=None):
        keep = 1.0 - self.rate
        if not training or self.rate == 0.0:
            return branch * keep
        shape = tf.concat([tf.shape(branch)[:1], tf.ones([tf.rank(branch) - 1], tf.int32)], axis=0)
        survive = tf.cast(tf.random.uniform(shape) < keep, branch.dtype)
        return branch * survive

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


# ------------------------------------------------------------------------------------------------
# L2 (dropout is Keras' own layer)


def l2(factor: float = 1e-4):
    """Keras' L2 penalty, factor * sum(w ** 2) added to the loss (None when factor is 0).

    The classic Keras CIFAR-10 recipe uses 1e-4 on the convolution kernels. Unlike decoupled weight decay (AdamW,
    `make_optimizer(weight_decay=...)`), the penalty goes through the gradient, so Adam rescales it.
    """
    return keras.regularizers.L2(factor) if factor else None


# ------------------------------------------------------------------------------------------------
# Measuring what a regularizer does: the train-validation gap, over seeds


def measure_gap(model, train_eval_ds, val_ds) -> dict:
    """Accuracy on the training images and on validation images, and their difference (the gap).

    train_eval_ds must serve the *clean* training images (no augmentation, no mixing, no shuffling
    needed): the accuracy Keras logs during fit is on the augmented or mixed batches, and in training
    mode, so it is not the accuracy on the images the network was fitted to.
    """
    from .evaluate import predict

    accuracies = []
    for ds in (train_eval_ds, val_ds):
        probs, labels = predict(model, ds)
        accuracies.append(float(np.mean(probs.argmax(axis=1) == labels)))
    train_acc, val_acc = accuracies
    return {"train accuracy": train_acc, "validation accuracy": val_acc, "gap": train_acc - val_acc}


def mean_and_spread(values) -> tuple[float, float]:
    """Mean of a measurement repeated with several seeds, and its spread: half the range (max - min) / 2,
    so that every seed lies within mean +- spread."""
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("mean_and_spread needs at least one value.")
    return float(values.mean()), float((values.max() - values.min()) / 2)


def plot_mixing_examples(images, labels, mixers: dict, n: int = 6, class_names=None, seed: int = 0):
    """The first `n` images of a batch, then one row per mixing function (name -> f(images, one-hot
    labels) -> (images, labels)), each image titled with its two largest label weights.

    images: (B, H, W, C) in [0, 255] (the functions are linear or copy pixels, so they work unnormalized);
    labels: one-hot (B, K). B should be larger than n, so partners come from outside the shown images too.
    """
    import matplotlib.pyplot as plt

    images = tf.cast(images, tf.float32)
    labels = tf.cast(labels, tf.float32)
    if len(images) < n:
        raise ValueError(f"Need at least n={n} images, got {len(images)}.")
    rows = {"original": (images, labels)}
    for name, mix in mixers.items():
        tf.random.set_seed(seed)
        rows[name] = mix(images, labels)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.5 * n, 1.75 * len(rows)), squeeze=False)
    for row, (name, (mixed, mixed_labels)) in enumerate(rows.items()):
        pixels = np.clip(np.asarray(mixed[:n]), 0, 255).astype(np.uint8)
        weights = np.asarray(mixed_labels[:n])
        for col in range(n):
            ax = axes[row, col]
            ax.imshow(pixels[col], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            top = np.argsort(weights[col])[::-1][:2]
            parts = [f"{class_names[k] if class_names is not None else k} {weights[col][k]:.2f}"
                     for k in top if weights[col][k] > 0.005]
            ax.set_title("\n".join(parts), fontsize=7)
        axes[row, 0].set_ylabel(name, fontsize=9)
    fig.tight_layout()
    return fig


def plot_gap_bars(rows, name_key: str = "technique", reference: str | None = None):
    """Two bar panels, one bar per row: validation accuracy, and the train-validation gap.

    rows: dicts with `name_key`, "validation accuracy" and "gap" (as `measure_gap` returns); the row
    named `reference` (default: the first) is drawn in grey with a dotted line across each panel, so
    every other bar reads as better or worse than it.
    """
    import matplotlib.pyplot as plt

    names = [r[name_key] for r in rows]
    reference = names[0] if reference is None else reference
    if reference not in names:
        raise ValueError(f"No row named {reference!r} among {names}.")
    colours = ["0.6" if n == reference else "C0" for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.35 * len(rows) + 1.2), sharey=True)
    for ax, column in zip(axes, ("validation accuracy", "gap")):
        values = [r[column] for r in rows]
        ax.barh(names, values, color=colours)
        ax.axvline(values[names.index(reference)], color="0.3", ls=":", lw=1)
        ax.set_xlabel(column if column != "gap" else "gap: train minus validation accuracy")
    axes[0].invert_yaxis()  # first row on top, as in the table
    fig.tight_layout()
    return fig
