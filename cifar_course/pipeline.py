"""tf.data input pipelines and augmentation recipes that run on whole batches.

Augmenting a batch at once (one vectorized op for 128 images) instead of image by image is what makes
these recipes many times faster than `ImageDataGenerator` on a CPU: see chapter 1 and
`benchmarks/pipeline_throughput.py`.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def channel_stats(x):
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units: ((3,), (3,))."""
    x = np.asarray(x)
    mean = np.zeros(3)
    sq = np.zeros(3)
    for start in range(0, len(x), 10_000):  # in chunks: 50,000 float64 images would need 1.2 GB
        chunk = x[start:start + 10_000].astype(np.float64) / 255.0
        mean += chunk.sum(axis=(0, 1, 2))
        sq += (chunk**2).sum(axis=(0, 1, 2))
    count = len(x) * x.shape[1] * x.shape[2]
    mean /= count
    return mean.astype(np.float32), np.sqrt(sq / count - mean**2).astype(np.float32)


def standardize(pixels, stats=None):
    """Float pixels in [0, 1] -> float32 standardized per channel by `stats` = (mean, std), the
    `channel_stats` of the training set (unchanged but for the dtype when stats is None)."""
    pixels = tf.cast(pixels, tf.float32)
    if stats is None:
        return pixels
    mean, std = stats
    return (pixels - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def normalize(images, stats=None):
    """uint8 (or [0, 255] float) images -> float32, scaled to [0, 1], then standardized by `stats`."""
    return standardize(tf.cast(images, tf.float32) / 255.0, stats)


# ------------------------------------------------------------------------------------------------
# Augmentation recipes: float batches (B, H, W, C) in, same shape out.


def pad_crop_flip(images, pad: int = 4, flip: bool = True):
    """Random translation by up to `pad` pixels (reflect padding, then a random crop) and (flip=True) a
    random horizontal flip, with a different offset for every image of the batch.

    The crop and the flip are one gather from the padded batch (flipping just reverses the column
    indices), so the whole batch costs one pad and one gather: no per-image work.
    """
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    dy = tf.random.uniform([batch], 0, 2 * pad + 1, dtype=tf.int32)
    dx = tf.random.uniform([batch], 0, 2 * pad + 1, dtype=tf.int32)
    mirror = tf.random.uniform([batch]) < (0.5 if flip else 0.0)
    cols = tf.range(width)[None, :]
    cols = tf.where(mirror[:, None], width - 1 - cols, cols) + dx[:, None]  # (B, W)
    rows = tf.range(height)[None, :] + dy[:, None]  # (B, H)
    # Index of every output pixel in the padded batch flattened to (B * H' * W', C).
    index = ((tf.range(batch)[:, None, None] * (height + 2 * pad) + rows[:, :, None]) * (width + 2 * pad)
             + cols[:, None, :])
    return tf.gather(tf.reshape(padded, [-1, channels]), index)


def random_affine(images, rotation_deg: float = 15.0, shift: float = 0.1, zoom: float = 0.2,
                  flip: bool = True, fill_mode: str = "NEAREST"):
    """The classic Keras-tutorial recipe (rotation, shift, flip, zoom as ImageDataGenerator takes them),
    composed into one affine transform per image and applied in a single resampling pass."""
    shape = tf.shape(images)
    batch = shape[0]
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    angle = tf.random.uniform([batch], -rotation_deg, rotation_deg) * (math.pi / 180.0)
    zx = tf.random.uniform([batch], 1.0 - zoom, 1.0 + zoom)
    zy = tf.random.uniform([batch], 1.0 - zoom, 1.0 + zoom)
    tx = tf.random.uniform([batch], -shift, shift) * width
    ty = tf.random.uniform([batch], -shift, shift) * height
    sign = tf.where(tf.random.uniform([batch]) < 0.5, -1.0, 1.0) if flip else tf.ones([batch])
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel p maps to input pixel c + R(angle) @ diag(zx, zy) @ F (p - c) + t, F the optional flip.
    m00, m01, m10, m11 = cos * zx * sign, -sin * zy, sin * zx * sign, cos * zy
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    transforms = tf.stack([
        m00, m01, cx + tx - (m00 * cx + m01 * cy),
        m10, m11, cy + ty - (m10 * cx + m11 * cy),
        tf.zeros([batch]), tf.zeros([batch]),
    ], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode=fill_mode,
    )


AUGMENTATIONS = {
    None: None,
    "none": None,
    "affine": random_affine,  # the classic Keras-tutorial ImageDataGenerator recipe
    "padcrop": pad_crop_flip,  # the fast recipe of modern CIFAR training
}


# ------------------------------------------------------------------------------------------------
# The pipeline


def make_dataset(x, y, batch_size: int = 128, training: bool = False, augment=None, stats=None,
                 num_classes: int = 10, one_hot: bool = False, cache: bool = True, seed: int = 0,
                 drop_remainder: bool | None = None, num_parallel_calls=tf.data.AUTOTUNE):
    """Build a batched tf.data pipeline of (float32 images, labels).

    training shuffles every epoch and (by default) drops the last partial batch; augment is a recipe
    name from AUGMENTATIONS or any function of a float image batch; stats = channel_stats(x_train)
    standardizes; one_hot gives (B, num_classes) float labels for losses that need them.
    num_parallel_calls: batches prepared at once (AUTOTUNE lets tf.data choose; see
    `measure_parallelism`).
    """
    if augment in AUGMENTATIONS:
        augment = AUGMENTATIONS[augment]
    elif not callable(augment):
        raise ValueError(f"Unknown augmentation {augment!r}: use one of {[k for k in AUGMENTATIONS if k]}"
                         " or a function of an image batch.")
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels.")
    drop_remainder = training if drop_remainder is None else drop_remainder
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    if cache:
        ds = ds.cache()  # raw uint8: 50,000 CIFAR images are 150 MB
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def prepare(images, labels):
        images = tf.cast(images, tf.float32)
        if augment is not None and training:
            images = augment(images)
        images = normalize(images, stats)
        if one_hot:
            labels = tf.one_hot(labels, num_classes)
        return images, labels

    return ds.map(prepare, num_parallel_calls=num_parallel_calls).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------------
# Throughput: the old way (ImageDataGenerator) against this pipeline, same recipe, same process


def make_image_data_generator(recipe: str = "affine"):
    """The Keras `ImageDataGenerator` doing what a recipe of AUGMENTATIONS does (the classic way).

    "affine": rotation 15 degrees, shifts 0.1, horizontal flip, zoom 0.2; "padcrop": shifts of up to
    4 pixels with reflected borders, horizontal flip. It augments one image at a time in NumPy.
    """
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    if recipe == "affine":
        return ImageDataGenerator(rotation_range=15, width_shift_range=0.1, height_shift_range=0.1,
                                  horizontal_flip=True, zoom_range=0.2)
    if recipe == "padcrop":
        return ImageDataGenerator(width_shift_range=4, height_shift_range=4, fill_mode="reflect",
                                  horizontal_flip=True)
    raise ValueError(f"No ImageDataGenerator equivalent for recipe {recipe!r}: use 'affine' or 'padcrop'.")


def _images_per_second(batches, n_batches: int) -> float:
    import time

    start, count = time.perf_counter(), 0
    for _ in range(n_batches):
        images, _ = next(batches)
        count += len(images)
    return count / (time.perf_counter() - start)


def measure_throughput(x, y, recipes=("affine", "padcrop"), batch_size: int = 64, n_images: int = 6_400,
                       repeats: int = 3) -> list[dict]:
    """Images/s of ImageDataGenerator.flow and of make_dataset for each recipe, as table rows.

    Both produce shuffled, augmented float batches of `batch_size`; each is timed over `n_images`
    after a warm-up, the two alternate `repeats` times in this process and the best round of each counts
    (the least disturbed by other work on the machine). `speed-up` is ours / ImageDataGenerator.
    """
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    n_batches = max(1, n_images // batch_size)
    rows = []
    for recipe in recipes:
        keras_flow = make_image_data_generator(recipe).flow(x, y, batch_size=batch_size, seed=0)
        ours = iter(make_dataset(x, y, batch_size=batch_size, training=True, augment=recipe).repeat())
        _images_per_second(keras_flow, 2)
        _images_per_second(ours, max(2, len(x) // batch_size))  # one epoch: fills the cache
        best = {"ImageDataGenerator": 0.0, "tf.data (this course)": 0.0}
        for _ in range(repeats):
            best["ImageDataGenerator"] = max(best["ImageDataGenerator"],
                                             _images_per_second(keras_flow, n_batches))
            best["tf.data (this course)"] = max(best["tf.data (this course)"],
                                                _images_per_second(ours, n_batches))
        base = best["ImageDataGenerator"]
        for loader, rate in best.items():
            rows.append({"recipe": recipe, "loader": loader, "images/s": round(rate),
                         "speed-up": round(rate / base, 1)})
    return rows


def measure_parallelism(x, y, settings=(1, 2, 4, "AUTOTUNE"), recipe: str = "affine", batch_size: int = 64,
                        n_images: int = 6_400, repeats: int = 3) -> list[dict]:
    """Images/s of make_dataset's augmenting pipeline for each `num_parallel_calls` setting, as rows.

    Why: a PyTorch rule of thumb sets data-loader workers to twice the CPU cores; tf.data's equivalent is
    the number of batches `map` prepares at once. Each setting is timed over `n_images` after a warm-up
    epoch (which fills the cache); settings alternate `repeats` times and the best round of each counts.
    `relative` is the rate over that of the first setting. "AUTOTUNE" (or tf.data.AUTOTUNE) lets tf.data
    choose.
    """
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    n_batches = max(1, n_images // batch_size)
    pipes = {}
    for setting in settings:
        calls = tf.data.AUTOTUNE if setting in ("AUTOTUNE", tf.data.AUTOTUNE) else int(setting)
        label = "AUTOTUNE" if calls == tf.data.AUTOTUNE else str(calls)
        pipes[label] = iter(make_dataset(x, y, batch_size=batch_size, training=True, augment=recipe,
                                         num_parallel_calls=calls).repeat())
        _images_per_second(pipes[label], max(2, len(x) // batch_size))  # one epoch: fills the cache
    best = dict.fromkeys(pipes, 0.0)
    for _ in range(repeats):
        for label, batches in pipes.items():
            best[label] = max(best[label], _images_per_second(batches, n_batches))
    first = next(iter(best.values()))
    return [{"recipe": recipe, "num_parallel_calls": label, "images/s": round(rate),
             "relative": round(rate / first, 2)} for label, rate in best.items()]
