"""Checks for the lightweighting (09) and deployment (10) chapters."""

from __future__ import annotations

import numpy as np

from .checking import Mistake, as_array, call, compare, exercise, verdict

__all__ = ["check_separable_macs", "check_cost_ratio", "check_int8_quantize", "check_preprocess"]


@exercise("09", "MACs of a separable conv", "drill", "your count in `answer`")
def check_separable_macs(answer, height: int = 16, width: int = 16, c_in: int = 64, c_out: int = 128,
                         kernel: int = 3) -> str:
    """MACs of one SeparableConv2D ('same' padding, stride 1) on a height x width x c_in map."""
    depthwise = height * width * kernel * kernel * c_in
    expected = depthwise + height * width * c_in * c_out
    ok = answer is not None and int(answer) == expected
    hint = ("count the two steps separately, the depthwise convolution and the 1x1 pointwise one, "
            "each per output position, then add them.")
    if answer is not None and int(answer) == height * width * kernel * kernel * c_in * c_out:
        hint = "that is the cost of a full Conv2D; the separable one splits it into two cheap steps."
    return verdict(ok, f"{expected:,} MACs.", hint)


@exercise("09", "separable / full cost", "drill", "the fraction in `ratio`")
def check_cost_ratio(answer, c_out: int = 128, kernel: int = 3) -> str:
    """Cost of a separable conv as a fraction of a full conv: 1/c_out + 1/k^2."""
    expected = 1 / c_out + 1 / kernel**2
    ok = answer is not None and abs(float(answer) - expected) < 1e-3
    return verdict(ok, f"{expected:.4f}: about 1/k^2 once c_out is large.",
                  "divide the separable layer's count by the full convolution's, then cancel what the "
                  "two have in common.")


@exercise("09", "symmetric int8 quantization", "build",
          "`quantize_int8(x)` and `dequantize(q, scale)`")
def check_int8_quantize(quantize_fn, dequantize_fn=None) -> str:
    """`quantize_int8(x) -> (q, scale)`: symmetric per-tensor int8, q = round(x / scale) in [-127, 127]
    with scale = max|x| / 127; `dequantize(q, scale) -> q * scale`. The reference is TensorFlow's own
    fake quantization over [-max|x|, max|x|] with 8 bits and the narrow range."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, (64, 32)).astype(np.float32)
    x[0, 0] = -1.7  # the largest magnitude is negative: a max(x) instead of max|x| shows
    peak = float(np.abs(x).max())
    expected = tf.quantization.fake_quant_with_min_max_vars(x, -peak, peak, num_bits=8,
                                                            narrow_range=True).numpy()
    result = call(quantize_fn, x)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise Mistake("quantize_int8 should return two things, the integer tensor and its scale")
    q, scale = result
    scale = float(as_array(scale, "scale").reshape(-1)[0]) if np.size(scale) == 1 else scale
    if np.size(scale) != 1:
        raise Mistake("one scale for the whole tensor (per-tensor quantization), a single number")
    if not np.isclose(scale, peak / 127, rtol=1e-4):
        for name, value in [("(max(x) - min(x)) / 255, an asymmetric range", (x.max() - x.min()) / 255),
                            ("max|x| / 255: int8 holds -127..127, so max|x| maps to 127", peak / 255),
                            ("max(x) / 127: the largest magnitude may be negative", x.max() / 127),
                            ("max|x| / 128: the narrow range stops at 127", peak / 128)]:
            if np.isclose(scale, value, rtol=1e-4):
                raise Mistake(f"your scale is {name}.")
        raise Mistake(f"your scale is {scale:.4g} times max|x|: int8's largest value should stand for "
                      "the tensor's largest magnitude")
    q_arr = np.asarray(q)
    if q_arr.dtype != np.int8:
        raise Mistake(f"q has dtype {q_arr.dtype}: store it as int8 (that is where the 4x saving is)")
    if q_arr.shape != x.shape:
        raise Mistake(f"q has shape {q_arr.shape}, expected {x.shape}")
    q_ref = np.round(expected / scale).astype(np.int64)
    if q_arr.min() < -127:
        raise Mistake("q reaches -128: symmetric quantization uses -127..127 so that 0 is exactly 0")
    if not np.array_equal(q_arr.astype(np.int64), q_ref):
        if np.array_equal(q_arr.astype(np.int64), np.trunc(x / scale).astype(np.int64)):
            raise Mistake("you truncate x / scale towards zero: round to the nearest integer instead")
        if np.array_equal(q_arr.astype(np.int64), np.floor(x / scale).astype(np.int64)):
            raise Mistake("you round x / scale down: round to the nearest integer instead")
        raise Mistake(f"{(q_arr != q_ref).mean():.0%} of the integers differ from the reference's")
    back = call(dequantize_fn, q, scale)
    compare(back, expected, "dequantized tensor", atol=1e-6, variants=[
        ("you divide by the scale: dequantizing multiplies by it.", q_ref / scale)])
    error = float(np.abs(expected - x).max())
    return (f"q in int8, scale = max|x| / 127; the round trip is off by at most {error:.2g}, half a "
            "step.")


@exercise("10", "the server's preprocessing", "build", "`prepare(png_bytes)`")
def check_preprocess(prepare, predictor, images=None) -> str:
    """`prepare(png_bytes) -> (32, 32, 3) float32` must match the server's own preprocessing."""
    from ..serve import encode_png

    rng = np.random.default_rng(0)
    images = images if images is not None else [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                                                for _ in range(3)]
    for image in images:
        png = encode_png(image)
        got = as_array(call(prepare, png), "array")
        expected = np.asarray(predictor.prepare(png)[0], np.float64)
        raw = image / 255.0
        compare(got, expected, "array", atol=1e-5, variants=[
            ("your pixels are in [0, 255]: scale them to [0, 1] first.", image.astype(np.float64)),
            ("these are pixels in [0, 1], not yet standardized with the file's mean and std.", raw)])
    return "your preprocessing matches the server's."
