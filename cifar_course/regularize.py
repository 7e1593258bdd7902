"""Regularization pieces: batch mixing (mixup, CutMix), cutout, stochastic depth, L2 and dropout.

Introduced in the regularization chapter. The mixing functions take a batch of float images and one-hot
labels and return a mixed batch, so they go straight into a tf.data map after `make_dataset(...,
one_hot=True)`:

    train_ds = cc.make_dataset(x, y, 128, training=True, one_hot=True).map(cc.mixup)

`cutout` is an image-only augmentation (use it as `make_dataset(..., augment=cc.cutout)`);
`StochasticDepth` is a layer for the residual branch of a block. The small residual network the chapter
compares every technique on, `build_regularized_resnet`, is in `models` with the other builders.
"""

from __future__ import annotations

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
