"""Checks for the training-strategy chapters: regularization, evaluation and troubleshooting."""

from __future__ import annotations

import numpy as np

from . import report

__all__ = ["check_mixup_label", "check_cutmix_weight", "check_top_k", "check_ece", "check_sorted_batches"]


def check_mixup_label(answer, lam: float = 0.7, a: int = 3, b: int = 5, num_classes: int = 10) -> bool:
    """The mixup label of an image of class a mixed with weight lam with an image of class b."""
    expected = np.zeros(num_classes)
    expected[a] += lam
    expected[b] += 1 - lam
    ok = answer is not None and np.shape(answer) == expected.shape and np.allclose(answer, expected)
    return report(ok, f"lam = {lam} on class {a}, {1 - lam:.1f} on class {b}, zero elsewhere; it sums to one.",
                  f"blend the two one-hot vectors with the same weights as the images: a vector of "
                  f"{num_classes} numbers.")


def check_cutmix_weight(answer, box: int = 16, size: int = 32) -> bool:
    """The label weight of the partner image when CutMix pastes a box x box patch into a size x size image."""
    expected = box * box / (size * size)
    ok = answer is not None and abs(float(answer) - expected) < 1e-6
    return report(ok, f"{expected:g}: the pasted patch covers {box * box} of {size * size} pixels.",
                  "the partner's label weight is the share of the image's area its patch covers.")


def check_top_k(answer, probs, labels, k: int = 2) -> bool:
    """Top-k accuracy of the given probabilities and integer labels."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    top = np.argsort(-probs, axis=1)[:, :k]
    expected = float((top == labels[:, None]).any(axis=1).mean())
    ok = answer is not None and abs(float(answer) - expected) < 1e-6
    return report(ok, f"{expected:g}: the share of rows whose true class is among the {k} largest.",
                  f"for each row, sort the classes by probability, keep the first {k}, and count the rows "
                  "whose true class is among them.")


def check_ece(answer, confidences=(0.9, 0.9, 0.9, 0.9, 0.6, 0.6), correct=(1, 1, 1, 0, 1, 0)) -> bool:
    """ECE with two bins (one per distinct confidence) of the given predictions."""
    conf, corr = np.asarray(confidences, float), np.asarray(correct, float)
    expected = sum((conf == c).mean() * abs(corr[conf == c].mean() - c) for c in np.unique(conf))
    ok = answer is not None and abs(float(answer) - expected) < 1e-6
    return report(ok, f"{expected:.4f}: each bin's |accuracy - confidence|, weighted by its share of samples.",
                  "group the predictions by confidence; per group take |accuracy - confidence|; "
                  "average the groups weighted by their size.")


def check_sorted_batches(answer, per_class: int = 5000, batch_size: int = 100) -> bool:
    """How many consecutive gradient steps see only one class when the data is sorted by label."""
    expected = per_class // batch_size
    ok = answer == expected
    return report(ok, f"{expected}: each class fills {expected} whole batches in a row, so the network is pushed "
                  "towards one class for that long, then towards the next.",
                  "count how many batches the images of one class fill when they come one after another.")
