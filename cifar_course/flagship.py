"""The flagship fast recipe, after Keller Jordan's airbench94_muon (2024), in one file (chapter 3).

It reads top to bottom in the order a run goes, like airbench94.py: hyperparameters, network, whitening
initialisation, alternating-flip data, the optimizer split (Muon / SGD with scaled biases), Lookahead
averaging, test-time augmentation, and `train_flagship`, which puts them together.

Imports run one way: this module uses config, pipeline, schedules, optim and train, and nothing of
`models`; `models` imports `build_flagship` from here for its MODELS registry. So the flagship network
builds its own float32 output (a bias-free linear layer, a logit scale and a float32 softmax) instead of
the shared head in `models`: that head has a bias and no logit scale, which airbench's network does not
use.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras import layers

from . import config
from .optim import Muon, SGDScaledBiases
from .pipeline import channel_stats, make_dataset, normalize, pad_crop_flip
from .schedules import make_schedule
from .train import recipe_with, train_model, use_mixed_precision

# ------------------------------------------------------------------------------------------------
# Hyperparameters, sized per profile


def flagship_recipe(profile=None, **overrides) -> dict:
    """Hyperparameters of the flagship recipe for a profile (a Profile or its name); keyword overrides.

    quick: sized for about 5 minutes of training on a 2-core laptop CPU (FLAGSHIP_15_MINUTES for the
    longer budget; both measured in benchmarks/flagship.py); full: airbench94_muon's widths and epochs on
    one GPU, a target not measured here. FLAGSHIP_SGD turns it back into airbench94 (SGD and Lookahead).
    """
    prof = config.resolve(profile)
    recipe = {
        "widths": prof.choose(smoke=(16, 32, 32), quick=(32, 128, 128), full=(64, 256, 256)),  # filters
        "epochs": prof.choose(smoke=2, quick=7, full=8),
        "batch_size": prof.choose(smoke=128, quick=2000, full=2000),  # images per step
        # Muon (cc.Muon) steps the conv kernels: each step a fixed fraction of the (renormalized) kernel,
        # 0.24 at the start, falling with the schedule; Nesterov momentum 0.6.
        "optimizer": "muon",
        "muon_learning_rate": 0.24,
        "muon_momentum": 0.6,
        # SGD (mean loss, Nesterov momentum 0.85) steps the rest, the BatchNorm biases 64x further
        # (cc.SGDScaledBiases). airbench94_muon's rates (0.053 for biases, 0.67 for the head, on a summed
        # loss over 2000 images with logits divided by 256) come to 0.85 per 1024 images here.
        "learning_rate_per_1024": 0.85,  # peak learning rate per 1024 images in a batch
        "momentum": 0.85,
        "bias_scaler": 64.0,  # BatchNorm biases step this many times further
        "weight_decay": 0.016,  # decoupled, SGD variables only: they shrink by lr * weight_decay per step
        "schedule": {"initial_fraction": 1.0, "peak_fraction": 0.0, "final_fraction": 0.0},  # linear to 0
        "lookahead": False,  # weight averaging with restarts every 5 steps (cc.Lookahead), for SGD
        "label_smoothing": 0.2,
        "translate": 2,  # random shift by up to 2 pixels (reflect padding), plus horizontal flips:
        "alternating_flip": True,  # each image's flip alternates between epochs (airbench)
        "activation": "gelu",
        # Progressive resizing: the first `low_resolution_epochs` epochs see the images scaled down to
        # `low_resolution` pixels (None: never): (size / 32)^2 of the arithmetic of a full epoch.
        "low_resolution": None,
        "low_resolution_epochs": 0,
        "mixed_precision": prof.choose(smoke=None, quick="mixed_bfloat16", full="mixed_float16"),
        "jit_compile": prof.choose(smoke=False, quick=False, full=True),  # XLA
        # Test-time augmentation: 0 none, 1 the image and its mirror, 2 also both shifted by one pixel.
        "tta_level": 2,
    }
    recipe = recipe_with(recipe, overrides, "flagship")
    if recipe["optimizer"] not in ("muon", "sgd"):
        raise ValueError(f"optimizer must be 'muon' or 'sgd', got {recipe['optimizer']!r}")
    return recipe


# The quick profile's longer budget: airbench's full widths for 8 epochs, about 15 minutes of training on a
# 2-core CPU (benchmarks/README.md), for cc.flagship_recipe("quick", **FLAGSHIP_15_MINUTES).
FLAGSHIP_15_MINUTES = {"widths": (64, 256, 256), "epochs": 8}

# airbench94 before Muon: SGD for every weight, a triangular schedule, Lookahead, batches of 1024. Its peak
# rate is airbench's 11.5 per 1024 images divided by its momentum gain 1 + 1/(1 - 0.85) = 7.67. airbench94
# takes 9.9 epochs to 94% on a GPU where airbench94_muon takes 8; here see benchmarks/README.md.
FLAGSHIP_SGD = {
    "optimizer": "sgd", "batch_size": 1024, "learning_rate_per_1024": 1.5, "weight_decay": 9e-3,
    "schedule": {"initial_fraction": 0.2, "peak_fraction": 0.23, "final_fraction": 0.07}, "lookahead": True,
}


# ------------------------------------------------------------------------------------------------
# Network: a whitening stem, three conv groups, a scaled linear head


class PartialIdentity(keras.initializers.Initializer):
    """Conv kernels whose first min(in, out) filters pass their input channel through unchanged (a 'dirac'
    identity at the kernel centre); the rest are drawn from `base`. A deep plain net then starts close to
    a shallow one, which trains faster (airbench uses it on every conv)."""

    def __init__(self, base=None):
        # PyTorch's default conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as airbench uses.
        pytorch_default = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")
        self.base = keras.initializers.get(base or pytorch_default)

    def __call__(self, shape, dtype=None, **kwargs):
        kh, kw, cin, cout = (int(d) for d in shape)
        n = min(cin, cout)
        identity = np.zeros(shape, "float32")
        identity[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
        keep_random = np.ones(shape, "float32")
        keep_random[..., :n] = 0.0
        return self.base(shape, dtype) * tf.constant(keep_random, dtype) + tf.constant(identity, dtype)

    def get_config(self):
        return {"base": keras.initializers.serialize(self.base)}


def _conv_group(x, filters: int, activation, bn_momentum: float, name: str):
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
                   logits: bool = False, input_shape=(32, 32, 3)):
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
        x = _conv_group(x, filters, activation, bn_momentum, name=f"group{i + 1}")
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(num_classes, use_bias=False, name="linear")(x)
    x = layers.Rescaling(logit_scale, name="logit_scale")(x)
    if not logits:
        # float32 even under mixed precision: a float16 softmax loses small probabilities.
        x = layers.Activation("softmax", dtype="float32", name="classifier")(x)
    return keras.Model(inputs, x, name="flagship")


def init_whitening(model, images, eps: float = 5e-4, layer: str = "whiten"):
    """Set the stem's filters to the whitening transform of 2x2 image patches (both signs) and freeze it.

    images: float (N, 32, 32, 3) as the model sees them (normalized); a few thousand are enough.
    Each filter projects a patch onto one principal direction, divided by its spread, so the first layer
    outputs decorrelated features of unit variance from the start.
    """
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


# ------------------------------------------------------------------------------------------------
# Data: random shifts and alternating flips


def make_alternating_flip_dataset(x, y, epochs: int, batch_size: int, pad: int = 2, stats=None,
                                  seed: int = 0, sizes=None):
    """Training batches for all `epochs` at once (fit with steps_per_epoch=len(x) // batch_size), with
    airbench's alternating flip: each image is mirrored at random once, and then every odd epoch all of
    them are, so each image is seen in both orientations in turn instead of by a coin toss per epoch.
    Each image is also shifted by up to `pad` pixels (reflect padding), anew every epoch.

    sizes: the image size of each epoch (progressive resizing; None: the images' own). Smaller images
    are scaled down with antialiasing after the shift, and the batches' height and width are left
    unknown, so the model needs input_shape=(None, None, 3).
    """
    x, y = np.asarray(x), np.asarray(y).reshape(-1).astype(np.int32)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels.")
    n = len(x)
    if sizes is not None:
        sizes = [int(s) for s in sizes]
        if len(sizes) != epochs or min(sizes) < 8:
            raise ValueError(f"sizes needs one image size of at least 8 pixels per epoch ({epochs}), "
                             f"got {sizes!r}")
        sizes = tf.constant(sizes, tf.int32)
    mirrored_first = np.random.default_rng(seed).random(n) < 0.5
    x = np.where(mirrored_first[:, None, None, None], x[:, :, ::-1], x)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat(epochs).enumerate()

    def prepare(index, example):
        images, labels = example
        images = tf.cast(images, tf.float32)
        odd_epoch = (index // n) % 2 == 1  # (B,): the epoch each image belongs to
        images = tf.where(odd_epoch[:, None, None, None], tf.reverse(images, axis=[2]), images)
        images = pad_crop_flip(images, pad=pad, flip=False)
        if sizes is not None:  # the batch's first image decides the epoch it belongs to
            size = sizes[tf.minimum(index[0] // n, epochs - 1)]
            images = tf.cond(size == tf.shape(images)[1], lambda: images,
                             lambda: tf.image.resize(images, [size, size], antialias=True))
        return normalize(images, stats), labels

    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------------
# Optimizer split: Muon for the conv kernels, SGD (BatchNorm biases 64x) for the rest


def make_flagship_optimizer(model, recipe: dict, schedule):
    """The recipe's optimizer for `model`: which variables go to Muon and which BatchNorm biases step
    `bias_scaler` times further; everything else (the linear head) takes plain SGD steps.

    schedule: the SGD learning rate per step; Muon's steps follow its shape (see cc.Muon).
    """
    bn_biases = [layer.beta for layer in model.layers
                 if isinstance(layer, keras.layers.BatchNormalization) and layer.center]
    sgd = dict(learning_rate=schedule, momentum=recipe["momentum"], nesterov=True,
               weight_decay=recipe["weight_decay"])
    if recipe["optimizer"] == "sgd":
        return SGDScaledBiases(bn_biases, recipe["bias_scaler"], **sgd)
    # The trainable 3x3 kernels; the frozen whitening stem has none to train.
    kernels = [layer.kernel for layer in model.layers
               if isinstance(layer, keras.layers.Conv2D) and layer.trainable]
    return Muon(kernels, recipe["muon_learning_rate"], recipe["muon_momentum"], bn_biases,
                recipe["bias_scaler"], **sgd)


# ------------------------------------------------------------------------------------------------
# Averaging: Lookahead (for the SGD recipe)


class Lookahead(keras.callbacks.Callback):
    """Weight averaging with restarts (Zhang et al. 2019, in airbench's form): every `period` steps the
    slow copy moves toward the weights, slow = decay * slow + (1 - decay) * weights, and training
    continues from the slow copy. decay grows as max_decay * (step / total_steps) ** 3, so early training
    runs free and late training averages out the noise of large steps; after the last step the weights
    are the slow copy. BatchNorm statistics are averaged with the weights.

    tfa.optimizers.Lookahead is the classic form (fixed step size) but wraps only legacy optimizers.
    The slow copy is not checkpointed: a resumed run restarts the averaging from the restored weights.
    """

    def __init__(self, total_steps: int, period: int = 5, max_decay: float = 0.95 ** 5):
        super().__init__()
        self.total_steps, self.period, self.max_decay = int(total_steps), int(period), float(max_decay)

    def on_train_begin(self, logs=None):
        self.slow = [tf.Variable(w, trainable=False) for w in self.model.weights]

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step >= self.total_steps:
            self._sync(1.0)  # the end: keep the average
        elif step % self.period == 0:
            self._sync(self.max_decay * (step / self.total_steps) ** 3)

    def _sync(self, decay: float):
        for slow, w in zip(self.slow, self.model.weights):
            slow.assign(decay * slow + (1 - decay) * tf.cast(w, slow.dtype))
            w.assign(tf.cast(slow, w.dtype))


# ------------------------------------------------------------------------------------------------
# Test-time augmentation and evaluation during training


def predict_tta(model, x, batch_size: int = 1000, flip: bool = True, translate: int = 0, stats=None):
    """Class probabilities averaged over views of each image: itself and (flip=True) its mirror image;
    with translate=k, also weighted equally against the same views shifted k pixels up-left and
    down-right (reflect padding): airbench's 6-view test-time augmentation for translate=1.

    x: uint8 images (N, 32, 32, 3) or a float dataset-ready array; stats as for make_dataset.
    """

    def views(batch):
        p = model(batch, training=False)
        if flip:
            p = (p + model(tf.reverse(batch, axis=[2]), training=False)) / 2
        return tf.cast(p, tf.float32)

    out = []
    for start in range(0, len(x), batch_size):
        batch = normalize(x[start:start + batch_size], stats)
        p = views(batch)
        if translate:
            k, (h, w) = translate, batch.shape[1:3]
            padded = tf.pad(batch, [[0, 0], [k, k], [k, k], [0, 0]], mode="REFLECT")
            shifted = (views(padded[:, :h, :w]) + views(padded[:, 2 * k:, 2 * k:])) / 2
            p = (p + shifted) / 2
        out.append(p.numpy())
    return np.concatenate(out)


class EpochEval(keras.callbacks.Callback):
    """Test accuracy (with TTA) after every epoch, timed apart from training: accuracy vs wall time."""

    def __init__(self, x, y, stats=None, tta_level: int = 1, every: int = 1):
        super().__init__()
        if tta_level not in (0, 1, 2):
            raise ValueError(f"tta_level must be 0 (none), 1 (mirror) or 2 (mirror and shifts), "
                             f"got {tta_level!r}")
        self.x, self.y, self.stats, self.every = x, np.asarray(y).ravel(), stats, every
        self.tta_level = tta_level
        self.rows = []

    def on_train_begin(self, logs=None):
        self.train_time = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.train_time += time.perf_counter() - self._start
        if (epoch + 1) % self.every and epoch + 1 != self.params.get("epochs"):
            return
        probs = predict_tta(self.model, self.x, flip=self.tta_level >= 1, translate=int(self.tta_level == 2),
                            stats=self.stats)
        acc = float((probs.argmax(1) == self.y).mean())
        self.rows.append({"epoch": epoch + 1, "train_time_s": round(self.train_time, 1), "test_acc": acc})
        if logs is not None:
            logs["test_acc_tta"] = acc


# ------------------------------------------------------------------------------------------------
# Training: everything above, in order


def resolution_per_epoch(recipe: dict, full_size: int):
    """The image size of every epoch under the recipe's progressive resizing, or None without it."""
    low, low_epochs = recipe["low_resolution"], recipe["low_resolution_epochs"]
    if not low or not low_epochs:
        return None
    if not 8 <= low <= full_size or not 0 < low_epochs < recipe["epochs"]:
        raise ValueError(f"low_resolution must lie in [8, {full_size}] pixels and low_resolution_epochs "
                         f"in [1, epochs - 1 = {recipe['epochs'] - 1}], got {low} and {low_epochs}")
    return [low] * low_epochs + [full_size] * (recipe["epochs"] - low_epochs)


def train_flagship(data, recipe: dict | None = None, eval_every: int | None = None, callbacks=(),
                   progress_every: int | None = 1, seed: int = 0):
    """Train the flagship network on `data` (cc.load_cifar10 splits) with `recipe` (flagship_recipe()).

    Returns (model, history, rows): rows is accuracy vs training time after every `eval_every` epochs
    (test set, TTA as the recipe says; None: only at the end).
    """
    recipe = recipe or flagship_recipe()
    (x_train, y_train), (x_test, y_test) = data
    config.seed_everything(seed, deterministic=False)
    use_mixed_precision(False)
    if recipe["mixed_precision"]:
        keras.mixed_precision.set_global_policy(recipe["mixed_precision"])
    try:
        stats = channel_stats(x_train)
        translate, batch_size = recipe["translate"], recipe["batch_size"]
        steps_per_epoch = len(x_train) // batch_size
        sizes = resolution_per_epoch(recipe, x_train.shape[1])
        if recipe["alternating_flip"]:
            train_ds = make_alternating_flip_dataset(x_train, y_train, recipe["epochs"], batch_size,
                                                     pad=translate, stats=stats, seed=seed, sizes=sizes)
        elif sizes:
            raise ValueError("progressive resizing (low_resolution) needs alternating_flip=True")
        else:
            train_ds = make_dataset(x_train, y_train, batch_size=batch_size, training=True, stats=stats,
                                    augment=lambda b: pad_crop_flip(b, pad=translate), seed=seed)
        model = build_flagship(widths=recipe["widths"], activation=recipe["activation"],
                               input_shape=(None, None, 3) if sizes else x_train.shape[1:])
        # A random sample: loaders may return images sorted by class.
        sample = np.random.default_rng(seed).choice(len(x_train), min(5000, len(x_train)), replace=False)
        init_whitening(model, normalize(x_train[np.sort(sample)], stats).numpy())
        steps = steps_per_epoch * recipe["epochs"]
        lr = recipe["learning_rate_per_1024"] * recipe["batch_size"] / 1024
        optimizer = make_flagship_optimizer(model, recipe, make_schedule("onecycle", lr, steps,
                                                                         **recipe["schedule"]))
        evaluator = EpochEval(x_test, y_test, stats, tta_level=recipe["tta_level"],
                              every=eval_every or recipe["epochs"])
        averaging = [Lookahead(steps)] if recipe["lookahead"] else []
        history = train_model(model, train_ds, recipe["epochs"], optimizer=optimizer,
                              label_smoothing=recipe["label_smoothing"], jit_compile=recipe["jit_compile"],
                              callbacks=[*averaging, evaluator, *callbacks], progress_every=progress_every,
                              steps_per_epoch=steps_per_epoch)
    finally:
        use_mixed_precision(False)
    history.train_time_s = evaluator.train_time
    return model, history, evaluator.rows
