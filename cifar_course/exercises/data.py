"""Checks for chapter 1 (data): pixel statistics, label encoding, standardization, batch augmentation."""

from __future__ import annotations

import numpy as np

from .checking import Mistake, as_array, call, compare, exercise, verdict

__all__ = ["check_channel_means", "check_one_hot", "check_vertical_shift", "check_standardize",
           "check_pad_crop_flip"]


@exercise("01", "channel means", "drill", "the three channel means in `answer`")
def check_channel_means(answer, x_train) -> str:
    """Per-channel mean of uint8 images in [0, 1] units: three numbers, red, green, blue."""
    from ..pipeline import channel_stats

    expected = channel_stats(x_train)[0]
    answer = as_array(answer, "answer").reshape(-1)
    if answer.shape == (3,) and np.allclose(answer, 255 * expected, atol=0.5):
        raise Mistake("these are means in [0, 255] units; the course works in [0, 1] units.")
    return verdict(answer.shape == (3,) and np.allclose(answer, expected, atol=2e-3),
                   f"means R, G, B = {[round(float(m), 4) for m in expected]}.",
                   f"expected three numbers, one per channel (you gave {answer.size}): average over "
                   "everything except the channel axis." if answer.shape != (3,) else
                   "three numbers, but not the channel means: which axes did you average over?")


@exercise("01", "one-hot labels", "drill", "the one-hot labels in `answer`")
def check_one_hot(answer, labels, num_classes: int = 10) -> str:
    """One-hot encoding of integer labels: shape (N, num_classes), a single 1 per row at the label."""
    labels = np.asarray(labels).reshape(-1)
    expected = np.eye(num_classes, dtype=np.float32)[labels]
    answer = as_array(answer, "answer")
    if answer.shape != expected.shape:
        raise Mistake(f"shape {answer.shape}, expected one row per label and one column per class.")
    if not np.allclose(answer.sum(axis=1), 1):
        raise Mistake("some rows do not sum to 1: a one-hot row holds a single 1, zeros elsewhere.")
    return verdict(np.array_equal(answer, expected), f"shape {expected.shape}, one 1 per row.",
                   "the shape is right but some 1s are in the wrong column: the column is the label.")


@exercise("01", "shift a batch down", "build", "`shift_down(images)`")
def check_vertical_shift(shift_fn) -> str:
    """A batch function that moves every image down by 2 pixels, filling the top rows with zeros."""
    import tensorflow as tf

    batch = tf.random.uniform([4, 32, 32, 3], 0, 255, seed=1)
    expected = tf.concat([tf.zeros([4, 2, 32, 3]), batch[:, :-2]], axis=1).numpy()
    out = as_array(call(shift_fn, batch), "output")
    up = np.concatenate([batch[:, 2:], np.zeros([4, 2, 32, 3])], axis=1)
    compare(out, expected, "output", atol=1e-4, variants=[
        ("your images moved up, not down.", up),
        ("the images are unchanged.", batch.numpy())])
    return "every image moved down 2 pixels in one batched op, no Python loop over images."


@exercise("01", "per-channel standardization", "build", "`standardize(images, mean, std)`")
def check_standardize(standardize_fn) -> str:
    """`standardize(images, mean, std)`: uint8 (B, H, W, 3) -> float32, each channel shifted by its mean
    and divided by its std, with mean and std in [0, 1] units (what `cc.channel_stats` returns)."""
    from ..pipeline import normalize

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    mean = np.array([0.49, 0.48, 0.45], np.float32)
    std = np.array([0.25, 0.24, 0.26], np.float32)
    expected = normalize(images, (mean, std)).numpy()
    out = as_array(call(standardize_fn, images, mean, std), "output")
    x = images / 255.0
    compare(out, expected, "output", atol=1e-4, variants=[
        ("your values are far too large: mean and std are in [0, 1] units, the images in [0, 255].",
         (images - mean) / std),
        ("each channel is centred but not divided by its std.", x - mean),
        ("each channel is divided by its std but not centred (subtract the mean first).", x / std),
        ("you subtract the mean after dividing by the std: centre first, then scale.", x / std - mean),
        ("one mean and std for all channels: use each channel's own.",
         (x - mean.mean()) / std.mean())])
    return "each channel has its own shift and scale, computed once from the training set."


def _placements(image, pad: int):
    """Every pad-crop(-flip) of one image: (2 * (2 pad + 1)^2, H, W, C), in reflect and zero padding."""
    h, w = image.shape[:2]
    out = {}
    for mode in ("reflect", "constant"):
        padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode=mode)
        crops = [padded[dy:dy + h, dx:dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
        crops = np.stack(crops)
        out[mode] = np.concatenate([crops, crops[:, :, ::-1]])  # flipped crops after the plain ones
    return out


@exercise("01", "pad-crop-flip", "build", "`pad_crop_flip(images)`")
def check_pad_crop_flip(augment_fn, pad: int = 4) -> str:
    """`pad_crop_flip(images)`: a random translation by up to `pad` pixels (reflect padding, random crop)
    and a random horizontal flip, drawn for every image of a float batch (B, H, W, C) on its own."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 1, (32, 32, 32, 3)).astype(np.float32)
    out = as_array(call(augment_fn, tf.constant(batch)), "output")
    if out.shape != batch.shape:
        raise Mistake(f"your output has shape {out.shape}, expected {batch.shape} (the same as the input)")
    n = (2 * pad + 1) ** 2
    offsets, flips, zero_border = [], [], False
    for image, result in zip(batch, out):
        found = None
        for mode, candidates in _placements(image, pad).items():
            match = np.flatnonzero(np.abs(candidates - result).reshape(len(candidates), -1).max(1) < 1e-5)
            if match.size:
                found = int(match[0])
                zero_border |= mode == "constant"  # reflect was tried first and did not match
                break
        if found is None:
            raise Mistake(f"an output image is not a crop (shifted by at most {pad} pixels), flipped or not, "
                          "of its input image: did you mix images of the batch, or change pixel values?")
        offsets.append(found % n)
        flips.append(found >= n)
    if zero_border:
        raise Mistake("the pixels shifted in at the border are zeros: the course pads by reflection, so "
                      "no black frame appears.")
    if len(set(offsets)) == 1:
        raise Mistake("every image has the same shift: draw one shift per image, not one per batch.")
    if not any(flips):
        raise Mistake("no image was flipped: mirror about half of them, left to right.")
    if all(flips):
        raise Mistake("every image was flipped: mirror only about half of them.")
    if max(abs(o // (2 * pad + 1) - pad) for o in offsets) < pad and max(
            abs(o % (2 * pad + 1) - pad) for o in offsets) < pad:
        raise Mistake(f"no image moved by the full {pad} pixels: shifts should range over -{pad}..{pad}.")
    return (f"each image shifted by its own offset in -{pad}..{pad}, about half of them flipped, "
            "reflected borders.")
