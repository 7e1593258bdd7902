"""Checks for the lightweighting (09) and deployment (10) chapters."""

from __future__ import annotations

import numpy as np

from . import report

__all__ = ["check_separable_macs", "check_cost_ratio", "check_preprocess"]


def check_separable_macs(answer, height: int = 16, width: int = 16, c_in: int = 64, c_out: int = 128,
                         kernel: int = 3) -> bool:
    """MACs of one SeparableConv2D ('same' padding, stride 1) on a height x width x c_in map."""
    depthwise = height * width * kernel * kernel * c_in
    expected = depthwise + height * width * c_in * c_out
    ok = answer is not None and int(answer) == expected
    hint = ("count the two parts: the depthwise conv does k*k multiply-adds per input channel per "
            "position; the 1x1 pointwise conv does c_in per output channel per position.")
    if answer is not None and int(answer) == height * width * kernel * kernel * c_in * c_out:
        hint = "that is the cost of a full Conv2D; the separable one splits it into two cheap steps."
    return report(ok, f"{expected:,} MACs.", hint)


def check_cost_ratio(answer, c_out: int = 128, kernel: int = 3) -> bool:
    """Cost of a separable conv as a fraction of a full conv: 1/c_out + 1/k^2."""
    expected = 1 / c_out + 1 / kernel**2
    ok = answer is not None and abs(float(answer) - expected) < 1e-3
    return report(ok, f"{expected:.4f}: about 1/k^2 once c_out is large.",
                  "divide the separable count (depthwise + pointwise) by H*W*k*k*c_in*c_out and simplify.")


def check_preprocess(prepare, predictor, images=None) -> bool:
    """`prepare(png_bytes) -> (32, 32, 3) float32` must match the server's own preprocessing."""
    from ..serve import encode_png

    rng = np.random.default_rng(0)
    images = images if images is not None else [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                                                for _ in range(3)]
    try:
        ok = all(np.allclose(np.asarray(prepare(encode_png(im)), np.float32),
                             predictor.prepare(encode_png(im))[0], atol=1e-5) for im in images)
    except Exception as err:  # a learner's function may raise anything
        print(f"Your function raised {err.__class__.__name__}: {err}")
        ok = False
    return report(ok, "your preprocessing matches the server's.",
                  "decode with PIL, divide by 255, then subtract the mean and divide by the std stored in "
                  "the preprocessing JSON, per channel.")
