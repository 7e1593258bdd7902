"""Knowledge distillation: a small student learns from a trained teacher's softened outputs (Hinton et al.
2015). Introduced in the distillation chapter.

Both networks output logits. The student's loss on a batch is

    alpha * CE(labels, student)  +  (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The T^2 keeps the soft term's gradients the same size whatever the temperature T (they shrink as 1/T^2).
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow import keras


def distillation_loss(teacher_logits, student_logits, temperature: float):
    """T^2 * KL(teacher || student) on temperature-softened distributions, averaged over the batch."""
    p_teacher = tf.nn.softmax(teacher_logits / temperature, axis=-1)
    log_p_teacher = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
    log_p_student = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    kl = tf.reduce_sum(p_teacher * (log_p_teacher - log_p_student), axis=-1)
    return temperature**2 * tf.reduce_mean(kl)


class Distiller(keras.Model):
    """Trains `student` against the labels and a frozen `teacher`; evaluates (and predicts) as the student.

    Both models must output logits (build them with `logits=True`).
    """

    def __init__(self, student, teacher, **kwargs):
        super().__init__(**kwargs)
        self.student, self.teacher = student, teacher
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

    def compute_losses(self, images, labels, training=False):
        """(total, hard, soft) losses of a batch: the quantities train_step minimizes."""
        teacher_logits = self.teacher(images, training=False)
        student_logits = self.student(images, training=training)
        hard = self.hard_loss(labels, student_logits)
        soft = distillation_loss(teacher_logits, student_logits, self.temperature)
        return self.alpha * hard + (1 - self.alpha) * soft, hard, soft, student_logits

    def train_step(self, data):
        images, labels = data
        with tf.GradientTape() as tape:
            total, hard, soft, logits = self.compute_losses(images, labels, training=True)
        grads = tape.gradient(total, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
        return self._update(total, hard, soft, labels, logits)

    def test_step(self, data):
        images, labels = data
        total, hard, soft, logits = self.compute_losses(images, labels)
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


def soft_targets(logits, temperature: float):
    """The teacher's softened class probabilities, to see what a temperature does to them."""
    return tf.nn.softmax(tf.convert_to_tensor(logits, tf.float32) / temperature, axis=-1).numpy()
