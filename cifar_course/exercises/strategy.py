"""Checks for the training-strategy chapters: regularization, evaluation and troubleshooting."""

from __future__ import annotations

import numpy as np

from .checking import Mistake, as_array, call, compare, exercise, verdict

__all__ = ["check_mixup_label", "check_cutmix_weight", "check_top_k", "check_ece", "check_sorted_batches",
           "check_label_smoothing_loss", "check_mixup_batch", "check_top_k_accuracy",
           "check_calibration_error", "check_clip_by_global_norm"]


@exercise("04", "a mixup label", "drill", "the mixed label in `answer`")
def check_mixup_label(answer, lam: float = 0.7, a: int = 3, b: int = 5, num_classes: int = 10) -> str:
    """The mixup label of an image of class a mixed with weight lam with an image of class b."""
    expected = np.zeros(num_classes)
    expected[a] += lam
    expected[b] += 1 - lam
    ok = answer is not None and np.shape(answer) == expected.shape and np.allclose(answer, expected)
    return verdict(ok, f"lam = {lam} on class {a}, {1 - lam:.1f} on class {b}, zero elsewhere; it sums to one.",
                  f"blend the two one-hot vectors with the same weights as the images: a vector of "
                  f"{num_classes} numbers.")


@exercise("04", "a CutMix weight", "drill", "the weight in `answer`")
def check_cutmix_weight(answer, box: int = 16, size: int = 32) -> str:
    """The label weight of the partner image when CutMix pastes a box x box patch into a size x size image."""
    expected = box * box / (size * size)
    ok = answer is not None and abs(float(answer) - expected) < 1e-6
    return verdict(ok, f"{expected:g}: the pasted patch covers {box * box} of {size * size} pixels.",
                  "the labels are mixed in proportion to how much of the final image each source provides.")


@exercise("05", "top-2 accuracy by hand", "drill", "the accuracy in `answer`")
def check_top_k(answer, probs, labels, k: int = 2) -> str:
    """Top-k accuracy of the given probabilities and integer labels."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    top = np.argsort(-probs, axis=1)[:, :k]
    expected = float((top == labels[:, None]).any(axis=1).mean())
    ok = answer is not None and abs(float(answer) - expected) < 1e-6
    return verdict(ok, f"{expected:g}: the share of rows whose true class is among the {k} largest.",
                  f"a row counts when its true class is one of its {k} most probable classes; the answer is a "
                  "share of the rows, between 0 and 1.")


@exercise("05", "ECE by hand", "drill", "the ECE in `answer`")
def check_ece(answer, confidences=(0.9, 0.9, 0.9, 0.9, 0.6, 0.6), correct=(1, 1, 1, 0, 1, 0)) -> str:
    """ECE with two bins (one per distinct confidence) of the given predictions."""
    conf, corr = np.asarray(confidences, float), np.asarray(correct, float)
    expected = sum((conf == c).mean() * abs(corr[conf == c].mean() - c) for c in np.unique(conf))
    ok = answer is not None and abs(float(answer) - expected) < 1e-6
    return verdict(ok, f"{expected:.4f}: each bin's |accuracy - confidence|, weighted by its share of samples.",
                  "compare accuracy with confidence inside each bin, then combine the bins the way the "
                  "chapter's definition says (how much does each bin count?).")


@exercise("06", "steps on one class", "drill", "the number in `answer`")
def check_sorted_batches(answer, per_class: int = 5000, batch_size: int = 100) -> str:
    """How many consecutive gradient steps see only one class when the data is sorted by label."""
    expected = per_class // batch_size
    ok = answer == expected
    return verdict(ok, f"{expected}: each class fills {expected} whole batches in a row, so the network is pushed "
                  "towards one class for that long, then towards the next.",
                  "count how many batches the images of one class fill when they come one after another.")


# ------------------------------------------------------------------------------------------------
# Build exercises


def _tf_value_and_grad(fn, *inputs, wrt: int = 1):
    """fn(*inputs) as a NumPy value and its gradient with respect to inputs[wrt] (None if fn leaves
    TensorFlow, e.g. computes in NumPy)."""
    import tensorflow as tf

    inputs = [tf.constant(x, tf.float32) for x in inputs]
    with tf.GradientTape() as tape:
        tape.watch(inputs[wrt])
        value = call(fn, *inputs)
    try:
        grad = tape.gradient(value, inputs[wrt])
    except Exception:  # a NumPy result: not on the tape
        grad = None
    return as_array(value, "loss"), None if grad is None else grad.numpy()


def check_loss_function(fn, reference, inputs, what, variants, wrt: int = 1, atol: float = 1e-5,
                        extra=()):
    """Value (one number), then gradient with respect to inputs[wrt], against the reference loss.
    `extra`: arguments passed after the inputs (a temperature), to the learner's function only."""
    import tensorflow as tf

    value, grad = _tf_value_and_grad(lambda *xs: call(fn, *xs, *extra), *inputs, wrt=wrt)
    ref_inputs = [tf.constant(x, tf.float32) for x in inputs]
    with tf.GradientTape() as tape:
        tape.watch(ref_inputs[wrt])
        expected = reference(*ref_inputs)
    expected_grad = tape.gradient(expected, ref_inputs[wrt]).numpy()
    compare(value, expected.numpy(), what, atol=atol, rtol=1e-4, variants=variants, scalar=True)
    if grad is None:
        raise Mistake(f"the value is right, but TensorFlow cannot differentiate your {what}: write it "
                      "with tf operations (not NumPy) so training can use it")
    compare(grad, expected_grad, f"{what}'s gradient", atol=1e-5, rtol=1e-3)


@exercise("04", "label-smoothed cross-entropy", "build",
          "`smoothed_cross_entropy(y_true, y_pred, smoothing)`")
def check_label_smoothing_loss(loss_fn, smoothing: float = 0.1) -> str:
    """`smoothed_cross_entropy(y_true, y_pred, smoothing)`: one-hot labels (B, K) and probabilities
    (B, K) -> the batch's mean cross-entropy against the smoothed targets, as Keras computes it."""
    import tensorflow as tf
    from tensorflow import keras

    rng = np.random.default_rng(0)
    batch, k = 16, 10
    y_true = np.eye(k, dtype=np.float32)[rng.integers(0, k, batch)]
    logits = rng.normal(0, 2, (batch, k)).astype(np.float32)
    y_pred = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    keras_loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)

    def ce(targets):
        return float(np.mean(-(targets * np.log(y_pred)).sum(1)))

    def reference(t, z):  # the gradient is taken with respect to the logits z: Keras renormalizes
        return keras_loss(t, tf.nn.softmax(z))  # probabilities, which changes the gradient in p

    def learner_loss(t, z, s):
        return loss_fn(t, tf.nn.softmax(z), s)

    variants = [
        ("your loss equals the plain cross-entropy: the targets are not smoothed.", ce(y_true)),
        ("you spread the smoothing over the K - 1 wrong classes only; the course (and Keras) spread "
         "smoothing / K over all K classes, the true one included.",
         ce(y_true * (1 - smoothing) + (1 - y_true) * smoothing / (k - 1))),
        ("the true class keeps its full 1: smoothing takes from it what it gives to the others.",
         ce(y_true + smoothing / k)),
        (f"your loss is the batch's sum, {batch} times the mean: average over the batch.",
         batch * ce(y_true * (1 - smoothing) + smoothing / k)),
        ("your targets are (1 - smoothing) * one-hot without the uniform part added.",
         ce(y_true * (1 - smoothing)))]
    check_loss_function(learner_loss, reference, (y_true, logits), "loss", variants, extra=(smoothing,))
    return "the targets are (1 - smoothing) * one-hot + smoothing / K; value and gradient match Keras'."


@exercise("04", "mixup of a batch", "build", "`mix_batch(images, labels, lam, partner)`")
def check_mixup_batch(mix_fn) -> str:
    """`mix_batch(images, labels, lam, partner)`: images (B, H, W, C), one-hot labels (B, K), one weight
    lam[i] per image and the index partner[i] of its partner -> the mixed images and labels, as
    `cc.mixup` mixes them (there lam and partner are drawn at random)."""
    rng = np.random.default_rng(0)
    batch = 8
    images = rng.uniform(0, 1, (batch, 8, 8, 3)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    lam = rng.uniform(0.05, 0.95, batch).astype(np.float32)
    partner = rng.permutation(batch)
    out = call(mix_fn, images, labels, lam, partner)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mistake("return two things, the mixed images and the mixed labels: `return images, labels`")
    li, ll = lam[:, None, None, None], lam[:, None]
    expected_images = li * images + (1 - li) * images[partner]
    expected_labels = ll * labels + (1 - ll) * labels[partner]
    compare(out[0], expected_images, "mixed images", atol=1e-5, variants=[
        ("your images are weighted the wrong way round: lam goes with the image itself.",
         (1 - li) * images + li * images[partner]),
        ("your images are not mixed.", images),
        ("every image is mixed with the same weight: use each image's own lam.",
         lam.mean() * images + (1 - lam.mean()) * images[partner])])
    compare(out[1], expected_labels, "mixed labels", atol=1e-5, variants=[
        ("your labels are still one-hot: mix them with the same weights as the images.", labels),
        ("your labels are weighted the wrong way round: lam goes with the image's own label.",
         (1 - ll) * labels + ll * labels[partner])])
    return "images and labels blended with the same weight, so every mixed label still sums to 1."


@exercise("05", "top-k accuracy", "build", "`top_k_accuracy(probs, labels, k)`")
def check_top_k_accuracy(top_k_fn) -> str:
    """`top_k_accuracy(probs, labels, k)`: the share of rows whose true class is among their k most
    probable classes, as `cc.top_k_accuracy` computes it."""
    from ..evaluate import top_k_accuracy

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), 200)
    labels = rng.integers(0, 10, 200)
    for k in (1, 2, 3, 5):
        expected = top_k_accuracy(probs, labels, k)
        lowest = float((np.argsort(probs, 1)[:, :k] == labels[:, None]).any(1).mean())
        got = call(top_k_fn, probs, labels, k)
        compare(got, expected, f"top-{k} accuracy", atol=1e-9, scalar=True, variants=[
            ("you count the rows instead of taking their share (divide by the number of rows).",
             expected * len(labels)),
            (f"you take the {k} least probable classes: sort in descending order.", lowest),
            (f"you look at {k - 1} classes, not {k}.",
             top_k_accuracy(probs, labels, k - 1) if k > 1 else -1),
            (f"you look at {k + 1} classes, not {k}.", top_k_accuracy(probs, labels, k + 1))])
    return "right for k = 1, 2, 3 and 5 on 200 random predictions."


@exercise("05", "expected calibration error", "build", "`calibration_error(probs, labels, n_bins)`")
def check_calibration_error(ece_fn) -> str:
    """`calibration_error(probs, labels, n_bins)`: ECE with equal-width confidence bins, each bin's
    |accuracy - confidence| weighted by its share of the samples, as `cc.expected_calibration_error`."""
    from ..evaluate import calibration_bins, expected_calibration_error

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(10, 0.3), 500)
    # Under-confident at low confidence, over-confident at high: the bins' gaps differ in sign.
    right = rng.uniform(size=500) < 0.3 + 0.4 * probs.max(1)
    labels = np.where(right, probs.argmax(1), (probs.argmax(1) + rng.integers(1, 10, 500)) % 10)
    for n_bins in (10, 15):
        expected = expected_calibration_error(probs, labels, n_bins)
        rows = [r for r in calibration_bins(probs, labels, n_bins) if r["count"]]
        unweighted = float(np.mean([abs(r["accuracy"] - r["confidence"]) for r in rows]))
        signed = abs(sum(r["count"] / 500 * (r["accuracy"] - r["confidence"]) for r in rows))
        got = call(ece_fn, probs, labels, n_bins)
        compare(got, expected, f"ECE with {n_bins} bins", atol=1e-6, scalar=True, variants=[
            ("you average the bins equally: weight each bin by its share of the samples.", unweighted),
            ("the gaps of over- and under-confident bins cancel in your sum: take each bin's absolute "
             "gap.", signed)])
    return "right with 10 and 15 bins on 500 random predictions."


@exercise("06", "gradient clipping by global norm", "build", "`clip_by_global_norm(grads, max_norm)`")
def check_clip_by_global_norm(clip_fn) -> str:
    """`clip_by_global_norm(grads, max_norm)`: a list of gradient tensors -> the same list scaled by
    max_norm / global_norm when the global norm (of all tensors together) exceeds max_norm, unchanged
    otherwise; the reference is `tf.clip_by_global_norm`."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.normal(0, s, shape), tf.float32)
             for s, shape in [(1.0, (3, 3, 4)), (0.1, (4,)), (3.0, (4, 5))]]
    norm = float(tf.linalg.global_norm(grads))
    for max_norm in (norm / 4, 2 * norm):  # one call that clips, one that must leave the gradients alone
        expected = [g.numpy() for g in tf.clip_by_global_norm(grads, max_norm)[0]]
        got = call(clip_fn, grads, max_norm)
        if not isinstance(got, (list, tuple)) or len(got) != len(grads):
            raise Mistake(f"return a list of {len(grads)} tensors, one per gradient, got "
                          + (f"{len(got)}" if isinstance(got, (list, tuple)) else type(got).__name__))
        per_tensor = [tf.clip_by_norm(g, max_norm).numpy() for g in grads]
        always = [g.numpy() * max_norm / norm for g in grads]
        summed = sum(float(tf.norm(g)) for g in grads)
        by_sum = [g.numpy() * min(1.0, max_norm / summed) for g in grads]
        situation = "above" if max_norm < norm else "below"
        for i, (g, want) in enumerate(zip(got, expected)):
            variants = [("you clip every tensor on its own: the global norm takes all of them together, "
                         "so every tensor is scaled by the same factor.", per_tensor[i]),
                        ("you add up the tensors' norms; the global norm is the norm of all their "
                         "entries together (square root of the sum of squares).", by_sum[i])]
            if situation == "below":
                variants.append(("gradients whose global norm is already below max_norm must stay "
                                 "unchanged: you scaled them up.", always[i]))
            compare(g, want, f"tensor {i} (global norm {situation} max_norm)", atol=1e-5,
                    variants=variants)
    return "all gradients scaled by one factor, only when their global norm exceeds max_norm."
