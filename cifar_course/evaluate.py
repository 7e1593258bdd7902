"""Evaluation beyond one accuracy number: top-k, confusion, per-class report, calibration, mistakes.

Introduced in the evaluation chapter. Everything works on predicted probabilities (N, K) and integer
labels (N,), so it applies to any model; `predict` produces both from a model and a dataset, and
`predict_outputs` is the package's one batched-inference loop over an array of images.
"""

from __future__ import annotations

import numpy as np


def predict_outputs(model, images, batch_size: int = 500, preprocess=None) -> np.ndarray:
    """The model's outputs (probabilities, logits or features) for `images`, `batch_size` at a time, in
    inference mode, as one float32 NumPy array.

    images: an array (N, H, W, C), or a dataset of image batches (then batch_size is the dataset's).
    preprocess: a function applied to each batch before the model, e.g. `lambda b: normalize(b, stats)`,
    so a whole uint8 set is never converted to float at once.
    """
    if hasattr(images, "element_spec"):  # a tf.data dataset: already batched
        batches = iter(images)
    else:
        images = np.asarray(images)
        batches = (images[start:start + batch_size] for start in range(0, len(images), batch_size))
    outputs = [np.asarray(model(batch if preprocess is None else preprocess(batch), training=False),
                          np.float32) for batch in batches]
    if not outputs:
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    return np.concatenate(outputs)


def predict(model, ds):
    """Class probabilities and integer labels over a batched dataset of (images, labels).

    One-hot labels are turned into integers. Returns (probs (N, K) float32, labels (N,) int).
    """
    probs, labels = [], []
    for images, y in ds:
        probs.append(np.asarray(model(images, training=False), np.float32))
        y = np.asarray(y)
        labels.append(y.argmax(-1) if y.ndim == 2 else y.reshape(-1))
    return np.concatenate(probs), np.concatenate(labels).astype(np.int64)


def _check(probs, labels):
    probs, labels = np.asarray(probs), np.asarray(labels).reshape(-1)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"Expected probabilities (N, K) and N integer labels, got shapes {probs.shape} "
                         f"and {labels.shape}. Use argmax to turn one-hot labels into integers.")
    return probs, labels


def top_k_accuracy(probs, labels, k: int = 1) -> float:
    """Share of samples whose true class is among the k most probable ones
    (scikit-learn's `top_k_accuracy_score`, with our shape checks and every class counted)."""
    import warnings

    from sklearn.metrics import top_k_accuracy_score

    probs, labels = _check(probs, labels)
    num_classes = probs.shape[1]
    scores = probs[:, 1] if num_classes == 2 else probs  # scikit-learn takes one score column for two classes
    with warnings.catch_warnings():  # k >= num_classes: a perfect score, which is what we mean
        warnings.simplefilter("ignore")
        return float(top_k_accuracy_score(labels, scores, k=k, labels=np.arange(num_classes)))


def confusion(labels, predicted, num_classes: int = 10) -> np.ndarray:
    """Confusion matrix (rows: true class, columns: predicted class), from scikit-learn."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, predicted, labels=np.arange(num_classes))


def confused_pairs(matrix, class_names, n: int | None = None) -> list[dict]:
    """The most confused pairs of classes, both directions added (cat -> dog and dog -> cat), as rows.

    Why: a confusion matrix says which mistakes a network makes; summing each pair's two off-diagonal
    cells ranks the pairs it cannot tell apart. Rows: pair ("cat/dog", in class order), errors, and
    share of all errors; most confused first, the first `n` (all pairs when None).
    """
    matrix = np.asarray(matrix)
    errors = matrix.sum() - np.trace(matrix)
    rows = []
    for i in range(len(matrix)):
        for j in range(i + 1, len(matrix)):
            count = int(matrix[i, j] + matrix[j, i])
            rows.append({"pair": f"{class_names[i]}/{class_names[j]}", "errors": count,
                         "share of all errors": count / errors if errors else 0.0})
    rows.sort(key=lambda r: -r["errors"])  # stable: ties stay in class order
    return rows[:n] if n is not None else rows


def class_report(labels, predicted, class_names) -> list[dict]:
    """Per-class precision, recall, F1 and support (scikit-learn's classification_report) as table rows,
    with the macro average last."""
    from sklearn.metrics import classification_report

    rep = classification_report(labels, predicted, labels=np.arange(len(class_names)),
                                target_names=list(class_names), output_dict=True, zero_division=0)
    rows = []
    for name in [*class_names, "macro avg"]:
        r = rep[name]
        rows.append({"class": name, "precision": r["precision"], "recall": r["recall"],
                     "f1": r["f1-score"], "support": int(r["support"])})
    return rows


def calibration_bins(probs, labels, n_bins: int = 15) -> list[dict]:
    """Reliability-diagram bins: samples grouped by their top confidence into equal-width bins.

    Each bin: its range, count, mean confidence and accuracy. A calibrated model has accuracy equal to
    confidence in every bin.
    """
    probs, labels = _check(probs, labels)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)  # (lo, hi], first [0, hi]
    rows = []
    for b in range(n_bins):
        inside = index == b
        n = int(inside.sum())
        rows.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n,
                     "confidence": float(conf[inside].mean()) if n else float("nan"),
                     "accuracy": float(correct[inside].mean()) if n else float("nan")})
    return rows


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): |accuracy - confidence| per bin, weighted by the bin's share of samples."""
    probs, labels = _check(probs, labels)
    total = len(labels)
    return float(sum(r["count"] / total * abs(r["accuracy"] - r["confidence"])
                     for r in calibration_bins(probs, labels, n_bins) if r["count"]))


def worst_mistakes(probs, labels, n: int = 16) -> np.ndarray:
    """Indices of the n most confident wrong predictions, most confident first."""
    probs, labels = _check(probs, labels)
    wrong = np.flatnonzero(probs.argmax(axis=1) != labels)
    conf = probs[wrong].max(axis=1)
    return wrong[np.argsort(-conf, kind="stable")][:n]


def evaluate_model(model, ds, class_names=None, n_bins: int = 15) -> dict:
    """Everything the evaluation chapter reports, in one pass over `ds`.

    Returns probs, labels, predicted, top1/top2/top3, ece, confusion (matrix) and report (rows).
    """
    from .data import CLASS_NAMES

    class_names = list(class_names or CLASS_NAMES)
    probs, labels = predict(model, ds)
    predicted = probs.argmax(axis=1)
    return {
        "probs": probs, "labels": labels, "predicted": predicted,
        **{f"top{k}": top_k_accuracy(probs, labels, k) for k in (1, 2, 3)},
        "ece": expected_calibration_error(probs, labels, n_bins),
        "confusion": confusion(labels, predicted, len(class_names)),
        "report": class_report(labels, predicted, class_names),
    }

