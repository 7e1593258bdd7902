"""Checks for the training chapters: baseline CNN, residual networks and attention."""

from __future__ import annotations

import numpy as np

from .checking import Mistake, call, compare, exercise, verdict

__all__ = ["check_conv_params", "check_output_size", "check_se_params", "check_resnet_depth",
           "check_conv_block", "check_gap_head", "check_residual_block", "check_se_block"]


@exercise("02", "parameters of a convolution", "drill", "the number in `answer`")
def check_conv_params(answer, kernel_size: int = 3, c_in: int = 32, c_out: int = 64) -> str:
    """Parameters of Conv2D(c_out, kernel_size) on c_in input channels, with bias."""
    expected = kernel_size * kernel_size * c_in * c_out + c_out
    return verdict(answer == expected, f"{expected:,} parameters: one {kernel_size}x{kernel_size}x{c_in} "
                  f"kernel plus a bias for each of the {c_out} filters.",
                  "each filter sees every input channel through a kernel_size x kernel_size window, "
                  "and each filter has one bias.")


@exercise("02", "output size of a convolution", "drill", "the number in `answer`")
def check_output_size(answer, size: int = 32, kernel_size: int = 5, stride: int = 1,
                      padding: str = "valid") -> str:
    """Spatial size after a convolution (or pooling) layer on a size x size input."""
    expected = -(-size // stride) if padding == "same" else (size - kernel_size) // stride + 1
    return verdict(answer == expected, f"{expected}: a {padding} {kernel_size}x{kernel_size} window with "
                  f"stride {stride} fits {expected} times across {size} pixels.",
                  "with 'valid' padding the window never overhangs the image: count the positions its "
                   "left edge can take, stepping by the stride.")


@exercise("03", "parameters of an SE block", "drill", "the number in `answer`")
def check_se_params(answer, channels: int = 64, reduction: int = 8) -> str:
    """Parameters one squeeze-and-excitation block adds on `channels` channels."""
    hidden = channels // reduction
    expected = channels * hidden + hidden + hidden * channels + channels
    return verdict(answer == expected, f"{expected:,}: two dense layers, {channels}->{hidden}->{channels}, "
                  "with biases. Small next to a 3x3 convolution on the same channels.",
                  "the block is two Dense layers (squeeze to channels // reduction, expand back), "
                  "each with a bias; pooling and multiplying have no parameters.")


@exercise("03", "depth of a ResNet", "drill", "the number in `answer`")
def check_resnet_depth(answer, blocks_per_stage: int = 9) -> str:
    """Depth of a CIFAR ResNet with `blocks_per_stage` basic blocks in each of its three stages."""
    expected = 6 * blocks_per_stage + 2
    return verdict(answer == expected, f"ResNet-{expected}: 3 stages x {blocks_per_stage} blocks x 2 "
                  "convolutions, plus the stem convolution and the classifier.",
                  "the depth counts the layers with weights on the main path (shortcut projections "
                  "do not count): what is inside a block, and what comes before and after the stages?")


# ------------------------------------------------------------------------------------------------
# Build exercises: a block the learner writes, run beside the course's on the same weights.


def _model_of(block_fn, input_shape, *args, **kwargs):
    """A Keras model of the learner's block on a symbolic input, or a Mistake saying why it fails."""
    from tensorflow import keras

    inputs = keras.Input(input_shape)
    out = call(block_fn, inputs, *args, **kwargs)
    try:
        return keras.Model(inputs, out)
    except Exception as err:  # not a Keras tensor, or not connected to the input
        raise Mistake(f"could not build a model from your block ({type(err).__name__}): return the "
                      "output tensor of your last layer, computed from the input x") from None


def _share_weights(model, reference):
    """Give `model` the reference's weights, matching tensors by shape in creation order."""
    source = list(reference.get_weights())
    weights = []
    for w in model.get_weights():
        index = next((i for i, r in enumerate(source) if r.shape == w.shape), None)
        if index is None:
            raise Mistake(f"your block has a weight of shape {w.shape} that the reference does not have")
        weights.append(source.pop(index))
    model.set_weights(weights)


def _check_block(block_fn, reference_fn, input_shape, what, variants=(), args=(), kwargs=None,
                 training=True):
    """Compare output shape, parameter count and, on shared weights, the outputs on a random batch."""
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    kwargs = kwargs or {}
    keras.utils.set_random_seed(0)
    model = _model_of(block_fn, input_shape, *args, **kwargs)
    reference = _model_of(reference_fn, input_shape, *args, **kwargs)
    if model.output_shape != reference.output_shape:
        raise Mistake(f"your {what} outputs shape {model.output_shape[1:]} (without the batch axis) on an "
                      f"input of shape {input_shape}, expected {reference.output_shape[1:]}")
    n, n_ref = model.count_params(), reference.count_params()
    if n != n_ref:
        biases = sum(int(np.prod(w.shape)) for layer in model.layers if isinstance(layer, layers.Conv2D)
                     and layer.use_bias for w in layer.weights[1:2])
        extra = (": the convolutions' biases are redundant before BatchNorm, which adds its own shift"
                 if biases and n - n_ref == biases else "")
        raise Mistake(f"your {what} has {n:,} parameters, the reference {n_ref:,} ({n - n_ref:+,}){extra}")
    _share_weights(model, reference)
    x = tf.random.stateless_normal((4, *input_shape), [1, 2])
    out, expected = model(x, training=training).numpy(), reference(x, training=training).numpy()
    tried = []
    for message, variant_fn in variants:
        variant = _model_of(variant_fn, input_shape, *args, **kwargs)
        if variant.count_params() == n_ref:
            _share_weights(variant, reference)
            tried.append((message, variant(x, training=training).numpy()))
    compare(out, expected, f"{what}'s output", atol=1e-4, variants=tried)


@exercise("02", "a conv-BN-ReLU block", "build", "`conv_block(x, filters)`")
def check_conv_block(block_fn) -> str:
    """`conv_block(x, filters)`: 3x3 convolution ('same' padding, no bias), BatchNorm, ReLU: the unit
    `cc.build_small_cnn` stacks."""
    from tensorflow.keras import layers

    from ..models import conv_bn_relu

    def relu_then_bn(x, filters):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        return layers.BatchNormalization()(layers.ReLU()(x))

    _check_block(block_fn, conv_bn_relu, (8, 8, 3), "block", args=(16,),
                 variants=[("ReLU comes before BatchNorm in your block: normalize first, then ReLU.",
                            relu_then_bn)])
    _check_block(block_fn, conv_bn_relu, (6, 6, 16), "block", args=(8,))
    return ("conv without bias (BatchNorm's shift replaces it), BatchNorm, ReLU; 'same' padding keeps "
            "the map's size.")


def _gap_head_reference(x, num_classes):
    from tensorflow.keras import layers

    from ..models import _head

    return _head(layers.GlobalAveragePooling2D()(x), num_classes, logits=False)


@exercise("02", "the GAP head", "build", "`gap_head(x, num_classes)`")
def check_gap_head(head_fn) -> str:
    """`gap_head(x, num_classes)`: global average pooling of a (h, w, c) map, then a softmax Dense layer."""
    from tensorflow.keras import layers

    def max_head(x, num_classes):
        return layers.Dense(num_classes, activation="softmax")(layers.GlobalMaxPooling2D()(x))

    def no_softmax(x, num_classes):
        return layers.Dense(num_classes)(layers.GlobalAveragePooling2D()(x))

    variants = [("you pool the maximum of each channel, not its average.", max_head),
                ("your head outputs scores, not probabilities: the rows do not sum to 1.", no_softmax)]
    for shape in ((4, 4, 16), (8, 8, 16)):  # the head's size must not depend on the map's
        try:
            _check_block(head_fn, _gap_head_reference, shape, "head", args=(10,), variants=variants)
        except Mistake as mistake:
            if "parameters" in str(mistake) and f"{shape[0] * shape[1] * 16 * 10 + 10:,} param" in str(
                    mistake):
                raise Mistake(f"{mistake}: your head grows with the map's size ({shape[0]}x{shape[1]} "
                              "here), as a flattening head does; an averaging head does not") from None
            raise
    return "one average per channel, whatever the map's size, then a softmax over the classes."


@exercise("03", "a residual block", "build", "`residual_block(x, filters, strides=1)`")
def check_residual_block(block_fn) -> str:
    """`residual_block(x, filters, strides=1)`: the post-activation basic block, conv-BN-ReLU, conv-BN,
    plus the shortcut (a 1x1 conv and BatchNorm when the shape changes), then ReLU."""
    from tensorflow.keras import layers

    from ..models import residual_block

    def reference(x, filters, strides=1):
        return residual_block(x, filters, strides=strides)

    def plain(x, filters, strides=1):
        return residual_block(x, filters, strides=strides, residual=False)

    def relu_before_add(x, filters, strides=1):
        y = residual_block(x, filters, strides=strides, residual=False)
        return layers.ReLU()(layers.Add()([y, x]))

    _check_block(block_fn, reference, (8, 8, 8), "block", args=(8,), variants=[
        ("your block ignores its input's shortcut: add the input to the branch's output.", plain),
        ("the ReLU comes before the addition: add the shortcut first, then apply ReLU.",
         relu_before_add)])
    try:
        _check_block(block_fn, reference, (8, 8, 8), "block", args=(16,), kwargs={"strides": 2})
    except Mistake as mistake:
        extra = ("; where the shape changes, the shortcut must change it too"
                 if "incompatible shapes" in str(mistake) else "")
        raise Mistake(f"with strides=2 and twice the filters: {mistake}{extra}") from None
    return ("identity shortcut where the shape is kept, a 1x1 projection where it changes; ReLU after "
            "the addition.")


@exercise("03", "an SE block", "build", "`se_block(x, reduction=8)`")
def check_se_block(block_fn) -> str:
    """`se_block(x, reduction=8)`: squeeze (global average), excite (Dense ReLU to channels // reduction,
    Dense sigmoid back), scale the input's channels."""
    from tensorflow.keras import layers

    from ..models import se_block

    def reference(x, reduction=8):
        return se_block(x, reduction=reduction)

    def no_sigmoid(x, reduction=8):
        channels = x.shape[-1]
        s = layers.GlobalAveragePooling2D(keepdims=True)(x)
        s = layers.Dense(channels // reduction, activation="relu")(s)
        return layers.Multiply()([x, layers.Dense(channels)(s)])

    def per_position(x, reduction=8):
        channels = x.shape[-1]
        s = layers.Dense(channels // reduction, activation="relu")(x)
        return layers.Multiply()([x, layers.Dense(channels, activation="sigmoid")(s)])

    try:
        _check_block(block_fn, reference, (6, 6, 32), "block", variants=[
            ("the channel weights are not squashed into (0, 1): the excitation ends in a sigmoid.",
             no_sigmoid),
            ("your weights change from position to position: squeeze the map to one number per channel "
             "first.", per_position)])
    except Mistake as mistake:
        if "(1, 1, 32)" in str(mistake):
            raise Mistake(f"{mistake}: you return the channel weights; the block returns the input "
                          "rescaled by them") from None
        raise
    return "squeeze to one number per channel, a small bottleneck MLP with a sigmoid, rescale the input."
