"""A deterministic, CIFAR-shaped stand-in that the package draws itself, for tests, CI and offline reading.

Ten classes of objects told apart by shape and texture, never by one colour: each object is drawn at a
random position, scale, small rotation and colour, on a random two-colour gradient background, with a
small distractor blob and pixel noise. A small CNN learns it well above chance in seconds, but not to 100%.

The object mask of every image is known (Grad-CAM chapters score heatmaps against it), and the background
can be tied to the class (the shortcut-learning chapter trains on that and tests on swapped backgrounds).
"""

from __future__ import annotations

import numpy as np

from .data import Splits

SHAPE_NAMES = (
    "disk", "square", "triangle", "ring", "plus",
    "striped disk", "checkered square", "diamond", "cross", "dotted bar",
)
# One background colour per class, used when the background is tied to the class.
CLASS_BACKGROUNDS = np.array([
    [0.35, 0.60, 0.90], [0.85, 0.30, 0.25], [0.30, 0.70, 0.35], [0.90, 0.80, 0.30], [0.60, 0.35, 0.75],
    [0.25, 0.75, 0.75], [0.95, 0.55, 0.20], [0.55, 0.55, 0.55], [0.90, 0.50, 0.70], [0.45, 0.30, 0.15],
])


def _shape_mask(label: int, u, v):
    """Object (and its texture's 'on' part) for one class, on rotated unit coordinates u, v."""
    disk = u**2 + v**2 <= 1.0
    square = np.maximum(abs(u), abs(v)) <= 0.8
    if label == 0:
        return disk, disk
    if label == 1:
        return square, square
    if label == 2:
        tri = (v <= 0.65) & (v >= -0.95 + 1.6 * abs(u))
        return tri, tri
    if label == 3:
        ring = (u**2 + v**2 <= 1.0) & (u**2 + v**2 >= 0.42)
        return ring, ring
    if label == 4:
        plus = ((abs(u) < 0.3) & (abs(v) < 1.0)) | ((abs(v) < 0.3) & (abs(u) < 1.0))
        return plus, plus
    if label == 5:
        return disk, disk & (np.sin(v * 9.0) > 0)
    if label == 6:
        checker = (np.floor(u * 2.5) + np.floor(v * 2.5)) % 2 == 0
        return square, square & checker
    if label == 7:
        diamond = abs(u) + abs(v) <= 1.0
        return diamond, diamond
    if label == 8:
        a, b = (u + v) / np.sqrt(2), (u - v) / np.sqrt(2)
        cross = ((abs(a) < 0.25) & (abs(b) < 1.0)) | ((abs(b) < 0.25) & (abs(a) < 1.0))
        return cross, cross
    bar = (abs(u) <= 1.0) & (abs(v) <= 0.45)
    return bar, bar & ((np.floor(u * 3.0) % 2) == 0)


def draw_synthetic(n: int, seed: int = 0, background_bias: float = 0.0, background_offset: int = 0):
    """Draw n images; return (x uint8 (n,32,32,3), y uint8 (n,), masks bool (n,32,32)).

    background_bias: probability that an image's background is its class colour
    (CLASS_BACKGROUNDS[(label + background_offset) % 10]) instead of a random one.
    """
    if not 0.0 <= background_bias <= 1.0:
        raise ValueError(f"background_bias must be in [0, 1], got {background_bias}.")
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10).astype(np.uint8)  # not arange(dtype=uint8): it wraps at 256
    rng.shuffle(y)
    grid = np.arange(32, dtype=np.float32) + 0.5
    gy, gx = np.meshgrid(grid, grid, indexing="ij")

    # Background: a gradient between two random colours, or the class colour.
    c0, c1 = rng.uniform(0, 1, (n, 3)), rng.uniform(0, 1, (n, 3))
    tied = rng.uniform(size=n) < background_bias
    tied_colour = CLASS_BACKGROUNDS[(y.astype(int) + background_offset) % 10]
    c0[tied] = tied_colour[tied]
    c1[tied] = np.clip(tied_colour[tied] + rng.normal(0, 0.05, (tied.sum(), 3)), 0, 1)
    angle = rng.uniform(0, 2 * np.pi, n)
    ramp = (np.cos(angle)[:, None, None] * (gx - 16) + np.sin(angle)[:, None, None] * (gy - 16)) / 45 + 0.5
    ramp = ramp.astype(np.float32)[..., None]  # float32 from here on: half the memory traffic of float64
    c0, c1 = c0.astype(np.float32), c1.astype(np.float32)
    images = c0[:, None, None, :] + (c1 - c0)[:, None, None, :] * ramp

    # Object: position, scale, small rotation, a colour that stands out from the background.
    cx, cy = rng.uniform(10, 22, n), rng.uniform(10, 22, n)
    scale = rng.uniform(6.0, 10.5, n)
    theta = rng.uniform(-0.35, 0.35, n)
    cx, cy, scale, theta = (v.astype(np.float32) for v in (cx, cy, scale, theta))
    colour = rng.uniform(0, 1, (n, 3))
    too_close = np.abs(colour - (c0 + c1) / 2).sum(axis=1) < 0.6
    colour[too_close] = 1.0 - colour[too_close]
    shade = colour * rng.uniform(0.35, 0.6, (n, 1))  # texture's 'off' colour: a darker shade

    masks = np.zeros((n, 32, 32), dtype=bool)
    for label in range(10):
        idx = np.flatnonzero(y == label)
        if not len(idx):
            continue
        dx = (gx[None] - cx[idx, None, None]) / scale[idx, None, None]
        dy = (gy[None] - cy[idx, None, None]) / scale[idx, None, None]
        cos, sin = np.cos(theta[idx])[:, None, None], np.sin(theta[idx])[:, None, None]
        u, v = cos * dx + sin * dy, -sin * dx + cos * dy
        shape, on = _shape_mask(label, u, v)
        masks[idx] = shape
        fill = np.where(on[..., None], colour[idx, None, None, :], shade[idx, None, None, :])
        images[idx] = np.where(shape[..., None], fill.astype(np.float32), images[idx])

    # Distractor: a small blob of a random colour away from the object, then pixel noise.
    bx, by = rng.uniform(2, 30, n), rng.uniform(2, 30, n)
    blob = (gx[None] - bx[:, None, None]) ** 2 + (gy[None] - by[:, None, None]) ** 2 <= 2.5**2
    blob &= ~masks
    images = np.where(blob[..., None], rng.uniform(0, 1, (n, 1, 1, 3)).astype(np.float32), images)
    images += rng.standard_normal(images.shape, dtype=np.float32) * np.float32(0.06)
    np.clip(images, 0, 1, out=images)
    x = (images * 255 + 0.5).astype(np.uint8)
    return x, y, masks


def make_synthetic(n_train: int = 10_000, n_test: int = 2_000, seed: int = 0, masks: bool = False,
                   background_bias: float = 0.0, test_background_offset: int = 0) -> Splits:
    """The stand-in as `Splits`; with masks=True, `.masks` holds (train_masks, test_masks).

    background_bias ties backgrounds to classes in both splits; test_background_offset != 0 gives the
    test split another class's background (the swapped-background test of the shortcut chapter).
    """
    x_train, y_train, m_train = draw_synthetic(n_train, seed, background_bias)
    x_test, y_test, m_test = draw_synthetic(n_test, seed + 1, background_bias, test_background_offset)
    splits = Splits((x_train, y_train), (x_test, y_test), source=f"synthetic (seed={seed})",
                    class_names=SHAPE_NAMES)
    if masks:
        splits.masks = (m_train, m_test)
    return splits
