"""Builders for every network the course trains: functional Keras, uncompiled, float32 logits-free
softmax outputs unless `logits=True`.

`MODELS` maps a name to its builder, so tests can build and run every one of them.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow import keras
from tensorflow.keras import layers

INPUT_SHAPE = (32, 32, 3)


def _head(x, num_classes: int, logits: bool):
    # float32 even under mixed precision: a float16 softmax loses small probabilities.
    return layers.Dense(num_classes, activation=None if logits else "softmax", dtype="float32",
                        name="classifier")(x)


# ------------------------------------------------------------------------------------------------
# Plain CNNs


def build_baseline_cnn(num_classes: int = 10, logits: bool = False, input_shape=INPUT_SHAPE):
    """The classic Keras CIFAR-10 tutorial's baseline: Conv 32-64-64 (3x3, ReLU, two max-pools), Dense 64, softmax.

    Introduced in the baseline CNN chapter; 122,570 parameters for ten classes.
    """
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(32, 3, activation="relu")(inputs)  # (30, 30, 32)
    x = layers.MaxPooling2D()(x)  # (15, 15, 32)
    x = layers.Conv2D(64, 3, activation="relu")(x)  # (13, 13, 64)
    x = layers.MaxPooling2D()(x)  # (6, 6, 64)
    x = layers.Conv2D(64, 3, activation="relu")(x)  # (4, 4, 64)
    x = layers.Flatten()(x)  # (1024,)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, _head(x, num_classes, logits), name="baseline_cnn")


def conv_bn_relu(x, filters: int, kernel_size: int = 3, strides: int = 1, name: str | None = None):
    """Conv (no bias: BatchNorm has its own shift), BatchNorm, ReLU."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                      name=name and f"{name}_conv")(x)
    x = layers.BatchNormalization(name=name and f"{name}_bn")(x)
    return layers.ReLU(name=name and f"{name}_relu")(x)


def build_small_cnn(num_classes: int = 10, width: int = 32, head: str = "gap", dropout: float = 0.0,
                    logits: bool = False, input_shape=INPUT_SHAPE):
    """Three stages of two conv-BN-ReLU layers (width, 2*width, 4*width), max-pooling between them.

    head="gap" ends with global average pooling (few parameters); head="flatten" flattens the
    (8, 8, 4*width) map into a dense layer, the parameter-hungry way the baseline does it.
    """
    if head not in ("gap", "flatten"):
        raise ValueError(f"head must be 'gap' or 'flatten', got {head!r}")
    inputs = keras.Input(input_shape)
    x = inputs
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        x = conv_bn_relu(x, filters, name=f"stage{stage + 1}a")
        x = conv_bn_relu(x, filters, name=f"stage{stage + 1}b")
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
                   name: str = "block"):
    """Post-activation basic block (He et al. 2016a): conv-BN-ReLU, conv-BN, add shortcut, ReLU.

    residual=False drops the shortcut (the 'plain' network the residual chapter compares against).
    """
    y = conv_bn_relu(x, filters, strides=strides, name=f"{name}_1")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    y = layers.BatchNormalization(name=f"{name}_2_bn")(y)
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
                 residual: bool = True, num_classes: int = 10, logits: bool = False,
                 input_shape=INPUT_SHAPE):
    """CIFAR ResNet of depth 6n+2 (20, 32, 56, ...): three stages of n blocks at width, 2w, 4w.

    preact: pre-activation blocks; se: a squeeze-and-excitation block in every residual branch
    (SE-ResNet); residual=False: the plain network of the same depth.
    """
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
                x = residual_block(x, filters, strides, se=se, residual=residual, name=name)
    if preact:
        x = layers.ReLU(name="final_relu")(layers.BatchNormalization(name="final_bn")(x))
    x = layers.GlobalAveragePooling2D()(x)
    kind = ("preact_" if preact else "") + ("se_" if se else "") + ("resnet" if residual else "plain")
    return keras.Model(inputs, _head(x, num_classes, logits), name=f"{kind}{depth}")


# ------------------------------------------------------------------------------------------------
# The flagship fast recipe network (after Keller Jordan's airbench, 2024)


class PartialIdentity(keras.initializers.Initializer):
    """Conv kernels whose first min(in, out) filters pass their input channel through unchanged (a 'dirac'
    identity at the kernel centre); the rest are drawn from `base`. A deep plain net then starts close to
    a shallow one, which trains faster (airbench uses it on every conv)."""

    def __init__(self, base=None):
        # PyTorch's default conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as airbench uses.
        pytorch_default = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")
        self.base = keras.initializers.get(base or pytorch_default)

    def __call__(self, shape, dtype=None, **kwargs):
        import numpy as np

        kh, kw, cin, cout = (int(d) for d in shape)
        n = min(cin, cout)
        identity = np.zeros(shape, "float32")
        identity[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
        keep_random = np.ones(shape, "float32")
        keep_random[..., :n] = 0.0
        return self.base(shape, dtype) * tf.constant(keep_random, dtype) + tf.constant(identity, dtype)

    def get_config(self):
        return {"base": keras.initializers.serialize(self.base)}


def _flagship_group(x, filters: int, activation, bn_momentum: float, name: str):
    """conv -> max-pool -> BN -> act -> conv -> BN -> act: pooling before BatchNorm halves its cost."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=PartialIdentity(),
                      name=f"{name}_conv1")(x)
    x = layers.MaxPooling2D(name=f"{name}_pool")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5, scale=False, name=f"{name}_bn1")(x)
    x = layers.Activation(activation, name=f"{name}_act1")(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=PartialIdentity(),
                      name=f"{name}_conv2")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5, scale=False, name=f"{name}_bn2")(x)
    return layers.Activation(activation, name=f"{name}_act2")(x)


def build_flagship(widths=(32, 128, 128), stem_width: int = 24, activation: str = "gelu",
                   bn_momentum: float = 0.6, logit_scale: float = 1 / 9, num_classes: int = 10,
                   logits: bool = False, input_shape=INPUT_SHAPE):
    """A small VGG-like net built for speed: a 2x2 'whitening' stem, three conv groups that each halve
    the resolution (32 -> 16 -> 8 -> 4 after the stem's 31), global max-pool, a bias-free linear head
    whose logits are scaled down (a cheap temperature that stabilises the large learning rates).

    airbench94 uses widths (64, 256, 256) on a GPU; the default here is sized for a laptop CPU.
    Initialise the stem from data with `init_whitening(model, images)` before training.
    """
    if len(widths) != 3:
        raise ValueError(f"widths needs three stage widths, got {widths!r}")
    inputs = keras.Input(input_shape)
    # 2x2 conv, no padding: (32, 32, 3) -> (31, 31, stem_width); frozen after init_whitening.
    x = layers.Conv2D(stem_width, 2, padding="valid", name="whiten")(inputs)
    x = layers.Activation(activation, name="whiten_act")(x)
    for i, filters in enumerate(widths):
        x = _flagship_group(x, filters, activation, bn_momentum, name=f"group{i + 1}")
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(num_classes, use_bias=False, name="linear")(x)
    x = layers.Rescaling(logit_scale, name="logit_scale")(x)
    if not logits:
        x = layers.Activation("softmax", dtype="float32", name="classifier")(x)
    return keras.Model(inputs, x, name="flagship")


def init_whitening(model, images, eps: float = 5e-4, layer: str = "whiten"):
    """Set the stem's filters to the whitening transform of 2x2 image patches (both signs) and freeze it.

    images: float (N, 32, 32, 3) as the model sees them (normalized); a few thousand are enough.
    Each filter projects a patch onto one principal direction, divided by its spread, so the first layer
    outputs decorrelated features of unit variance from the start.
    """
    import numpy as np

    stem = model.get_layer(layer)
    k = stem.kernel_size[0]
    x = np.asarray(images, np.float64)
    n, h, w, c = x.shape
    patches = np.stack([x[:, i:h - k + 1 + i, j:w - k + 1 + j, :] for i in range(k) for j in range(k)],
                       axis=3)  # (N, H', W', k*k, C), patch index in (row, col) order
    patches = patches.reshape(-1, k * k * c)
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)  # ascending
    filters = (eigenvectors / np.sqrt(eigenvalues + eps)).T[::-1]  # (k*k*c, k*k*c), largest first
    filters = np.concatenate([filters, -filters])  # (2*k*k*c, k*k*c)
    if len(filters) != stem.filters:
        raise ValueError(f"The stem has {stem.filters} filters; whitening {k}x{k}x{c} patches gives "
                         f"{len(filters)}. Build the model with stem_width={len(filters)}.")
    kernel = filters.reshape(-1, k, k, c).transpose(1, 2, 3, 0)  # (k, k, C, filters)
    stem.set_weights([kernel.astype("float32"), np.zeros(stem.filters, "float32")])
    stem.trainable = False
    return model


MODELS = {
    "baseline_cnn": build_baseline_cnn,
    "small_cnn": build_small_cnn,
    "small_cnn_flatten": lambda **kw: build_small_cnn(head="flatten", **kw),
    "resnet20": lambda **kw: build_resnet(20, **kw),
    "plain20": lambda **kw: build_resnet(20, residual=False, **kw),
    "preact_resnet20": lambda **kw: build_resnet(20, preact=True, **kw),
    "se_resnet20": lambda **kw: build_resnet(20, se=True, **kw),
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
