"""Optimizers: Keras' own by name, and the two the flagship recipe adds (chapter 3).

`make_optimizer` configures Adam, AdamW or SGD. `SGDScaledBiases` lets a few variables (BatchNorm biases)
take larger steps; `Muon` orthogonalizes the steps of convolution kernels (`orthogonalize`). Both are small
subclasses of `keras.optimizers.SGD`, because the Keras 2 of TF 2.14 has neither a per-variable learning
rate nor Muon. `current_learning_rate` reads the rate an optimizer uses now, schedules included.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow import keras

OPTIMIZERS = ("adam", "adamw", "sgd")


def make_optimizer(name: str = "adam", learning_rate=1e-3, weight_decay: float = 0.0,
                   momentum: float = 0.9, nesterov: bool = True, clipnorm: float | None = None):
    """Adam, AdamW or SGD (with momentum, Nesterov by default).

    learning_rate: a float or a schedule. weight_decay is Keras' decoupled weight decay (the weights shrink
    by lr * weight_decay each step, separate from the gradient), for every optimizer; "adamw" is Adam with
    it on (default 1e-4 if you give none). clipnorm clips the gradients by their global norm.
    """
    name = name.lower()
    common = {"learning_rate": learning_rate, "global_clipnorm": clipnorm}
    if name == "adam":
        return keras.optimizers.Adam(weight_decay=weight_decay or None, **common)
    if name == "adamw":
        return keras.optimizers.AdamW(weight_decay=weight_decay or 1e-4, **common)
    if name == "sgd":
        return keras.optimizers.SGD(momentum=momentum, nesterov=nesterov and momentum > 0,
                                    weight_decay=weight_decay or None, **common)
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)} "
                     "or pass a keras optimizer object.")


class SGDScaledBiases(keras.optimizers.SGD):
    """SGD whose listed variables (the BatchNorm biases, in the flagship) take `bias_scaler` times larger
    gradient steps; weight decay still shrinks them by the same fraction as every other weight.

    BatchNorm biases are few and decide which units fire; airbench found they learn best with 64x the
    learning rate. Keras has no per-variable learning rate, so the gradient is scaled, which is the same
    thing for SGD with momentum.
    """

    def __init__(self, scaled_variables, bias_scaler: float = 64.0, **kwargs):
        super().__init__(**kwargs)
        self.bias_scaler = float(bias_scaler)
        self._scaled_keys = {self._var_key(v) for v in scaled_variables}

    def update_step(self, gradient, variable):
        if self._var_key(variable) in self._scaled_keys:
            gradient = gradient * tf.cast(self.bias_scaler, gradient.dtype)
        return super().update_step(gradient, variable)

    def get_config(self):
        return {**super().get_config(), "bias_scaler": self.bias_scaler}


def orthogonalize(matrix, steps: int = 3):
    """An approximately orthogonal matrix with the singular vectors of `matrix` (its singular values all
    pushed to roughly 0.5-1.5): Muon's quintic Newton-Schulz iteration, a few matrix products, no SVD."""
    a, b, c = 3.4445, -4.7750, 2.0315  # coefficients chosen for speed, not exact convergence (Jordan 2024)
    x = matrix / (tf.norm(matrix) + 1e-7)  # every singular value <= 1
    tall = matrix.shape[0] > matrix.shape[1]
    if tall:
        x = tf.transpose(x)
    for _ in range(steps):
        gram = x @ tf.transpose(x)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return tf.transpose(x) if tall else x


class Muon(SGDScaledBiases):
    """Muon (Jordan et al. 2024) for the convolution kernels, SGD for everything else.

    For each kernel in `muon_variables`: Nesterov momentum (`muon_momentum`), then the step is replaced by
    its orthogonalized version (`orthogonalize` of the kernel reshaped to a matrix, one column per filter),
    so every direction the gradient points in moves by about the same amount; the kernel is rescaled to
    norm sqrt(filters) first, which BatchNorm makes harmless and which keeps a step of `muon_learning_rate`
    a fixed fraction of the weights. That step follows the `learning_rate` schedule relative to its value
    at step 0. Other variables take the SGDScaledBiases step with `learning_rate` and weight decay; Muon
    kernels get no weight decay.

    Keras 3 ships keras.optimizers.Muon; the Keras 2 of TF 2.14 has none, hence this subclass.
    """

    def __init__(self, muon_variables, muon_learning_rate: float = 0.24, muon_momentum: float = 0.6,
                 scaled_variables=(), bias_scaler: float = 64.0, **kwargs):
        super().__init__(scaled_variables, bias_scaler, **kwargs)
        self.muon_learning_rate, self.muon_momentum = float(muon_learning_rate), float(muon_momentum)
        self._muon_keys = {self._var_key(v) for v in muon_variables}
        self.exclude_from_weight_decay(var_list=list(muon_variables))
        lr = self._learning_rate
        self._initial_lr = float(lr(0) if callable(lr) else keras.backend.get_value(lr))
        if self._initial_lr <= 0:  # Muon's steps follow the schedule's value relative to its first one
            raise ValueError("Muon needs a learning rate (schedule) that starts above 0, "
                             f"got {self._initial_lr}; ramp it up with a onecycle initial_fraction > 0.")

    def update_step(self, gradient, variable):
        if self._var_key(variable) not in self._muon_keys:
            return super().update_step(gradient, variable)
        fraction = tf.cast(self.learning_rate / self._initial_lr, variable.dtype)  # the schedule's shape
        mu = tf.cast(self.muon_momentum, variable.dtype)
        m = self.momentums[self._index_dict[self._var_key(variable)]]
        m.assign(mu * m + gradient)
        step = gradient + mu * m  # Nesterov
        filters = variable.shape[-1]
        variable.assign(variable * (filters ** 0.5 / (tf.norm(variable) + 1e-12)))
        update = tf.reshape(orthogonalize(tf.reshape(step, [-1, filters])), variable.shape)
        variable.assign_sub(self.muon_learning_rate * fraction * update)

    def get_config(self):
        return {**super().get_config(), "muon_learning_rate": self.muon_learning_rate,
                "muon_momentum": self.muon_momentum}


def current_learning_rate(optimizer) -> float:
    """The learning rate the optimizer uses at its current step (schedules included)."""
    lr = getattr(optimizer, "_learning_rate", None)  # Keras keeps the schedule object here
    if not isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        lr = optimizer.learning_rate  # legacy optimizers and tfa wrappers hand the schedule out here
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        lr = lr(optimizer.iterations)
    return float(keras.backend.get_value(lr))
