"""Checks for the chapters beyond supervised training: SimCLR, distillation, federated learning and what
comes next."""

from __future__ import annotations

import numpy as np

from . import report

__all__ = ["check_negatives", "check_soft_targets", "check_fedavg_average", "check_head_params"]


def check_negatives(answer, batch_size: int = 256, loss: str = "nt_xent") -> bool:
    """How many negatives each anchor is contrasted with in one batch of `batch_size` images."""
    expected = {"nt_xent": 2 * batch_size - 2, "npairs": batch_size - 1}[loss]
    return report(answer == expected,
                  f"{expected}: " + ("all 2N views minus the anchor and its partner." if loss == "nt_xent"
                                     else "only the other view's N images, minus the partner."),
                  "count the candidates in the softmax, then remove the positive; NT-Xent uses both "
                  "views of every image, the n-pairs form only the other view.")


def check_soft_targets(answer, logits=(3.0, 1.0, 0.0), temperature: float = 4.0) -> bool:
    """The softened distribution softmax(logits / T) as a sequence of probabilities."""
    z = np.asarray(logits, float) / temperature
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    ok = answer is not None and np.shape(answer) == expected.shape and np.allclose(answer, expected, atol=1e-3)
    return report(ok, f"{np.round(expected, 3).tolist()}: flatter than the T=1 softmax, so the small "
                  "probabilities (the teacher's 'dark knowledge') carry weight.",
                  "divide the logits by the temperature before the softmax; the result must sum to 1.")


def check_fedavg_average(answer, client_weights=(1.0, 2.0, 4.0), client_sizes=(100, 300, 600)) -> bool:
    """The server's new weight after one FedAvg round: the example-weighted mean of the clients' weights."""
    w, n = np.asarray(client_weights, float), np.asarray(client_sizes, float)
    expected = float((w * n).sum() / n.sum())
    ok = answer is not None and np.allclose(answer, expected, atol=1e-6)
    return report(ok, f"{expected:g}: clients count in proportion to their number of examples.",
                  "weight each client's value by its share of all training examples, then add up.")


def check_head_params(answer, features: int = 64, num_classes: int = 100) -> bool:
    """Parameters a new classification head adds: one Dense layer from `features` to `num_classes`."""
    expected = features * num_classes + num_classes
    return report(answer == expected,
                  f"{expected:,}: a weight per feature and class, plus a bias per class; the encoder is "
                  "reused as it is.",
                  "the new head is one Dense layer: count its weight matrix (features x classes), then its "
                  "biases (one per class).")
