"""Checks for the chapters beyond supervised training: SimCLR, distillation, federated learning and what
comes next."""

from __future__ import annotations

import numpy as np

from .checking import Mistake, as_array, call, compare, exercise, verdict

__all__ = ["check_negatives", "check_soft_targets", "check_fedavg_average", "check_head_params",
           "check_nt_xent", "check_distillation_loss", "check_fedavg", "check_new_head"]


@exercise("11", "negatives per view", "drill", "the number in `answer`")
def check_negatives(answer, batch_size: int = 256, loss: str = "nt_xent") -> str:
    """How many negatives each anchor is contrasted with in one batch of `batch_size` images."""
    expected = {"nt_xent": 2 * batch_size - 2, "npairs": batch_size - 1}[loss]
    return verdict(answer == expected,
                  f"{expected}: " + ("all 2N views minus the anchor and its partner." if loss == "nt_xent"
                                     else "only the other view's N images, minus the partner."),
                  "count the candidates in the softmax, then remove the positive; NT-Xent uses both "
                  "views of every image, the n-pairs form only the other view.")


@exercise("12", "soft targets", "drill", "the three probabilities in `answer`")
def check_soft_targets(answer, logits=(3.0, 1.0, 0.0), temperature: float = 4.0) -> str:
    """The softened distribution softmax(logits / T) as a sequence of probabilities."""
    z = np.asarray(logits, float) / temperature
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    ok = answer is not None and np.shape(answer) == expected.shape and np.allclose(answer, expected, atol=1e-3)
    return verdict(ok, f"{np.round(expected, 3).tolist()}: flatter than the T=1 softmax, so the small "
                  "probabilities (the teacher's 'dark knowledge') carry weight.",
                  "the temperature acts on the logits, before the softmax; the result must sum to 1.")


@exercise("13", "one FedAvg average", "drill", "the server's value in `answer`")
def check_fedavg_average(answer, client_weights=(1.0, 2.0, 4.0), client_sizes=(100, 300, 600)) -> str:
    """The server's new weight after one FedAvg round: the example-weighted mean of the clients' weights."""
    w, n = np.asarray(client_weights, float), np.asarray(client_sizes, float)
    expected = float((w * n).sum() / n.sum())
    ok = answer is not None and np.allclose(answer, expected, atol=1e-6)
    return verdict(ok, f"{expected:g}: clients count in proportion to their number of examples.",
                  "a client with more examples should count for more; the weights must add up to 1.")


@exercise("14", "parameters of a new head", "drill", "the number in `answer`")
def check_head_params(answer, features: int = 64, num_classes: int = 100) -> str:
    """Parameters a new classification head adds: one Dense layer from `features` to `num_classes`."""
    expected = features * num_classes + num_classes
    return verdict(answer == expected,
                  f"{expected:,}: a weight per feature and class, plus a bias per class; the encoder is "
                  "reused as it is.",
                  "the new head is one Dense layer on the encoder's features: count its weights, and "
                  "do not forget its biases.")


# ------------------------------------------------------------------------------------------------
# Build exercises


@exercise("11", "the NT-Xent loss", "build", "`nt_xent(z1, z2, temperature)`")
def check_nt_xent(loss_fn, temperature: float = 0.5) -> str:
    """`nt_xent(z1, z2, temperature)`: projections of the two views (N, d) -> SimCLR's NT-Xent loss,
    as `cc.nt_xent_loss` computes it (value and gradient)."""
    import tensorflow as tf

    from ..simclr import nt_xent_loss
    from .strategy import check_loss_function

    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(8, 16)).astype(np.float32)
    z2 = (z1 + rng.normal(0, 0.8, z1.shape)).astype(np.float32)

    def loss_of(z1, z2, normalize=True, mask=True, both=True, t=temperature):
        z = np.concatenate([z1, z2]).astype(np.float64)
        if normalize:
            z = z / np.linalg.norm(z, axis=1, keepdims=True)
        logits = z @ z.T / t
        if mask:
            logits = logits - 1e9 * np.eye(len(z))
        n = len(z1)
        partners = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
        logp = logits - logits.max(1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
        losses = -logp[np.arange(2 * n), partners]
        return float(losses.mean() if both else losses[:n].mean())

    variants = [
        ("without L2-normalizing the projections, the similarities are not cosines.",
         loss_of(z1, z2, normalize=False)),
        ("each projection is still its own candidate: remove the diagonal of the similarity matrix.",
         loss_of(z1, z2, mask=False)),
        ("the temperature is not applied to the similarities.", loss_of(z1, z2, t=1.0)),
        ("you multiply by the temperature instead of dividing.", loss_of(z1, z2, t=1 / temperature))]
    check_loss_function(loss_fn, lambda a, b: nt_xent_loss(a, b, temperature),
                        (z1, z2), "loss", variants, wrt=0, extra=(temperature,))
    _ = tf  # the check runs the learner's loss under a GradientTape
    return "cosine similarities over all 2N views, self-pairs removed, each view's partner as target."


@exercise("12", "the distillation loss", "build",
          "`distillation_loss(teacher_logits, student_logits, temperature)`")
def check_distillation_loss(loss_fn, temperature: float = 4.0) -> str:
    """`distillation_loss(teacher_logits, student_logits, temperature)`: T^2 * KL(teacher || student) of
    the temperature-softened distributions, averaged over the batch, as `cc.distillation_loss`."""
    from ..distill import distillation_loss
    from .strategy import check_loss_function

    rng = np.random.default_rng(0)
    teacher = rng.normal(0, 3, (16, 10)).astype(np.float32)
    student = rng.normal(0, 3, (16, 10)).astype(np.float32)
    t = temperature

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def kl(p, q):
        return float(np.mean((p * (np.log(p) - np.log(q))).sum(1)))

    p, q = softmax(teacher / t), softmax(student / t)
    reference = t**2 * kl(p, q)
    variants = [
        (f"your loss is 1/T^2 = 1/{t**2:g} of the reference: did you forget to multiply by T^2 (which "
         "keeps the soft term's gradients the same size whatever T)?", kl(p, q)),
        (f"your loss is 1/T = 1/{t:g} of the reference: the factor is T^2, not T.", t * kl(p, q)),
        ("you compute KL(student || teacher); distillation pulls the student towards the teacher, "
         "KL(teacher || student).", t**2 * kl(q, p)),
        ("only the teacher's logits are divided by the temperature: soften the student's too.",
         t**2 * kl(p, softmax(student))),
        ("you compute the cross-entropy; it differs from the KL divergence by the teacher's entropy, a "
         "constant: subtract it (the reference is the KL divergence).",
         t**2 * float(np.mean(-(p * np.log(q)).sum(1)))),
        ("your loss is the batch's sum: average over the batch.", 16 * reference)]
    check_loss_function(loss_fn, lambda a, b: distillation_loss(a, b, t), (teacher, student),
                        "loss", variants, wrt=1, extra=(t,))
    return "T^2 * KL(teacher || student) on softened distributions; value and gradient match."


@exercise("13", "FedAvg aggregation", "build", "`fedavg(client_weights, client_sizes)`")
def check_fedavg(fedavg_fn) -> str:
    """`fedavg(client_weights, client_sizes)`: a list (one per client) of lists of arrays (one per
    layer, as `model.get_weights()` returns) and each client's number of examples -> the server's new
    weights, a list of arrays: every layer's example-weighted mean over the clients."""
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 3, 4), (4,), (4, 10), (10,)]
    sizes = np.array([50, 300, 120])
    clients = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in sizes]
    expected = [np.average(np.stack(layer), axis=0, weights=sizes) for layer in zip(*clients)]
    got = call(fedavg_fn, clients, sizes)
    if not isinstance(got, (list, tuple)) or len(got) != len(shapes):
        raise Mistake(f"return a list with one array per layer ({len(shapes)} here), as "
                      "model.get_weights() does; got "
                      + (f"{len(got)} items" if isinstance(got, (list, tuple)) else type(got).__name__))
    for i, (layer, want) in enumerate(zip(got, expected)):
        stacked = np.stack([c[i] for c in clients])
        compare(layer, want, f"layer {i}", atol=1e-5, variants=[
            ("every client counts the same in your average: weight them by their number of examples.",
             stacked.mean(0)),
            ("your weights are summed, not averaged: divide by the total number of examples.",
             np.tensordot(sizes, stacked, axes=1)),
            ("your clients' shares do not add up to one.",
             np.tensordot(sizes / sizes.max(), stacked, axes=1))])
    return "each layer averaged over the clients, weighted by their share of the examples."


@exercise("14", "a new classification head", "build", "`new_head(encoder, num_classes)`")
def check_new_head(head_fn) -> str:
    """`new_head(encoder, num_classes)`: a classifier that puts a softmax Dense layer on the encoder's
    features, with the encoder frozen (only the head trains), like `cc.build_classifier` after freezing."""
    from tensorflow import keras
    from tensorflow.keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    features = layers.GlobalAveragePooling2D()(layers.Conv2D(6, 3, activation="relu")(inputs))
    encoder = keras.Model(inputs, features, name="encoder")
    model = call(head_fn, encoder, 20)
    if not isinstance(model, keras.Model):
        raise Mistake(f"return a keras.Model (the encoder with its new head), got {type(model).__name__}")
    if model.output_shape != (None, 20):
        raise Mistake(f"your model outputs shape {model.output_shape}, expected (None, 20)")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    head = 6 * 20 + 20
    if trainable == head + encoder.count_params():
        raise Mistake("the encoder still trains with the head: freeze it (encoder.trainable = False).")
    if trainable != head:
        raise Mistake(f"{trainable:,} trainable parameters, expected only the head's: one Dense layer on "
                      "the encoder's features, with biases.")
    out = model(np.random.default_rng(0).uniform(size=(3, 8, 8, 3)).astype(np.float32)).numpy()
    if not np.allclose(out.sum(1), 1, atol=1e-4):
        raise Mistake("the rows of your output do not sum to 1: end the head with a softmax.")
    encoder.trainable = True
    return "a frozen encoder and one trainable softmax layer on its features."
