"""Checks for the training chapters: baseline CNN, residual networks and attention."""

from __future__ import annotations

from . import report

__all__ = ["check_conv_params", "check_output_size", "check_se_params", "check_resnet_depth"]


def check_conv_params(answer, kernel_size: int = 3, c_in: int = 32, c_out: int = 64) -> bool:
    """Parameters of Conv2D(c_out, kernel_size) on c_in input channels, with bias."""
    expected = kernel_size * kernel_size * c_in * c_out + c_out
    return report(answer == expected, f"{expected:,} parameters: one {kernel_size}x{kernel_size}x{c_in} "
                  f"kernel plus a bias for each of the {c_out} filters.",
                  "each filter sees every input channel through a kernel_size x kernel_size window, "
                  "and each filter has one bias.")


def check_output_size(answer, size: int = 32, kernel_size: int = 5, stride: int = 1,
                      padding: str = "valid") -> bool:
    """Spatial size after a convolution (or pooling) layer on a size x size input."""
    expected = -(-size // stride) if padding == "same" else (size - kernel_size) // stride + 1
    return report(answer == expected, f"{expected}: a {padding} {kernel_size}x{kernel_size} window with "
                  f"stride {stride} fits {expected} times across {size} pixels.",
                  "with 'valid' padding a window of size k fits (size - k) // stride + 1 times.")


def check_se_params(answer, channels: int = 64, reduction: int = 8) -> bool:
    """Parameters one squeeze-and-excitation block adds on `channels` channels."""
    hidden = channels // reduction
    expected = channels * hidden + hidden + hidden * channels + channels
    return report(answer == expected, f"{expected:,}: two dense layers, {channels}->{hidden}->{channels}, "
                  "with biases. Small next to a 3x3 convolution on the same channels.",
                  "the block is two Dense layers (squeeze to channels // reduction, expand back), "
                  "each with a bias; pooling and multiplying have no parameters.")


def check_resnet_depth(answer, blocks_per_stage: int = 9) -> bool:
    """Depth of a CIFAR ResNet with `blocks_per_stage` basic blocks in each of its three stages."""
    expected = 6 * blocks_per_stage + 2
    return report(answer == expected, f"ResNet-{expected}: 3 stages x {blocks_per_stage} blocks x 2 "
                  "convolutions, plus the stem convolution and the classifier.",
                  "count weighted layers: each basic block has two 3x3 convolutions; add the first "
                  "convolution and the final dense layer (shortcut projections are not counted).")
