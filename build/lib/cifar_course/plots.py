"""Figures the chapters show: samples, class balance, augmentations (more arrive with later chapters).

Every function returns the matplotlib Figure, so a chapter can show it, save it or test it.
"""

from __future__ import annotations

import numpy as np


def _figure(rows: int, cols: int, cell: float = 1.1):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def plot_image_grid(x, y, class_names, per_class: int = 8, seed: int = 0):
    """A grid with one row per class and `per_class` random examples of it, class name on the left."""
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels.")
    rng = np.random.default_rng(seed)
    fig, axes = _figure(len(class_names), per_class)
    for label, name in enumerate(class_names):
        chosen = rng.permutation(np.flatnonzero(y == label))[:per_class]
        for col, ax in enumerate(axes[label]):
            if col < len(chosen):
                ax.imshow(x[chosen[col]], interpolation="nearest")
            else:
                ax.axis("off")
        axes[label, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.2)
    return fig


def plot_class_balance(y_train, y_test, class_names):
    """Horizontal bars of images per class in each split (CIFAR-10: 5,000 and 1,000 each)."""
    import matplotlib.pyplot as plt

    n = len(class_names)
    counts = {split: np.bincount(np.asarray(labels).reshape(-1), minlength=n)
              for split, labels in (("train", y_train), ("test", y_test))}
    fig, ax = plt.subplots(figsize=(6, 0.3 * n + 1))
    positions = np.arange(n)
    ax.barh(positions - 0.2, counts["train"], height=0.4, label="train")
    ax.barh(positions + 0.2, counts["test"], height=0.4, label="test")
    ax.set_yticks(positions, class_names)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_augmentations(image, recipes: dict, n: int = 6, seed: int = 0):
    """One uint8 image, then `n` augmented versions per recipe (one row per recipe name).

    recipes maps a row title to a function of a float batch in [0, 255] (e.g. cc.pad_crop_flip).
    """
    import tensorflow as tf

    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"Expected one image (H, W, C), got shape {image.shape}.")
    tf.random.set_seed(seed)
    fig, axes = _figure(len(recipes), n + 1, cell=1.3)
    batch = tf.repeat(tf.cast(image[None], tf.float32), n, axis=0)
    for row, (title, augment) in enumerate(recipes.items()):
        out = np.clip(np.asarray(augment(batch)), 0, 255).astype(np.uint8)
        axes[row, 0].imshow(image, interpolation="nearest")
        axes[row, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
        for col in range(n):
            axes[row, col + 1].imshow(out[col], interpolation="nearest")
    axes[0, 0].set_title("original", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.2)
    return fig


# ------------------------------------------------------------------------------------------------
# Evaluation figures (the evaluation chapter): confusion matrix, reliability diagram, mistakes


def plot_confusion_matrix(matrix, class_names, normalize: bool = True, ax=None):
    """Heatmap of a confusion matrix (`cc.confusion`); normalize=True shows each row as shares of the true class."""
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, np.float64)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in ticks:
        for j in ticks:
            value = matrix[i, j]
            ax.text(j, i, f"{value:.2f}" if normalize else f"{int(value)}", ha="center", va="center",
                    fontsize=7, color="white" if value > 0.6 * matrix.max() else "black")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    return ax.figure


def plot_reliability(bins, ece: float | None = None, ax=None):
    """Reliability diagram from `calibration_bins`: accuracy per confidence bin against the diagonal.

    Bars below the diagonal mean over-confidence, above it under-confidence.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    full = [b for b in bins if b["count"]]
    width = bins[0]["upper"] - bins[0]["lower"]
    ax.bar([b["lower"] for b in full], [b["accuracy"] for b in full], width=width, align="edge",
           edgecolor="black", label="accuracy")
    ax.bar([b["lower"] for b in full], [b["confidence"] - b["accuracy"] for b in full], width=width,
           bottom=[b["accuracy"] for b in full], align="edge", color="red", alpha=0.3,
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability" + (f", ECE {ece:.3f}" if ece is not None else ""))
    ax.legend(loc="upper left", fontsize="small")
    return ax.figure


def plot_mistakes(images, probs, labels, indices, class_names, columns: int = 8):
    """A gallery of the given samples (e.g. `worst_mistakes`): true class, prediction and confidence."""
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(indices) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), indices):
        ax.imshow(images[i])
        pred = int(np.argmax(probs[i]))
        ax.set_title(f"{class_names[labels[i]]}\n-> {class_names[pred]} {probs[i][pred]:.0%}", fontsize=8)
    fig.tight_layout()
    return fig
