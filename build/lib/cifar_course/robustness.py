"""Robustness: adversarial attacks (FGSM, PGD), robust accuracy, fast adversarial training, and how much
predictions depend on the background.

Attacks work in pixel units: images in [0, 1], an L-infinity budget `epsilon` (8/255 is the CIFAR-10
standard) and a result clipped to the valid range. A model trained on standardized images gets
`stats=(mean, std)` (the `channel_stats` it was trained with); the attack standardizes after perturbing,
so the budget stays 8/255 of a pixel whatever the normalization.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
from tensorflow import keras

EPSILON = 8 / 255  # the usual CIFAR-10 L-infinity budget: 8 grey levels per pixel and channel


# ------------------------------------------------------------------------------------------------
# Helpers: pixels in, loss out


def to_pixels(x):
    """uint8 images -> float32 in [0, 1]; float images are taken to be in [0, 1] already."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if x.size and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise ValueError(f"Float images must be pixels in [0, 1] (got {x.min():.2f}..{x.max():.2f}). Pass "
                         "uint8 images or pixels, and the normalization separately as stats=(mean, std).")
    return x


def standardize(pixels, stats=None):
    """Pixels in [0, 1] -> what a model trained with make_dataset(..., stats=stats) takes."""
    if stats is None:
        return pixels
    mean, std = stats
    return (pixels - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def outputs_logits(model) -> bool:
    """True unless the model ends in a softmax."""
    layer = model.layers[-1]
    while isinstance(layer, keras.Model):
        layer = layer.layers[-1]
    activation = getattr(layer, "activation", None)
    return not (activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax")


def cross_entropy(outputs, labels, from_logits: bool):
    """Per-example cross-entropy. From probabilities it is -log p_y without Keras' clipping to 1 - 1e-7,
    whose zero gradient would leave a confidently right example unattacked."""
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    if from_logits:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(outputs, tf.float32))
    p = tf.gather(tf.cast(outputs, tf.float32), labels, axis=1, batch_dims=1)
    return -tf.math.log(tf.maximum(p, 1e-30))


def _input_gradient(model, pixels, labels, stats, from_logits, training=False):
    """d loss / d pixels, the direction that hurts the model most to first order."""
    with tf.GradientTape() as tape:
        tape.watch(pixels)
        loss = tf.reduce_sum(cross_entropy(model(standardize(pixels, stats), training=training), labels,
                                           from_logits))
    return tape.gradient(loss, pixels)


def _project(x_adv, x, epsilon):
    """Back into the epsilon-box around x and into the valid pixel range [0, 1]."""
    return tf.clip_by_value(tf.clip_by_value(x_adv, x - epsilon, x + epsilon), 0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Attacks (Goodfellow et al. 2015; Madry et al. 2018)


def fgsm(model, x, y, epsilon: float = EPSILON, stats=None, random_start: bool = False,
         alpha: float | None = None, seed: int = 0):
    """Fast gradient sign method: one step of size epsilon along the sign of the input gradient.

    x: uint8 or pixels in [0, 1]. random_start (with alpha, default 1.25 * epsilon) is the variant fast
    adversarial training uses (Wong et al. 2020). Returns float32 pixels in [0, 1], within epsilon of x.
    """
    _check_epsilon(epsilon)
    x = tf.constant(to_pixels(x))
    from_logits = outputs_logits(model)
    start = x
    if random_start:
        start = _project(x + tf.random.stateless_uniform(tf.shape(x), [seed, 1], -epsilon, epsilon), x, epsilon)
        alpha = 1.25 * epsilon if alpha is None else alpha
    else:
        alpha = epsilon if alpha is None else alpha
    grad = _input_gradient(model, start, y, stats, from_logits)
    return _project(start + alpha * tf.sign(grad), x, epsilon).numpy()


def pgd(model, x, y, epsilon: float = EPSILON, steps: int = 10, alpha: float = 2 / 255, stats=None,
        random_start: bool = True, restarts: int = 1, seed: int = 0):
    """Projected gradient descent (Madry et al. 2018): `steps` sign-gradient steps of size alpha, each
    projected back into the epsilon-box and [0, 1]; from a random start in the box; with restarts > 1 the
    strongest of several runs per image (any run that fools the model wins)."""
    _check_epsilon(epsilon)
    x = tf.constant(to_pixels(x))
    labels = tf.cast(np.asarray(y).reshape(-1), tf.int64)
    from_logits = outputs_logits(model)
    best, best_loss = x, tf.fill([tf.shape(x)[0]], -np.inf)
    for restart in range(restarts):
        x_adv = x
        if random_start:
            noise = tf.random.stateless_uniform(tf.shape(x), [seed, restart], -epsilon, epsilon)
            x_adv = _project(x + noise, x, epsilon)
        for _ in range(steps):
            grad = _input_gradient(model, x_adv, labels, stats, from_logits)
            x_adv = _project(x_adv + alpha * tf.sign(grad), x, epsilon)
        out = model(standardize(x_adv, stats), training=False)
        wrong = tf.argmax(out, axis=-1) != labels
        loss = cross_entropy(out, labels, from_logits) + tf.where(wrong, 1e6, 0.0)  # fooled beats not fooled
        better = loss > best_loss
        best = tf.where(better[:, None, None, None], x_adv, best)
        best_loss = tf.maximum(loss, best_loss)
    return best.numpy()


ATTACKS = {"fgsm": fgsm, "pgd": pgd}


def _check_epsilon(epsilon):
    if not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon is in pixel units, [0, 1] (8/255 = {8 / 255:.4f} is standard); "
                         f"got {epsilon}. Divide a grey-level budget by 255.")


def accuracy(model, x, y, stats=None, batch_size: int = 500) -> float:
    """Clean accuracy on uint8 images or pixels in [0, 1]."""
    y = np.asarray(y).reshape(-1)
    right = 0
    for start in range(0, len(y), batch_size):
        batch = standardize(tf.constant(to_pixels(x[start:start + batch_size])), stats)
        right += int((np.argmax(model(batch, training=False), axis=-1) == y[start:start + batch_size]).sum())
    return right / max(len(y), 1)


def robust_accuracy(model, x, y, attack: str = "pgd", epsilon: float = EPSILON, stats=None,
                    batch_size: int = 500, **options) -> float:
    """Accuracy on adversarial versions of x: an image counts only if the attack fails to flip it.

    attack: "fgsm" or "pgd"; options go to the attack (steps, alpha, restarts, ...).
    """
    if attack not in ATTACKS:
        raise ValueError(f"Unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}.")
    y = np.asarray(y).reshape(-1)
    right = 0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        x_adv = ATTACKS[attack](model, xb, yb, epsilon=epsilon, stats=stats, **options)
        pred = np.argmax(model(standardize(tf.constant(x_adv), stats), training=False), axis=-1)
        right += int((pred == yb).sum())
    return right / max(len(y), 1)


# ------------------------------------------------------------------------------------------------
# Fast adversarial training (Wong, Rice and Kolter 2020)


class FastAdversarialModel(keras.Model):
    """Wraps `model` so that fit() trains on FGSM-with-random-start examples ("fast is better than free").

    Takes pixels in [0, 1] (make_dataset without stats) and standardizes them with `stats` itself, so the
    budget is in pixel units. Each step: a random start in the epsilon-box, one signed gradient step of
    alpha = 1.25 epsilon, projection, then an ordinary training step on that image. Evaluation (and
    validation) is on clean images. Watch for catastrophic overfitting with `RobustnessMonitor`.
    """

    def __init__(self, model, epsilon: float = EPSILON, alpha: float | None = None, stats=None, **kwargs):
        super().__init__(**kwargs)
        _check_epsilon(epsilon)
        self.model = model
        self.epsilon = float(epsilon)
        self.alpha = 1.25 * self.epsilon if alpha is None else float(alpha)
        self.stats = stats
        self.from_logits = outputs_logits(model)

    @property
    def output_shape(self):  # the wrapped model's: a subclassed model has none of its own
        return self.model.output_shape

    def call(self, pixels, training=False):
        return self.model(standardize(pixels, self.stats), training=training)

    def train_step(self, data):
        x, y = data[0], data[1]
        # The attack: random start, one FGSM step, projection (the model in training mode, as in the paper).
        delta = tf.random.uniform(tf.shape(x), -self.epsilon, self.epsilon)
        x_adv = _project(x + delta, x, self.epsilon)
        y_sparse = y if y.shape.rank == 1 else tf.argmax(y, axis=-1)
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            attack_loss = tf.reduce_sum(cross_entropy(self(x_adv, training=True), y_sparse, self.from_logits))
        x_adv = _project(x_adv + self.alpha * tf.sign(tape.gradient(attack_loss, x_adv)), x, self.epsilon)
        x_adv = tf.stop_gradient(x_adv)
        # The ordinary training step, on the adversarial images.
        with tf.GradientTape() as tape:
            y_pred = self(x_adv, training=True)
            loss = self.compute_loss(x_adv, y, y_pred)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self.compute_metrics(x_adv, y, y_pred, None)


class RobustnessMonitor(keras.callbacks.Callback):
    """After each epoch, clean and PGD accuracy on a small held-out set; flags catastrophic overfitting.

    Fast FGSM training can suddenly lose all robustness within one epoch: FGSM accuracy on the training
    examples shoots up while PGD accuracy falls to near zero (Wong et al. 2020). If PGD accuracy drops
    by more than `drop` below its best, `catastrophic` is set and (stop=True) training stops with the best
    weights restored. x: uint8 or pixels; stats: the monitored model's normalization (None for a
    FastAdversarialModel, which standardizes itself).
    """

    def __init__(self, x, y, epsilon: float = EPSILON, steps: int = 10, alpha: float = 2 / 255, stats=None,
                 drop: float = 0.2, stop: bool = True, print_fn=print):
        super().__init__()
        self.x, self.y = to_pixels(x), np.asarray(y).reshape(-1)
        self.epsilon, self.steps, self.alpha, self.stats = epsilon, steps, alpha, stats
        self.drop, self.stop, self.print_fn = drop, stop, print_fn
        self.rows, self.catastrophic, self.best, self._best_weights = [], False, -1.0, None

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        clean = accuracy(self.model, self.x, self.y, self.stats)
        robust = robust_accuracy(self.model, self.x, self.y, "pgd", self.epsilon, self.stats,
                                 steps=self.steps, alpha=self.alpha)
        self.rows.append({"epoch": epoch + 1, "clean_acc": clean, "pgd_acc": robust,
                          "check_time_s": round(time.perf_counter() - start, 1)})
        if logs is not None:
            logs["monitor_clean_acc"], logs["monitor_pgd_acc"] = clean, robust
        if robust > self.best:
            self.best, self._best_weights = robust, self.model.get_weights()
        elif self.best - robust > self.drop:
            self.catastrophic = True
            self.print_fn(f"Catastrophic overfitting at epoch {epoch + 1}: PGD accuracy {robust:.3f}, "
                          f"best {self.best:.3f}." + (" Stopping; best weights restored." if self.stop else ""))
            if self.stop:
                self.model.set_weights(self._best_weights)
                self.model.stop_training = True


# ------------------------------------------------------------------------------------------------
# Background sensitivity: how much do predictions move when only the background changes?


def border_mask(size: int = 32, width: int = 4):
    """Boolean (size, size): True on a frame `width` pixels wide, where CIFAR-10 images are mostly background
    (objects are roughly centred and fill the middle)."""
    mask = np.ones((size, size), bool)
    mask[width:size - width, width:size - width] = False
    return mask


def centre_mask(size: int = 32, width: int = 4):
    """The control: a centred square with the same number of pixels as border_mask(size, width)."""
    area = size * size - (size - 2 * width) ** 2
    side = int(round(np.sqrt(area)))
    lo = (size - side) // 2
    mask = np.zeros((size, size), bool)
    mask[lo:lo + side, lo:lo + side] = True
    return mask


def grey_out(x, mask, value: int = 128):
    """uint8 images with the masked pixels set to mid-grey."""
    x = np.array(x, copy=True)
    x[:, mask] = value
    return x


def shift_hue(x, mask, shift: float = 0.5):
    """uint8 images with the hue of the masked pixels rotated by `shift` turns (0.5: blue sky -> orange),
    brightness and saturation kept."""
    hsv = tf.image.rgb_to_hsv(x.astype(np.float32) / 255.0).numpy()
    hsv[:, mask, 0] = (hsv[:, mask, 0] + shift) % 1.0
    return (tf.image.hsv_to_rgb(hsv).numpy() * 255).round().astype(np.uint8)


def background_sensitivity(model, x, y, stats=None, width: int = 4, batch_size: int = 500) -> list[dict]:
    """Rows: accuracy and share of changed predictions when the border (background) or, as a control, a
    centre square of the same area (mostly object) is greyed out or hue-shifted. x: uint8 images."""
    y = np.asarray(y).reshape(-1)

    def predict(images):
        return np.concatenate([
            np.argmax(model(standardize(tf.constant(to_pixels(images[i:i + batch_size])), stats),
                            training=False), axis=-1)
            for i in range(0, len(images), batch_size)])

    base = predict(x)
    rows = [{"images": "original", "accuracy": float((base == y).mean()), "predictions changed": 0.0}]
    for region, mask in (("border", border_mask(x.shape[1], width)), ("centre", centre_mask(x.shape[1], width))):
        for edit, fn in (("grey", grey_out), ("hue shift", shift_hue)):
            pred = predict(fn(x, mask))
            rows.append({"images": f"{region} {edit}", "accuracy": float((pred == y).mean()),
                         "predictions changed": float((pred != base).mean())})
    return rows
