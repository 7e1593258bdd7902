"""Checks for the chapters on what the model looks at: Grad-CAM, shortcuts and adversarial robustness."""

from __future__ import annotations

import numpy as np

from . import report

__all__ = ["check_channel_weights", "check_energy_inside", "check_budget_in_model_units", "check_projection"]


def check_channel_weights(answer, grads) -> bool:
    """Grad-CAM's channel weights: the gradient (B, h, w, k) averaged over the map's positions -> (B, k)."""
    expected = np.asarray(grads).mean(axis=(1, 2))
    ok = np.shape(answer) == expected.shape and np.allclose(answer, expected, atol=1e-5)
    return report(ok, f"one weight per image and channel, shape {expected.shape}: the gradient averaged "
                  "over all positions of the map (global average pooling of the gradient).",
                  "average over the two spatial axes only (axis=(1, 2)); keep the batch and channel axes.")


def check_energy_inside(answer, heatmap, mask) -> bool:
    """Share of one heatmap's total mass that lies on the object mask."""
    heatmap, mask = np.asarray(heatmap, float), np.asarray(mask, bool)
    expected = float((heatmap * mask).sum() / heatmap.sum())
    return report(np.isclose(answer, expected, atol=1e-4), f"{expected:.3f} of the heatmap's mass is on the "
                  "object; a uniform heatmap would score the object's share of the image.",
                  "sum the heatmap over the object's pixels and divide by the sum over all pixels.")


def check_budget_in_model_units(answer, std, epsilon: float = 8 / 255) -> bool:
    """The L-infinity budget per channel after standardization: epsilon / std (the mean cancels)."""
    expected = epsilon / np.asarray(std, float)
    ok = np.shape(answer) == expected.shape and np.allclose(answer, expected, rtol=1e-4)
    return report(ok, f"{np.round(expected, 4).tolist()}: standardizing divides every difference by the "
                  "channel's std, so the same pixel budget is larger in the model's units.",
                  "a difference of epsilon in pixels becomes (x + epsilon - mean) / std - (x - mean) / std.")


def check_projection(answer, x_adv, x, epsilon: float = 8 / 255) -> bool:
    """PGD's projection: into the epsilon-box around x, then into the valid range [0, 1]."""
    expected = np.clip(np.clip(x_adv, x - epsilon, x + epsilon), 0.0, 1.0)
    ok = np.shape(answer) == expected.shape and np.allclose(answer, expected, atol=1e-6)
    return report(ok, "every pixel within epsilon of the original and inside [0, 1].",
                  "clip x_adv to [x - epsilon, x + epsilon] first, then to [0, 1].")
