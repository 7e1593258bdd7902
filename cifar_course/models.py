"""Builders for every network the course trains: functional Keras, uncompiled, float32 softmax
probabilities out (also under mixed precision) unless `logits=True`.

`MODELS` maps a name to its builder, so tests can build and run every one of them. The flagship
network (`build_flagship`, chapter 3) is defined in `flagship` with the rest of its recipe and imported
here for the registry; `flagship` imports nothing from this module, so the imports run one way.
"""

from __future__ import annotations

from tensorflow import keras
from tensorflow.keras import layers

from .regularize import StochasticDepth, l2
from .flagship import build_flagship  # the flagship network lives with its recipe, for MODELS

INPUT_SHAPE = (32, 32, 3)


def _head(x, num_classes: int, logits: bool, kernel_regularizer=None):
    # float32 even under mixed precision: a float16 softmax loses small probabilities.
    return layers.Dense(num_classes, activation=None if logits else "softmax", dtype="float32",
                        kernel_regularizer=kernel_regularizer, name="classifier")(x)


# ------------------------------------------------------------------------------------------------
# Plain CNNs


def build_baseline_cnn(num_classes: int = 10, logits: bool = False, input_shape=INPUT_SHAPE,
                       batchnorm: bool = False, bn_momentum: float = 0.99):
    """The classic Keras CIFAR-10 tutorial's baseline: Conv 32-64-64 (3x3, ReLU, two max-pools), Dense 64, softmax.

    Introduced in the baseline CNN chapter; 122,570 parameters for ten classes. batchnorm=True puts
    BatchNorm between each convolution (then without bias) and its ReLU, the chapter's BatchNorm
    comparison; shapes are unchanged. bn_momentum: how slowly the running statistics that inference
    uses follow the batches (Keras' default 0.99 averages over about 100 steps, 0.9 over 10).
    """

    def conv(x, filters):
        if not batchnorm:
            return layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.Conv2D(filters, 3, use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization(momentum=bn_momentum)(x))

    inputs = keras.Input(input_shape)
    x = conv(inputs, 32)  # (30, 30, 32)
    x = layers.MaxPooling2D()(x)  # (15, 15, 32)
    x = conv(x, 64)  # (13, 13, 64)
    x = layers.MaxPooling2D()(x)  # (6, 6, 64)
    x = conv(x, 64)  # (4, 4, 64)
    x = layers.Flatten()(x)  # (1024,)
    x = layers.Dense(64, activation="relu")(x)
    name = "baseline_cnn_bn" if batchnorm else "baseline_cnn"
    return keras.Model(inputs, _head(x, num_classes, logits), name=name)


def conv_bn_relu(x, filters: int, kernel_size: int = 3, strides: int = 1, name: str | None = None,
                 kernel_regularizer=None, bn_momentum: float = 0.99, relu: bool = True):
    """Conv (no bias: BatchNorm has its own shift), BatchNorm, ReLU (relu=False stops after BatchNorm)."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                      kernel_regularizer=kernel_regularizer, name=name and f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=name and f"{name}_bn")(x)
    return layers.ReLU(name=name and f"{name}_relu")(x) if relu else x


def build_small_cnn(num_classes: int = 10, width: int = 32, head: str = "gap", dropout: float = 0.0,
                    logits: bool = False, input_shape=INPUT_SHAPE, bn_momentum: float = 0.99):
    """Three stages of two conv-BN-ReLU layers (width, 2*width, 4*width), max-pooling between them.

    head="gap" ends with global average pooling (few parameters); head="flatten" flattens the
    (8, 8, 4*width) map into a dense layer, the parameter-hungry way the baseline does it.
    bn_momentum: as in build_baseline_cnn (0.99 averages over about 100 steps, 0.9 over 10: for runs
    of a few dozen steps).
    """
    if head not in ("gap", "flatten"):
        raise ValueError(f"head must be 'gap' or 'flatten', got {head!r}")
    inputs = keras.Input(input_shape)
    x = inputs
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        x = conv_bn_relu(x, filters, name=f"stage{stage + 1}a", bn_momentum=bn_momentum)
        x = conv_bn_relu(x, filters, name=f"stage{stage + 1}b", bn_momentum=bn_momentum)
        if stage < 2:
            x = layers.MaxPooling2D()(x)  # 32 -> 16 -> 8
    if head == "gap":
        x = layers.GlobalAveragePooling2D()(x)
    else:
        x = layers.Flatten()(x)
        x = layers.Dense(4 * width, activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, num_classes, logits), name=f"small_cnn_{head}")


# ------------------------------------------------------------------------------------------------
# Residual networks (He et al. 2016) and squeeze-and-excitation (Hu et al. 2018)


def se_block(x, reduction: int = 8, name: str | None = None):
    """Channel attention: squeeze (global average) -> excite (bottleneck MLP, sigmoid) -> rescale."""
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=name and f"{name}_squeeze")(x)
    s = layers.Dense(max(channels // reduction, 1), activation="relu", name=name and f"{name}_reduce")(s)
    s = layers.Dense(channels, activation="sigmoid", name=name and f"{name}_expand")(s)
    return layers.Multiply(name=name and f"{name}_scale")([x, s])


def _shortcut(x, filters: int, strides: int, name: str):
    if strides == 1 and x.shape[-1] == filters:
        return x
    # Projection shortcut (a 1x1 convolution) where the shape changes.
    x = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_proj")(x)
    return layers.BatchNormalization(name=f"{name}_proj_bn")(x)


def residual_block(x, filters: int, strides: int = 1, se: bool = False, residual: bool = True,
                   zero_init_residual: bool = False, name: str = "block"):
    """Post-activation basic block (He et al. 2016a): conv-BN-ReLU, conv-BN, add shortcut, ReLU.

    residual=False drops the shortcut (the 'plain' network the residual chapter compares against).
    zero_init_residual: the branch's last BatchNorm scale starts at 0 (Goyal et al. 2017), so the block
    starts as its shortcut and a deep ResNet starts out as shallow as its projections and stem.
    """
    if zero_init_residual and not residual:
        raise ValueError("zero_init_residual=True without a shortcut would start the network at zero.")
    y = conv_bn_relu(x, filters, strides=strides, name=f"{name}_1")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    y = layers.BatchNormalization(gamma_initializer="zeros" if zero_init_residual else "ones",
                                  name=f"{name}_2_bn")(y)
    if se:
        y = se_block(y, name=f"{name}_se")
    if residual:
        y = layers.Add(name=f"{name}_add")([y, _shortcut(x, filters, strides, name)])
    return layers.ReLU(name=f"{name}_out")(y)


def preact_residual_block(x, filters: int, strides: int = 1, se: bool = False, name: str = "block"):
    """Pre-activation block (He et al. 2016b): BN-ReLU-conv twice, the shortcut left untouched."""
    y = layers.BatchNormalization(name=f"{name}_bn1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_proj")(y)
    y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv1")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    if se:
        y = se_block(y, name=f"{name}_se")
    return layers.Add(name=f"{name}_add")([y, shortcut])


def build_resnet(depth: int = 20, width: int = 16, preact: bool = False, se: bool = False,
                 residual: bool = True, zero_init_residual: bool = False, num_classes: int = 10,
                 logits: bool = False, input_shape=INPUT_SHAPE):
    """CIFAR ResNet of depth 6n+2 (20, 32, 56, ...): three stages of n blocks at width, 2w, 4w.

    preact: pre-activation blocks; se: a squeeze-and-excitation block in every residual branch
    (SE-ResNet); residual=False: the plain network of the same depth; zero_init_residual: every block
    starts as its shortcut (`residual_block`), post-activation blocks only.
    """
    if zero_init_residual and preact:
        raise ValueError("zero_init_residual is implemented for post-activation blocks (preact=False).")
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNets have depth 6n+2 (20, 32, 44, 56, 110), got {depth}")
    if preact and not residual:
        raise ValueError("A pre-activation network without shortcuts is not a ResNet; use preact=False.")
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    if not preact:
        x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for i in range(blocks):
            strides = 2 if stage > 0 and i == 0 else 1
            name = f"stage{stage + 1}_block{i + 1}"
            if preact:
                x = preact_residual_block(x, filters, strides, se=se, name=name)
            else:
                x = residual_block(x, filters, strides, se=se, residual=residual,
                                   zero_init_residual=zero_init_residual, name=name)
    if preact:
        x = layers.ReLU(name="final_relu")(layers.BatchNormalization(name="final_bn")(x))
    x = layers.GlobalAveragePooling2D()(x)
    kind = ("preact_" if preact else "") + ("se_" if se else "") + ("resnet" if residual else "plain")
    return keras.Model(inputs, _head(x, num_classes, logits), name=f"{kind}{depth}")


# ------------------------------------------------------------------------------------------------
# A residual network with every model-side regularizer as a keyword (the regularization chapter)


def build_regularized_resnet(width: int = 16, l2_factor: float = 0.0, dropout: float = 0.0,
                             drop_path: float = 0.0, bn_momentum: float = 0.9, num_classes: int = 10,
                             logits: bool = False, input_shape=INPUT_SHAPE):
    """A small residual network with every model-side regularizer as a keyword (0 = off).

    Stem conv, then three stages (width, 2w, 4w) of a strided conv-BN-ReLU and one residual block,
    global average pooling, dropout, softmax. l2_factor: L2 on every kernel; dropout: before the
    classifier; drop_path: stochastic-depth rate of the residual branches, growing linearly with depth
    up to `drop_path` in the last block (Huang et al.'s linear decay rule). bn_momentum 0.9 (Keras'
    default is 0.99) lets BatchNorm's running statistics catch up within the short runs of the course.
    """
    reg = l2(l2_factor)

    def conv(x, filters, strides=1, relu=True):
        return conv_bn_relu(x, filters, strides=strides, kernel_regularizer=reg, bn_momentum=bn_momentum,
                            relu=relu)

    inputs = keras.Input(input_shape)
    x = conv(inputs, width)
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        x = conv(x, filters, strides=1 if stage == 0 else 2)  # 32 -> 32, 16, 8
        branch = conv(conv(x, filters), filters, relu=False)
        if drop_path:
            branch = StochasticDepth(drop_path * (stage + 1) / 3)(branch)
        x = layers.ReLU()(layers.Add()([x, branch]))
    x = layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, num_classes, logits, kernel_regularizer=reg),
                       name="regularized_resnet")


# ------------------------------------------------------------------------------------------------
# Depthwise-separable networks (the lightweighting chapter)


def separable_bn_relu(x, filters: int, strides: int = 1, name: str | None = None):
    """SeparableConv2D (a 3x3 depthwise conv, then a 1x1 pointwise conv), BatchNorm, ReLU."""
    x = layers.SeparableConv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                               name=name and f"{name}_sepconv")(x)
    x = layers.BatchNormalization(name=name and f"{name}_bn")(x)
    return layers.ReLU(name=name and f"{name}_relu")(x)


def build_separable_cnn(num_classes: int = 10, width: int = 32, dropout: float = 0.0,
                        logits: bool = False, input_shape=INPUT_SHAPE):
    """`build_small_cnn` with every 3x3 convolution but the first made depthwise-separable.

    The first layer stays a full convolution: with 3 input channels a separable one saves almost nothing
    and loses colour mixing (MobileNet keeps a full stem for the same reason).
    """
    inputs = keras.Input(input_shape)
    x = conv_bn_relu(inputs, width, name="stem")
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        if stage:
            x = separable_bn_relu(x, filters, name=f"stage{stage + 1}a")
        x = separable_bn_relu(x, filters, name=f"stage{stage + 1}b")
        if stage < 2:
            x = layers.MaxPooling2D()(x)  # 32 -> 16 -> 8
    x = layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, num_classes, logits), name="separable_cnn")


def inverted_residual_block(x, filters: int, expansion: int = 6, strides: int = 1, name: str = "ir"):
    """MobileNetV2's block (Sandler et al. 2018): 1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 linear
    projection (no activation: ReLU in the narrow space would destroy information), and a shortcut when
    the shape is unchanged."""
    channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = layers.Conv2D(channels * expansion, 1, use_bias=False, name=f"{name}_expand")(y)
        y = layers.BatchNormalization(name=f"{name}_expand_bn")(y)
        y = layers.ReLU(6.0, name=f"{name}_expand_relu6")(y)
    y = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu6")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if strides == 1 and channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def build_mobilenet_v2(num_classes: int = 10, width: int = 16, expansion: int = 4, blocks=(1, 2, 2),
                       logits: bool = False, input_shape=INPUT_SHAPE):
    """A small MobileNetV2 for 32x32 images: a 3x3 stem, three stages of inverted-residual blocks at
    width, 2*width, 4*width (the first block of stages 2 and 3 halves the resolution), a 1x1 head conv
    to 8*width channels, global average pooling."""
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.ReLU(6.0, name="stem_relu6")(layers.BatchNormalization(name="stem_bn")(x))
    for stage, (filters, count) in enumerate(zip((width, 2 * width, 4 * width), blocks)):
        for i in range(count):
            strides = 2 if stage > 0 and i == 0 else 1
            x = inverted_residual_block(x, filters, expansion=1 if stage == 0 and i == 0 else expansion,
                                        strides=strides, name=f"stage{stage + 1}_ir{i + 1}")
    x = layers.Conv2D(8 * width, 1, use_bias=False, name="head_conv")(x)
    x = layers.ReLU(6.0, name="head_relu6")(layers.BatchNormalization(name="head_bn")(x))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _head(x, num_classes, logits), name="mobilenet_v2_cifar")


MODELS = {
    "baseline_cnn": build_baseline_cnn,
    "small_cnn": build_small_cnn,
    "small_cnn_flatten": lambda **kw: build_small_cnn(head="flatten", **kw),
    "resnet20": lambda **kw: build_resnet(20, **kw),
    "plain20": lambda **kw: build_resnet(20, residual=False, **kw),
    "preact_resnet20": lambda **kw: build_resnet(20, preact=True, **kw),
    "se_resnet20": lambda **kw: build_resnet(20, se=True, **kw),
    "regularized_resnet": build_regularized_resnet,
    "regularized_resnet_drop_path": lambda **kw: build_regularized_resnet(l2_factor=1e-4, dropout=0.2,
                                                                          drop_path=0.2, **kw),
    "separable_cnn": build_separable_cnn,
    "mobilenet_v2": build_mobilenet_v2,
    "flagship": build_flagship,
}


# ------------------------------------------------------------------------------------------------
# Looking inside a model


def layer_table(model) -> list[dict]:
    """One row per layer: name, type, output shape (batch dimension dropped) and parameter count."""
    rows = []
    for layer in model.layers:
        shape = layer.output_shape
        shape = shape[0] if isinstance(shape, list) else shape
        rows.append({"layer": layer.name, "type": type(layer).__name__,
                     "output shape": tuple(shape[1:]), "parameters": layer.count_params()})
    return rows
