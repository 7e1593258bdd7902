"""SimCLR: self-supervised pre-training by contrasting two augmented views of each image (Chen et al. 2020).

Introduced in the SimCLR chapter. The pieces: a strong augmentation pipeline that runs on whole batches,
an encoder (any course network cut at its global average pooling) plus a projection head, the NT-Xent loss
written out, the tensorflow-addons n-pairs shortcut many Keras examples use for comparison, a `SimCLR` model whose
`train_step` contrasts the views, and the ways to judge frozen features: a kNN monitor, linear evaluation
and fine-tuning with few labels (`fine_tune`, optionally linear probe first).
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras import layers

from .data import stratified_indices
from .evaluate import predict_outputs
from .pipeline import make_dataset, normalize
from .schedules import make_schedule
from .train import train_model

# ------------------------------------------------------------------------------------------------
# Augmentations: float batches (B, H, W, 3) in [0, 1] in, same out; a different draw for every image.


def random_resized_crop(images, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """Crop a random box covering `scale` of the area with aspect ratio in `ratio`, resize it back."""
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    area = tf.random.uniform([batch], *scale)
    log_ratio = tf.random.uniform([batch], math.log(ratio[0]), math.log(ratio[1]))
    aspect = tf.exp(log_ratio)
    h = tf.clip_by_value(tf.sqrt(area / aspect), 0.0, 1.0)  # box height, width as fractions of the image
    w = tf.clip_by_value(tf.sqrt(area * aspect), 0.0, 1.0)
    y0 = tf.random.uniform([batch]) * (1.0 - h)
    x0 = tf.random.uniform([batch]) * (1.0 - w)
    boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)  # (B, 4) normalized [y1, x1, y2, x2]
    return tf.image.crop_and_resize(images, boxes, tf.range(batch), size)


def random_flip(images):
    """Mirror a random half of the batch left-right."""
    flip = tf.random.uniform([tf.shape(images)[0], 1, 1, 1]) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def _grayscale(images):
    return tf.repeat(tf.image.rgb_to_grayscale(images), 3, axis=-1)


def color_jitter(images, strength: float = 0.5, p: float = 0.8):
    """Random brightness, contrast, saturation and hue (SimCLR's strength s: 0.8s, 0.8s, 0.8s, 0.2s),
    applied to a random `p` of the batch."""
    batch = tf.shape(images)[0]

    def factor(amount):  # (B, 1, 1, 1) multiplicative factors in [1 - amount, 1 + amount]
        return tf.random.uniform([batch, 1, 1, 1], 1.0 - amount, 1.0 + amount)

    x = images * factor(0.8 * strength)  # brightness
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * factor(0.8 * strength) + mean  # contrast
    gray = _grayscale(x)
    x = gray + (x - gray) * factor(0.8 * strength)  # saturation
    hsv = tf.image.rgb_to_hsv(tf.clip_by_value(x, 0.0, 1.0))
    shift = tf.random.uniform([batch, 1, 1], -0.2 * strength, 0.2 * strength)
    hue = tf.math.floormod(hsv[..., 0] + shift, 1.0)
    x = tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))
    apply = tf.random.uniform([batch, 1, 1, 1]) < p
    return tf.clip_by_value(tf.where(apply, x, images), 0.0, 1.0)


def random_grayscale(images, p: float = 0.2):
    """Drop colour from a random `p` of the batch."""
    apply = tf.random.uniform([tf.shape(images)[0], 1, 1, 1]) < p
    return tf.where(apply, _grayscale(images), images)


def simclr_augment(images, strength: float = 0.5, crop_scale=(0.2, 1.0)):
    """One random view of every image: crop-resize, flip, colour jitter, grayscale ([0, 1] floats)."""
    x = random_resized_crop(images, scale=crop_scale)
    x = random_flip(x)
    x = color_jitter(x, strength=strength)
    return random_grayscale(x)


def make_views_dataset(x, batch_size: int = 256, stats=None, strength: float = 0.5, seed: int = 0,
                       crop_scale=(0.2, 1.0)):
    """Batches of two independent views (view1, view2) of the same images, standardized by `stats`.

    Labels are not used: the pair is the only supervision SimCLR gets.
    """
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"Expected images of shape (N, H, W, 3), got {x.shape}.")
    if len(x) < batch_size:
        raise ValueError(f"{len(x)} images cannot fill one batch of {batch_size}: lower batch_size.")

    def views(batch):
        batch = tf.cast(batch, tf.float32) / 255.0
        v1 = simclr_augment(batch, strength, crop_scale)
        v2 = simclr_augment(batch, strength, crop_scale)
        return normalize(v1 * 255.0, stats), normalize(v2 * 255.0, stats)

    ds = tf.data.Dataset.from_tensor_slices(x).cache().shuffle(len(x), seed=seed)
    ds = ds.batch(batch_size, drop_remainder=True)  # NT-Xent needs full batches of negatives
    return ds.map(views, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------------
# Encoder and projection head


def encoder_from(model, name: str = "encoder"):
    """The feature extractor of a course classifier: everything up to its global average pooling."""
    pools = [layer for layer in model.layers if isinstance(layer, layers.GlobalAveragePooling2D)]
    if not pools:
        raise ValueError(f"{model.name} has no GlobalAveragePooling2D layer to cut at; build it with a "
                         "'gap' head (cc.build_small_cnn(head='gap'), cc.build_resnet(...)).")
    return keras.Model(model.input, pools[-1].output, name=name)


def build_projection_head(input_dim: int, hidden: int = 256, output_dim: int = 128):
    """The MLP g(h) the loss is computed on: Dense-BN-ReLU, Dense. Discarded after pre-training."""
    inputs = keras.Input((input_dim,))
    x = layers.Dense(hidden, use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    return keras.Model(inputs, layers.Dense(output_dim)(x), name="projection_head")


# ------------------------------------------------------------------------------------------------
# Losses: z1, z2 are (N, d) projections of the two views; row i of z1 and row i of z2 are a positive pair.


def nt_xent_loss(z1, z2, temperature: float = 0.5):
    """NT-Xent (normalized temperature-scaled cross-entropy), as in SimCLR.

    All 2N projections are candidates: each one must pick out its partner among the 2N - 1 others (its
    own view's other images count as negatives too), and the loss averages both directions.
    """
    z = tf.math.l2_normalize(tf.concat([z1, z2], axis=0), axis=1)  # (2N, d)
    n = tf.shape(z1)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature  # (2N, 2N) cosine similarities / T
    logits = logits - 1e9 * tf.eye(2 * n)  # an image is not its own candidate
    partners = tf.concat([tf.range(n, 2 * n), tf.range(n)], axis=0)  # i <-> i + N
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(partners, logits)
    return tf.reduce_mean(loss)


def npairs_loss(z1, z2, temperature: float = 0.5):
    """The n-pairs shortcut: `tfa.losses.npairs_loss` on the (N, N) view-1 x view-2 similarities.

    Row i must pick its partner among view 2's N images only (N - 1 negatives, none from its own view),
    and only view 1 asks: one direction. tensorflow-addons is end of life (no releases after 2024);
    in Keras 3 write the cross-entropy directly, as `npairs_loss_direct` does.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow_addons as tfa
    z1 = tf.math.l2_normalize(z1, axis=1)
    z2 = tf.math.l2_normalize(z2, axis=1)
    logits = tf.matmul(z1, z2, transpose_b=True) / temperature  # (N, N)
    return tfa.losses.npairs_loss(tf.range(tf.shape(z1)[0]), logits)


def npairs_loss_direct(z1, z2, temperature: float = 0.5):
    """What `npairs_loss` computes when every image is its own class: cross-entropy over view 2."""
    z1 = tf.math.l2_normalize(z1, axis=1)
    z2 = tf.math.l2_normalize(z2, axis=1)
    logits = tf.matmul(z1, z2, transpose_b=True) / temperature
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.range(tf.shape(z1)[0]), logits))


LOSSES = {"nt_xent": nt_xent_loss, "npairs": npairs_loss}


# ------------------------------------------------------------------------------------------------
# The model: train_step contrasts the two views


class SimCLR(keras.Model):
    """Encoder + projection head trained on (view1, view2) batches with a contrastive loss.

    `loss` names an entry of LOSSES (or is a function of (z1, z2, temperature)). Logs the loss and the
    contrastive accuracy: how often a view-1 image's nearest view-2 projection is its own partner.
    """

    def __init__(self, encoder, head, loss: str = "nt_xent", temperature: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if isinstance(loss, str) and loss not in LOSSES:
            raise ValueError(f"Unknown contrastive loss {loss!r}: choose one of {list(LOSSES)}.")
        self.encoder, self.head = encoder, head
        self.contrastive_loss = LOSSES[loss] if isinstance(loss, str) else loss
        self.temperature = temperature
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="contrastive_accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def call(self, images, training=False):
        return self.head(self.encoder(images, training=training), training=training)

    def train_step(self, data):
        view1, view2 = data
        with tf.GradientTape() as tape:
            z1 = self(view1, training=True)
            z2 = self(view2, training=True)
            loss = self.contrastive_loss(z1, z2, self.temperature)
        variables = self.encoder.trainable_variables + self.head.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        sim = tf.matmul(tf.math.l2_normalize(z1, 1), tf.math.l2_normalize(z2, 1), transpose_b=True)
        hits = tf.cast(tf.equal(tf.argmax(sim, axis=1, output_type=tf.int32), tf.range(tf.shape(z1)[0])),
                       tf.float32)
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(tf.reduce_mean(hits))
        return {m.name: m.result() for m in self.metrics}


class KeepWeights(keras.callbacks.Callback):
    """Copies `model`'s weights at the end of the given (1-based) epochs into `self.weights[epoch]`."""

    def __init__(self, model, epochs=()):
        super().__init__()
        self.target, self.epochs, self.weights = model, set(epochs), {}

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.epochs:
            self.weights[epoch + 1] = [w.copy() for w in self.target.get_weights()]


def pretrain(encoder, views, epochs: int, *, loss: str = "nt_xent", temperature: float = 0.5,
             learning_rate: float = 1e-3, schedule_epochs: int | None = None, warmup_fraction: float = 0.05,
             head=None, monitor=None, keep_epochs=(), callbacks=()):
    """Pre-train `encoder` (in place) with SimCLR: Adam on a linear warm-up, then cosine decay.

    The schedule spans `schedule_epochs` (default `epochs`): a run stopped after `epochs` of a longer
    schedule has taken exactly the steps the long run took up to there, so short comparison runs line up
    with the long run at the same epoch. Returns a dict: the Keras history (with `knn_accuracy` when a
    `KNNMonitor` is passed), the projection `head`, `weights` (the encoder's at each of `keep_epochs`)
    and `wall_time_s`.
    """
    steps = int(views.cardinality()) * (schedule_epochs or epochs)
    schedule = make_schedule("cosine", learning_rate, steps, warmup_steps=int(warmup_fraction * steps))
    model = SimCLR(encoder, head or build_projection_head(encoder.output_shape[-1]), loss=loss,
                   temperature=temperature)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    keep = KeepWeights(encoder, keep_epochs)
    start = time.perf_counter()
    history = model.fit(views, epochs=epochs, verbose=0,
                        callbacks=[*([monitor] if monitor else []), keep, *callbacks])
    return {**history.history, "head": model.head, "weights": keep.weights,
            "wall_time_s": time.perf_counter() - start}


# ------------------------------------------------------------------------------------------------
# Judging frozen features


def extract_features(encoder, x, stats=None, batch_size: int = 1000) -> np.ndarray:
    """Frozen-encoder features (N, d) of uint8 images, no augmentation."""
    return predict_outputs(encoder, x, batch_size, preprocess=lambda b: normalize(b, stats))


def knn_accuracy(train_features, train_labels, test_features, test_labels, k: int = 20,
                 num_classes: int = 10, chunk: int = 1000) -> float:
    """Accuracy of a k-nearest-neighbour vote (cosine similarity, votes weighted by similarity)."""
    train = train_features / (np.linalg.norm(train_features, axis=1, keepdims=True) + 1e-12)
    test = test_features / (np.linalg.norm(test_features, axis=1, keepdims=True) + 1e-12)
    train_labels = np.asarray(train_labels).reshape(-1)
    test_labels = np.asarray(test_labels).reshape(-1)
    k = min(k, len(train))
    correct = 0
    for start in range(0, len(test), chunk):
        sim = test[start:start + chunk] @ train.T  # (chunk, N_train)
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(sim), num_classes))
        np.add.at(votes, (np.arange(len(sim))[:, None], train_labels[nearest]),
                  np.take_along_axis(sim, nearest, axis=1))
        correct += int((votes.argmax(1) == test_labels[start:start + chunk]).sum())
    return correct / len(test)


class KNNMonitor(keras.callbacks.Callback):
    """Adds `knn_accuracy` of the frozen encoder to the logs every `every` epochs: a label-free run's
    cheap progress signal (labels are used only to score, never to train)."""

    def __init__(self, encoder, x_train, y_train, x_test, y_test, stats=None, k: int = 20, every: int = 1):
        super().__init__()
        self.encoder, self.stats, self.k, self.every = encoder, stats, k, max(1, every)
        self.data = (x_train, y_train, x_test, y_test)
        self.history = []  # (epoch, accuracy)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        x_train, y_train, x_test, y_test = self.data
        acc = knn_accuracy(extract_features(self.encoder, x_train, self.stats), y_train,
                           extract_features(self.encoder, x_test, self.stats), y_test, self.k)
        self.history.append((epoch + 1, acc))
        if logs is not None:
            logs["knn_accuracy"] = acc


def linear_probe(f_train, y_train, f_test, y_test, epochs: int = 30, batch_size: int = 256,
                 learning_rate: float = 1e-3, num_classes: int = 10) -> float:
    """Test accuracy of a linear classifier (one Dense layer) trained on fixed, standardized features."""
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    f_train, f_test = (f_train - mean) / std, (f_test - mean) / std
    inputs = keras.Input((f_train.shape[1],))
    clf = keras.Model(inputs, layers.Dense(num_classes)(inputs))
    clf.compile(keras.optimizers.Adam(learning_rate),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    clf.fit(f_train, np.asarray(y_train).reshape(-1), batch_size=batch_size, epochs=epochs, verbose=0)
    return float(clf.evaluate(f_test, np.asarray(y_test).reshape(-1), verbose=0)[1])


def linear_eval(encoder, x_train, y_train, x_test, y_test, stats=None, epochs: int = 30,
                batch_size: int = 256, learning_rate: float = 1e-3, num_classes: int = 10) -> float:
    """Test accuracy of a linear classifier (one Dense layer) trained on frozen, standardized features."""
    return linear_probe(extract_features(encoder, x_train, stats), y_train,
                        extract_features(encoder, x_test, stats), y_test, epochs, batch_size,
                        learning_rate, num_classes)


def judge_features(encoder, x_train, y_train, x_test, y_test, stats=None, epochs: int = 30,
                   k: int = 20) -> dict:
    """kNN and linear-probe test accuracy of frozen features, from one feature pass over each split."""
    f_train = extract_features(encoder, x_train, stats)
    f_test = extract_features(encoder, x_test, stats)
    return {"kNN accuracy": knn_accuracy(f_train, y_train, f_test, y_test, k),
            "linear accuracy": linear_probe(f_train, y_train, f_test, y_test, epochs)}


def label_fraction(y, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified `fraction` of the labels (each class keeps its share, and at least
    one example: a smaller fraction is raised to one per class)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    y = np.asarray(y).reshape(-1)
    classes = len(np.unique(y))
    size = fraction if fraction == 1 or fraction * len(y) >= classes else classes
    return stratified_indices(y, size, seed)


def build_classifier(encoder, num_classes: int = 10, name: str = "classifier"):
    """Encoder plus a linear softmax layer: what fine-tuning trains end to end."""
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(encoder.output)
    return keras.Model(encoder.input, outputs, name=name)


def fine_tune(encoder, x, y, epochs: int, stats=None, *, probe_first: bool = False, batch_size: int = 64,
              learning_rate: float = 1e-3, schedule: str = "cosine", augment="padcrop",
              probe_epochs: int = 100, probe_learning_rate: float = 1e-2, seed: int = 0):
    """Train `build_classifier(encoder)` end to end on the labelled (x, y) and return it.

    probe_first: fit the new linear layer on frozen, unaugmented features before the first end-to-end
    step (linear probe, then fine-tune: Kumar et al. 2022). A random layer's first large gradients would
    otherwise flow into the pre-trained features and scramble them. The probe costs one feature pass.
    A fair comparison gives both starting points the same `epochs`, batches, augmentation and rate.
    schedule: the rate's decay (a name from SCHEDULES). Cosine to zero by default: at a constant rate, the
    final accuracy of a few epochs on a few thousand images depends on the last noisy steps (two runs of
    the SimCLR chapter's 10% fine-tune with the same settings ended 8 points apart).
    """
    classifier = build_classifier(encoder)
    if probe_first:
        features = extract_features(encoder, x, stats)
        inputs = keras.Input((features.shape[1],))
        head = classifier.layers[-1]  # shared: fitting the probe fits the classifier's own layer
        probe = keras.Model(inputs, head(inputs))
        probe.compile(keras.optimizers.Adam(probe_learning_rate), "sparse_categorical_crossentropy")
        probe.fit(features, np.asarray(y).reshape(-1), batch_size=256, epochs=probe_epochs, verbose=0)
    labelled = make_dataset(x, y, min(batch_size, len(x)), training=True, augment=augment, stats=stats,
                            seed=seed)
    train_model(classifier, labelled, epochs, learning_rate=learning_rate, schedule=schedule,
                progress_every=None)
    return classifier
