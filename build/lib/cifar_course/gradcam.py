"""Grad-CAM (Selvaraju et al. 2017): where in the image the evidence for a class lies, and a measured
localization score on the synthetic stand-in, whose object masks are known.

The idea (chapter "Grad-CAM"): take the last convolutional feature map A (h, w, k) and the gradient of
the class score y_c (before the softmax) with respect to it; average the gradient over the map to get one
weight per channel, sum the channels with those weights, keep the positive part, upsample to the image.

`gradcam` works on any Keras model with a convolution: it finds the last spatial feature map itself, also
inside nested models (a backbone model used as a layer), and computes a whole batch at once.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf
from tensorflow import keras


# ------------------------------------------------------------------------------------------------
# Finding the feature map


def _is_spatial(layer) -> bool:
    """A layer whose output is one (batch, h, w, channels) map with h, w > 1."""
    try:
        shape = layer.output_shape
    except (AttributeError, RuntimeError):  # never called, or several calls with different shapes
        return False
    if not isinstance(shape, tuple) or len(shape) != 4:
        return False
    return (shape[1] or 2) > 1 and (shape[2] or 2) > 1


def _has_conv(layer) -> bool:
    if isinstance(layer, keras.Model):
        return any(_has_conv(sub) for sub in layer.layers)
    return "Conv" in type(layer).__name__


def find_last_conv_layer(model) -> list:
    """The path [submodel, ..., layer] to the last spatial feature map at or after the last convolution.

    That is the map Grad-CAM needs: its channels are the highest-level features that still know where they
    are. With conv-BN-ReLU blocks it is the last ReLU; nested models (a backbone used as a layer) are
    searched inside.
    """
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model) and _has_conv(layer):
            return [layer, *find_last_conv_layer(layer)]
        if _is_spatial(layer) and not isinstance(layer, keras.layers.InputLayer):
            # Only accept it if a convolution comes at or before it (a spatial map made by convs).
            index = model.layers.index(layer)
            if any(_has_conv(earlier) for earlier in model.layers[: index + 1]):
                return [layer]
    raise ValueError(f"Model {model.name!r} has no convolutional feature map: Grad-CAM needs a layer with "
                     "a (batch, height, width, channels) output after a convolution. Pass layer=... to "
                     "choose one yourself.")


# ------------------------------------------------------------------------------------------------
# Capturing the map and the class score during one forward pass


@contextlib.contextmanager
def _capture_output(layer, store: dict, tape):
    """While active, every call of `layer` records its output in store["A"] and makes the tape watch it.

    Patching the instance's call works for plain, functional and nested models alike (building a second
    model that outputs the inner map fails for nested models: their inner layers are not connected to the
    outer inputs).
    """
    original = layer.call

    def call(*args, **kwargs):
        out = original(*args, **kwargs)
        tape.watch(out)
        store["A"] = out
        return out

    layer.call = call
    try:
        yield
    finally:
        del layer.call  # the class's own method shows through again


def _last_leaf(model):
    layer = model.layers[-1]
    return _last_leaf(layer) if isinstance(layer, keras.Model) else layer


@contextlib.contextmanager
def class_scores(model):
    """While active, the model returns class scores before the softmax (the paper's y_c).

    A softmax score saturates: for a confident prediction its gradient is nearly zero everywhere.
    """
    last = _last_leaf(model)
    activation = getattr(last, "activation", None)
    is_softmax = activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"
    if is_softmax:
        last.activation = keras.activations.linear
    try:
        yield
    finally:
        if is_softmax:
            last.activation = activation


# ------------------------------------------------------------------------------------------------
# Grad-CAM


def gradcam_from_activations(feature_map, grads):
    """The Grad-CAM formula: (B, h, w, k) map and d y_c / d map -> (B, h, w) heatmap, before upsampling."""
    weights = tf.reduce_mean(grads, axis=(1, 2))  # (B, k): how much each channel matters for class c
    cam = tf.einsum("bhwk,bk->bhw", feature_map, weights)  # weighted sum of the channels
    return tf.nn.relu(cam)  # only evidence *for* the class


def gradcam(model, images, class_index=None, layer=None, size=None, batch_size: int = 256):
    """Grad-CAM heatmaps for a batch: float32 (N, H, W) in [0, 1], each image scaled to a maximum of 1.

    images: what the model takes (already normalized), (N, H, W, C). class_index: None (the predicted
    class), an int (the same class for all) or one class per image. layer: a layer (or a path [submodel,
    layer]) to use instead of the last convolutional map. size: output (H, W); default the input's.
    Returns (heatmaps, class_index used).
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (N, H, W, C), got shape {images.shape}; "
                         "add a batch axis with x[None].")
    path = find_last_conv_layer(model) if layer is None else (layer if isinstance(layer, list) else [layer])
    target = path[-1]
    size = tuple(size or images.shape[1:3])
    if class_index is not None:
        class_index = np.broadcast_to(np.asarray(class_index, np.int64), (len(images),))
    maps, used = [], []
    with class_scores(model):
        for start in range(0, len(images), batch_size):
            batch = tf.constant(images[start:start + batch_size])
            store = {}
            with tf.GradientTape() as tape, _capture_output(target, store, tape):
                scores = model(batch, training=False)  # (B, classes), before the softmax
                chosen = (tf.argmax(scores, axis=-1) if class_index is None
                          else tf.constant(class_index[start:start + batch_size]))
                # Summing over the batch is safe: each image's score depends on its own map only.
                score = tf.reduce_sum(tf.gather(scores, chosen, axis=1, batch_dims=1))
            grads = tape.gradient(score, store["A"])
            cam = gradcam_from_activations(tf.cast(store["A"], tf.float32), tf.cast(grads, tf.float32))
            maps.append(_upsample_and_scale(cam, size))
            used.append(chosen.numpy())
    return np.concatenate(maps), np.concatenate(used)


def _upsample_and_scale(cam, size):
    cam = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]  # (B, H, W)
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return (cam / tf.maximum(peak, 1e-12)).numpy()  # all-zero maps stay zero


# ------------------------------------------------------------------------------------------------
# Localization score against ground-truth masks


def random_heatmaps(n: int, size=(32, 32), grid: int = 8, seed: int = 0):
    """The chance baseline: uniform noise on a grid x grid map (Grad-CAM's resolution), upsampled."""
    rng = np.random.default_rng(seed)
    noise = tf.constant(rng.uniform(size=(n, grid, grid)).astype(np.float32))
    return _upsample_and_scale(noise, size)


def center_heatmaps(n: int, size=(32, 32), sigma: float = 0.25):
    """A stronger baseline: a Gaussian blob in the image centre (objects tend to be near the middle)."""
    h, w = size
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / h - 0.5, (np.arange(w) + 0.5) / w - 0.5, indexing="ij")
    blob = np.exp(-(xx**2 + yy**2) / (2 * sigma**2)).astype(np.float32)
    return np.broadcast_to(blob / blob.max(), (n, h, w)).copy()


def localization_scores(heatmaps, masks) -> dict:
    """How well heatmaps (N, H, W) point at the objects in boolean masks (N, H, W).

    energy_inside: share of the heatmap's total mass that lies on the object (mean over images; an
        all-zero heatmap counts 0). pointing_game: share of images whose hottest pixel is on the object.
    object_area: the mean share of the image the object covers, what a uniform guess scores on both.
    """
    heatmaps, masks = np.asarray(heatmaps, np.float64), np.asarray(masks, bool)
    if heatmaps.shape != masks.shape:
        raise ValueError(f"heatmaps {heatmaps.shape} and masks {masks.shape} must have the same shape; "
                         "make heatmaps at the image size (gradcam(..., size=masks.shape[1:])).")
    total = heatmaps.sum(axis=(1, 2))
    inside = (heatmaps * masks).sum(axis=(1, 2))
    energy = np.where(total > 0, inside / np.maximum(total, 1e-12), 0.0)
    flat = heatmaps.reshape(len(heatmaps), -1)
    hit = masks.reshape(len(masks), -1)[np.arange(len(flat)), flat.argmax(axis=1)] & (total > 0)
    return {"energy_inside": float(energy.mean()), "pointing_game": float(hit.mean()),
            "object_area": float(masks.mean())}


def localization_report(model, images, masks, class_index=None, seed: int = 0) -> list[dict]:
    """Rows of localization scores: Grad-CAM of `model` beside the random and centre baselines.

    images: the model's (normalized) inputs; masks: boolean object masks of the same images.
    """
    cams, _ = gradcam(model, images, class_index=class_index, size=masks.shape[1:])
    grid = find_last_conv_layer(model)[-1].output_shape[1]
    rows = [("Grad-CAM", cams), ("random heatmap", random_heatmaps(len(images), masks.shape[1:], grid, seed)),
            ("centre blob", center_heatmaps(len(images), masks.shape[1:]))]
    return [{"heatmap": name, **localization_scores(h, masks)} for name, h in rows]


# ------------------------------------------------------------------------------------------------
# Figures


def overlay(image, heatmap, alpha: float = 0.45, cmap: str = "jet"):
    """An RGB float image in [0, 1]: the heatmap's colours blended over the image (uint8 or [0, 1])."""
    import matplotlib

    image = np.asarray(image, np.float32)
    image = image / 255.0 if image.max() > 1.0 else image
    colours = matplotlib.colormaps[cmap](np.asarray(heatmap))[..., :3]
    return np.clip((1 - alpha) * image + alpha * colours, 0.0, 1.0)


def plot_gradcam(images, heatmaps, titles=None, ncols: int = 8, alpha: float = 0.45, axes=None):
    """A grid of heatmaps over their images (uint8 or [0, 1]); titles under each (e.g. 'cat -> dog')."""
    import matplotlib.pyplot as plt

    n = len(images)
    if axes is None:
        nrows = -(-n // ncols)
        _, axes = plt.subplots(nrows, min(n, ncols), figsize=(1.6 * min(n, ncols), 1.8 * nrows),
                               squeeze=False)
    axes = np.ravel(axes)
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < n:
            ax.imshow(overlay(images[i], heatmaps[i], alpha), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    return axes
