"""Knowledge distillation: a small student learns from a trained teacher's softened outputs (Hinton et al.
2015). Introduced in the distillation chapter.

Both networks output logits. The student's loss on a batch is

    alpha * CE(labels, student)  +  (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The T^2 keeps the soft term's gradients the same size whatever the temperature T (they shrink as 1/T^2).

The teacher's logits come either from the teacher itself on every batch (online: it sees exactly the
augmented view the student sees, at the price of a teacher forward pass per step), or precomputed once
per training image and its mirror image (`teacher_logits`, `make_distillation_dataset`): a random flip
then picks the matching logits, so teacher and student still see the same view up to a shift of a few
pixels, and a student step costs what a scratch step costs.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow import keras

from . import config
from .optim import make_optimizer
from .pipeline import normalize, pad_crop_flip
from .schedules import make_schedule
from .train import outputs_probabilities


def distillation_loss(teacher_logits, student_logits, temperature: float):
    """T^2 * KL(teacher || student) on temperature-softened distributions, averaged over the batch."""
    p_teacher = tf.nn.softmax(teacher_logits / temperature, axis=-1)
    log_p_teacher = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
    log_p_student = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    kl = tf.reduce_sum(p_teacher * (log_p_teacher - log_p_student), axis=-1)
    return temperature**2 * tf.reduce_mean(kl)


def logits_model(model):
    """`model` up to its logits: a model ending in a softmax layer loses that layer (the flagship ends
    in a float32 softmax after its logit scale); a model that outputs logits is returned as it is."""
    if not outputs_probabilities(model):
        return model
    return keras.Model(model.input, model.layers[-2].output, name=f"{model.name}_logits")


def teacher_logits(teacher, images, stats=None, batch_size: int = 1000, mirror: bool = True):
    """The teacher's float32 logits for uint8 `images` (N, 32, 32, 3), computed once.

    Returns (N, 10), or with mirror=True (N, 2, 10): [:, 0] for each image, [:, 1] for its mirror image,
    which is what `make_distillation_dataset` needs to flip images and targets together.
    """
    net = logits_model(teacher)
    views = [lambda b: b, lambda b: tf.reverse(b, axis=[2])] if mirror else [lambda b: b]
    out = []
    for start in range(0, len(images), batch_size):
        batch = normalize(images[start:start + batch_size], stats)
        out.append(np.stack([tf.cast(net(view(batch), training=False), tf.float32).numpy()
                             for view in views], axis=1))
    logits = np.concatenate(out)
    return logits if mirror else logits[:, 0]


def make_distillation_dataset(x, y, logits, batch_size: int = 128, stats=None, pad: int = 4,
                              seed: int = 0):
    """Training batches of (images, labels, teacher logits) for a `Distiller` without a teacher.

    logits: `teacher_logits(..., mirror=True)`, (N, 2, num_classes). Each image is mirrored at random
    with its target switched to the mirror image's logits, then shifted by up to `pad` pixels (reflect
    padding), as the "padcrop" augmentation of make_dataset does.
    """
    x, y = np.asarray(x), np.asarray(y).reshape(-1).astype(np.int32)
    logits = np.asarray(logits, np.float32)
    if not (len(x) == len(y) == len(logits)) or logits.ndim != 3 or logits.shape[1] != 2:
        raise ValueError(f"Need as many images, labels and (N, 2, classes) logits; got {len(x)} images, "
                         f"{len(y)} labels, logits of shape {logits.shape}.")
    ds = tf.data.Dataset.from_tensor_slices((x, y, logits)).cache()
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size, drop_remainder=True)

    def prepare(images, labels, both):
        images = tf.cast(images, tf.float32)
        mirrored = tf.random.uniform([tf.shape(images)[0]]) < 0.5  # (B,)
        images = tf.where(mirrored[:, None, None, None], tf.reverse(images, axis=[2]), images)
        targets = tf.where(mirrored[:, None], both[:, 1], both[:, 0])  # (B, classes)
        images = pad_crop_flip(images, pad=pad, flip=False)
        return normalize(images, stats), labels, targets

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class Distiller(keras.Model):
    """Trains `student` against the labels and a teacher's logits; evaluates (and predicts) as the student.

    teacher: a frozen model run on every batch (online), or None when the dataset brings the teacher's
    logits as a third element (make_distillation_dataset). Models must output logits (`logits=True`).
    """

    def __init__(self, student, teacher=None, **kwargs):
        super().__init__(**kwargs)
        self.student, self.teacher = student, teacher
        if teacher is not None:
            self.teacher.trainable = False

    def compile(self, optimizer="adam", metrics=("accuracy",), alpha: float = 0.1, temperature: float = 4.0,
                **kwargs):
        """Args:
            alpha: weight of the hard-label cross-entropy; 1 - alpha goes to the teacher's soft targets.
            temperature: T > 0 softens both distributions; T = 1 is the plain softmax.
        """
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        super().compile(optimizer=optimizer, metrics=list(metrics), **kwargs)
        self.alpha, self.temperature = alpha, float(temperature)
        self.hard_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.hard_tracker = keras.metrics.Mean(name="student_loss")
        self.soft_tracker = keras.metrics.Mean(name="distillation_loss")

    def call(self, images, training=False):
        return self.student(images, training=training)

    def compute_losses(self, images, labels, teacher_logits=None, training=False):
        """(total, hard, soft, student logits) of a batch: what train_step minimizes.

        teacher_logits: precomputed ones, or None to run the teacher on `images`.
        """
        if teacher_logits is None:
            if self.teacher is None:
                raise ValueError("This Distiller has no teacher: the dataset must bring the teacher's "
                                 "logits as (images, labels, teacher_logits).")
            teacher_logits = tf.cast(self.teacher(images, training=False), tf.float32)
        student_logits = self.student(images, training=training)
        hard = self.hard_loss(labels, student_logits)
        soft = distillation_loss(teacher_logits, student_logits, self.temperature)
        return self.alpha * hard + (1 - self.alpha) * soft, hard, soft, student_logits

    def train_step(self, data):
        images, labels, teacher_logits = _unpack(data)
        with tf.GradientTape() as tape:
            total, hard, soft, logits = self.compute_losses(images, labels, teacher_logits, training=True)
        grads = tape.gradient(total, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
        return self._update(total, hard, soft, labels, logits)

    def test_step(self, data):
        images, labels, teacher_logits = _unpack(data)
        if teacher_logits is None and self.teacher is None:  # plain (images, labels): score the student
            logits = self.student(images, training=False)
            self.compiled_metrics.update_state(labels, logits)
            return {m.name: m.result() for m in super().metrics}
        total, hard, soft, logits = self.compute_losses(images, labels, teacher_logits)
        return self._update(total, hard, soft, labels, logits)

    def _update(self, total, hard, soft, labels, logits):
        self.loss_tracker.update_state(total)
        self.hard_tracker.update_state(hard)
        self.soft_tracker.update_state(soft)
        self.compiled_metrics.update_state(labels, logits)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, self.hard_tracker, self.soft_tracker] + super().metrics


def fit_student(build_student, x, y, logits, epochs: int, alpha: float = 0.1, temperature: float = 4.0,
                batch_size: int = 128, learning_rate: float = 2e-3, stats=None, pad: int = 4, seed: int = 0):
    """Build a student with `build_student()` (a model with logits out) and train it on precomputed
    teacher `logits` (teacher_logits(..., mirror=True)); alpha=1 trains it from scratch (the soft term
    then has weight 0). Returns the Distiller: `.student` is the trained student.

    Scratch and distilled runs of one seed share everything but the loss: initial weights, batches, flips
    and shifts, Adam with cosine decay over the same steps.
    """
    config.seed_everything(seed)
    student = build_student()
    ds = make_distillation_dataset(x, y, logits, batch_size, stats=stats, pad=pad, seed=seed)
    steps = epochs * (len(x) // batch_size)
    distiller = Distiller(student)
    distiller.compile(optimizer=make_optimizer("adam", make_schedule("cosine", learning_rate, steps)),
                      alpha=alpha, temperature=temperature)
    distiller.fit(ds, epochs=epochs, verbose=0)
    return distiller


def compare_with_teacher(student, x, y, teacher_test_logits, stats=None, temperature: float = 4.0,
                         batch_size: int = 1000) -> dict:
    """How well `student` does and how close it is to its teacher on held-out images: test accuracy,
    agreement (the share of images where student and teacher pick the same class) and the soft term
    T^2 * KL(teacher || student) at `temperature`, the quantity distillation lowers."""
    logits = np.concatenate([student(normalize(x[i:i + batch_size], stats), training=False).numpy()
                             for i in range(0, len(x), batch_size)])
    teacher_test_logits = np.asarray(teacher_test_logits, np.float32)
    return {"accuracy": float((logits.argmax(1) == np.asarray(y).reshape(-1)).mean()),
            "agreement": float((logits.argmax(1) == teacher_test_logits.argmax(1)).mean()),
            "kl": float(distillation_loss(teacher_test_logits, logits, temperature))}


def plot_students(scratch: dict, distilled: dict, by_temperature: dict, temperature: float):
    """Two panels: test accuracy per seed, scratch against distilled (`scratch`, `distilled`: seed ->
    accuracy), and the distilled student against temperature (`by_temperature`: T -> accuracy, one seed)
    beside the scratch students' mean and range. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    seeds = sorted(scratch)
    left.plot(seeds, [scratch[s] for s in seeds], "o--", color="grey", label="from scratch")
    left.plot(seeds, [distilled[s] for s in seeds], "o-", color="C0", label=f"distilled, T = {temperature:g}")
    left.set_xticks(seeds)
    left.set_xlabel("seed (initial weights and batch order)")
    left.set_ylabel("test accuracy")
    left.legend(fontsize=8)
    temps = sorted(by_temperature)
    values = np.array(list(scratch.values()))
    right.axhspan(values.min(), values.max(), color="grey", alpha=0.25, label="from scratch (range)")
    right.axhline(values.mean(), color="grey", linestyle="--", label="from scratch (mean)")
    right.plot(temps, [by_temperature[t] for t in temps], "o-", color="C0", label="distilled")
    right.set_xscale("log", base=2)
    right.set_xticks(temps, [f"{t:g}" for t in temps])
    right.set_xlabel("temperature T")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _unpack(data):
    """(images, labels) or (images, labels, teacher logits) -> three, the last None when absent."""
    if len(data) == 3:
        return data
    images, labels = data
    return images, labels, None


def soft_targets(logits, temperature: float):
    """The teacher's softened class probabilities, to see what a temperature does to them."""
    return tf.nn.softmax(tf.convert_to_tensor(logits, tf.float32) / temperature, axis=-1).numpy()
