"""Exercise checks: each passes on a solution, fails on typical mistakes with a message that says what
differs, and says "not answered yet" (one line, no hint) for None or the stub. Plus progress()."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras import layers

import cifar_course as cc
from cifar_course import exercises as ex


@pytest.fixture
def run(capsys):
    """Call a check; return its verdict and the one line it printed."""
    def run(check, *args, **kwargs):
        ok = check(*args, **kwargs)
        out = capsys.readouterr().out.strip()
        assert "\n" not in out, out
        return ok, out
    return run


def passes(run, check, *args, **kwargs):
    ok, out = run(check, *args, **kwargs)
    assert ok and out.startswith("Correct: "), out


def fails(run, check, *args, says: str, **kwargs):
    ok, out = run(check, *args, **kwargs)
    assert not ok and out.startswith("Not yet: "), out
    assert says.lower() in out.lower(), out


def unanswered(run, check, *args, **kwargs):
    ok, out = run(check, *args, **kwargs)
    assert not ok and out.startswith("not answered yet: write ") and out.endswith("run this cell again")


def stub(*args, **kwargs):
    ...  # the learner cell's placeholder: returns None


def raises_stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------------------------------------
# Every check: None, the stub, the NotImplementedError stub

ANSWER_ARGS = {  # the arguments after the answer, for checks that need some
    "check_channel_means": (np.zeros((2, 4, 4, 3), np.uint8),),
    "check_one_hot": ([1, 2],),
    "check_channel_weights": (np.zeros((1, 2, 2, 3)),),
    "check_energy_inside": (np.ones((4, 4)), np.eye(4)),
    "check_budget_in_model_units": ([0.2, 0.2, 0.2],),
    "check_projection": (np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 3))),
    "check_preprocess": (None,),
    "check_int8_quantize": (stub,),
}


@pytest.mark.parametrize("name", list(ex.EXERCISES))
def test_every_check_says_not_answered_yet(run, name):
    check = getattr(ex, name)
    args = ANSWER_ARGS.get(name, ())
    unanswered(run, check, None, *args)
    if ex.EXERCISES[name].kind == "build":
        unanswered(run, check, stub, *args)
        unanswered(run, check, raises_stub, *args)


def test_every_check_is_exported_and_every_chapter_has_a_build_exercise():
    chapters = {f"{n:02d}" for n in range(1, 15)}
    assert set(ex.__all__ if hasattr(ex, "__all__") else []) <= set(dir(ex))
    builds = {e.chapter for e in ex.EXERCISES.values() if e.kind == "build"}
    assert builds == chapters, chapters - builds


def test_a_learner_error_is_reported_not_raised(run):
    def broken(images, mean, std):
        return images / undefined_name  # noqa: F821

    fails(run, ex.check_standardize, broken, says="your function raised NameError")
    fails(run, ex.check_top_k, [1, 2], np.eye(3), [0, 1, 2], says="could not read your answer")


# ------------------------------------------------------------------------------------------------
# Drills: the existing one-value exercises, and the fixed crash on None


def test_drills_pass_and_fail(run):
    x = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    passes(run, ex.check_channel_means, x.mean(axis=(0, 1, 2)) / 255, x)
    fails(run, ex.check_channel_means, x.mean(axis=(0, 1, 2)), x, says="[0, 255] units")
    passes(run, ex.check_one_hot, np.eye(10)[[3, 1]], [3, 1])
    fails(run, ex.check_one_hot, np.eye(10)[[1, 3]], [3, 1], says="wrong column")
    heat, mask = np.arange(16.0).reshape(4, 4) ** 2, np.eye(4)
    passes(run, ex.check_energy_inside, (heat * mask).sum() / heat.sum(), heat, mask)
    fails(run, ex.check_energy_inside, mask.mean(), heat, mask, says="object's share of the image")
    passes(run, ex.check_conv_params, 3 * 3 * 32 * 64 + 64)
    fails(run, ex.check_conv_params, 3 * 3 * 32 * 64, says="bias")
    passes(run, ex.check_fedavg_average, 3.1)
    fails(run, ex.check_fedavg_average, 7 / 3, says="count for more")


def test_no_hint_names_the_answer(run):
    _, out = run(ex.check_one_hot, np.zeros((2, 3)), [1, 2])
    assert "one_hot" not in out and "np.eye" not in out
    _, out = run(ex.check_output_size, 30)
    assert "//" not in out and "+ 1" not in out


# ------------------------------------------------------------------------------------------------
# 01 data


def standardize(images, mean, std):
    return (tf.cast(images, tf.float32) / 255.0 - mean) / std


def pad_crop_flip(images, pad=4):
    b = tf.shape(images)[0]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    crops = tf.map_fn(lambda im: tf.image.random_crop(im, [32, 32, 3]), padded)
    flip = tf.random.uniform([b, 1, 1, 1]) < 0.5
    return tf.where(flip, crops[:, :, ::-1], crops)


def test_check_standardize(run):
    passes(run, ex.check_standardize, standardize)
    fails(run, ex.check_standardize, lambda x, m, s: (x - m) / s, says="[0, 255]")
    fails(run, ex.check_standardize, lambda x, m, s: x / 255 - m, says="not divided by its std")
    fails(run, ex.check_standardize, lambda x, m, s: (x / 255 - m.mean()) / s.mean(),
          says="each channel's own")


def test_check_pad_crop_flip(run):
    passes(run, ex.check_pad_crop_flip, pad_crop_flip)
    no_flip = lambda x: tf.map_fn(lambda im: tf.image.random_crop(im, [32, 32, 3]),  # noqa: E731
                                  tf.pad(x, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT"))
    fails(run, ex.check_pad_crop_flip, no_flip, says="no image was flipped")
    zeros = lambda x: tf.map_fn(lambda im: tf.image.random_crop(im, [32, 32, 3]),  # noqa: E731
                                tf.pad(x, [[0, 0], [4, 4], [4, 4], [0, 0]]))
    fails(run, ex.check_pad_crop_flip, lambda x: tf.image.flip_left_right(zeros(x))
          if False else zeros(x), says="zeros")
    one_offset = lambda x: tf.image.random_crop(  # noqa: E731
        tf.pad(x, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT"), [32, 32, 32, 3])
    fails(run, ex.check_pad_crop_flip, one_offset, says="same shift")
    fails(run, ex.check_pad_crop_flip, lambda x: x[:, 2:], says="shape")


def test_check_vertical_shift(run):
    passes(run, ex.check_vertical_shift, lambda x: tf.pad(x, [[0, 0], [2, 0], [0, 0], [0, 0]])[:, :32])
    fails(run, ex.check_vertical_shift, lambda x: tf.pad(x, [[0, 0], [0, 2], [0, 0], [0, 0]])[:, 2:],
          says="moved up")
    fails(run, ex.check_vertical_shift, lambda x: x, says="unchanged")


# ------------------------------------------------------------------------------------------------
# 02, 03 blocks


def conv_block(x, filters, bias=False, order="bn-relu", padding="same"):
    x = layers.Conv2D(filters, 3, padding=padding, use_bias=bias)(x)
    if order == "bn-relu":
        return layers.ReLU()(layers.BatchNormalization()(x))
    return layers.BatchNormalization()(layers.ReLU()(x))


def test_check_conv_block(run):
    passes(run, ex.check_conv_block, conv_block)
    fails(run, ex.check_conv_block, lambda x, f: conv_block(x, f, bias=True), says="redundant before BatchNorm")
    fails(run, ex.check_conv_block, lambda x, f: conv_block(x, f, order="relu-bn"), says="before BatchNorm")
    fails(run, ex.check_conv_block, lambda x, f: conv_block(x, f, padding="valid"), says="shape (6, 6, 16)")


def test_check_gap_head(run):
    passes(run, ex.check_gap_head,
           lambda x, n: layers.Dense(n, activation="softmax")(layers.GlobalAveragePooling2D()(x)))
    fails(run, ex.check_gap_head, lambda x, n: layers.Dense(n, activation="softmax")(layers.Flatten()(x)),
          says="grows with the map's size")
    fails(run, ex.check_gap_head, lambda x, n: layers.Dense(n)(layers.GlobalAveragePooling2D()(x)),
          says="do not sum to 1")
    fails(run, ex.check_gap_head,
          lambda x, n: layers.Dense(n, activation="softmax")(layers.GlobalMaxPooling2D()(x)),
          says="maximum")


def residual_block(x, filters, strides=1, shortcut=True, project=True):
    y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same", use_bias=False)(y))
    if not shortcut:
        return layers.ReLU()(y)
    s = x
    if project and (strides != 1 or x.shape[-1] != filters):
        s = layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=strides, use_bias=False)(x))
    return layers.ReLU()(layers.Add()([y, s]))


def test_check_residual_block(run):
    passes(run, ex.check_residual_block, residual_block)
    fails(run, ex.check_residual_block, lambda x, f, strides=1: residual_block(x, f, strides, shortcut=False),
          says="shortcut")
    fails(run, ex.check_residual_block, lambda x, f, strides=1: residual_block(x, f, strides, project=False),
          says="the shortcut must change it too")


def se_block(x, reduction=8, sigmoid=True, scale=True):
    c = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = layers.Dense(c // reduction, activation="relu")(s)
    s = layers.Dense(c, activation="sigmoid" if sigmoid else None)(s)
    return layers.Multiply()([x, s]) if scale else s


def test_check_se_block(run):
    passes(run, ex.check_se_block, se_block)
    fails(run, ex.check_se_block, lambda x, reduction=8: se_block(x, reduction, sigmoid=False), says="sigmoid")
    fails(run, ex.check_se_block, lambda x, reduction=8: se_block(x, reduction, scale=False),
          says="you return the channel weights")
    fails(run, ex.check_se_block, lambda x, reduction=8: se_block(x, 4), says="parameters")


# ------------------------------------------------------------------------------------------------
# 04 regularization, 05 evaluation


def smoothed_cross_entropy(y_true, y_pred, smoothing):
    k = y_true.shape[-1]
    targets = y_true * (1 - smoothing) + smoothing / k
    return tf.reduce_mean(-tf.reduce_sum(targets * tf.math.log(y_pred), axis=-1))


def test_check_label_smoothing_loss(run):
    passes(run, ex.check_label_smoothing_loss, smoothed_cross_entropy)
    fails(run, ex.check_label_smoothing_loss, lambda t, p, s: smoothed_cross_entropy(t, p, 0.0),
          says="not smoothed")
    fails(run, ex.check_label_smoothing_loss,
          lambda t, p, s: 16 * smoothed_cross_entropy(t, p, s), says="average over the batch")
    fails(run, ex.check_label_smoothing_loss,
          lambda t, p, s: smoothed_cross_entropy(t, p, s).numpy(), says="cannot differentiate")
    k_minus_1 = lambda t, p, s: tf.reduce_mean(  # noqa: E731
        -tf.reduce_sum((t * (1 - s) + (1 - t) * s / 9) * tf.math.log(p), axis=-1))
    fails(run, ex.check_label_smoothing_loss, k_minus_1, says="K - 1")


def mix_batch(images, labels, lam, partner):
    li, ll = lam[:, None, None, None], lam[:, None]
    return li * images + (1 - li) * images[partner], ll * labels + (1 - ll) * labels[partner]


def test_check_mixup_batch(run):
    passes(run, ex.check_mixup_batch, mix_batch)
    fails(run, ex.check_mixup_batch, lambda x, y, lam, j: (mix_batch(x, y, lam, j)[0], y), says="one-hot")
    fails(run, ex.check_mixup_batch, lambda x, y, lam, j: mix_batch(x, y, 1 - lam, j), says="wrong way round")
    fails(run, ex.check_mixup_batch, lambda x, y, lam, j: mix_batch(x, y, lam, j)[0], says="return two")
    fails(run, ex.check_mixup_batch, lambda x, y, lam, j: (lam * x, y), says="raised ValueError")


def top_k_accuracy(probs, labels, k):
    return float((np.argsort(-probs, axis=1)[:, :k] == labels[:, None]).any(axis=1).mean())


def test_check_top_k_accuracy(run):
    passes(run, ex.check_top_k_accuracy, top_k_accuracy)
    fails(run, ex.check_top_k_accuracy, lambda p, y, k: top_k_accuracy(p, y, k) * len(y), says="share")
    fails(run, ex.check_top_k_accuracy,
          lambda p, y, k: float((np.argsort(p, 1)[:, :k] == y[:, None]).any(1).mean()), says="least probable")
    fails(run, ex.check_top_k_accuracy, lambda p, y, k: top_k_accuracy(p, y, k + 1), says="not 1")


def calibration_error(probs, labels, n_bins):
    conf, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return ece


def test_check_calibration_error(run):
    passes(run, ex.check_calibration_error, calibration_error)
    passes(run, ex.check_calibration_error, lambda p, y, n: cc.expected_calibration_error(p, y, n))

    def unweighted(probs, labels, n_bins):
        rows = [r for r in cc.calibration_bins(probs, labels, n_bins) if r["count"]]
        return np.mean([abs(r["accuracy"] - r["confidence"]) for r in rows])

    fails(run, ex.check_calibration_error, unweighted, says="equally")
    fails(run, ex.check_calibration_error, lambda p, y, n: calibration_error(p, y, 5), says="ECE with 10 bins")


def clip_by_global_norm(grads, max_norm):
    norm = tf.sqrt(sum(tf.reduce_sum(g**2) for g in grads))
    return [g * tf.minimum(1.0, max_norm / norm) for g in grads]


def test_check_clip_by_global_norm(run):
    passes(run, ex.check_clip_by_global_norm, clip_by_global_norm)
    passes(run, ex.check_clip_by_global_norm, lambda g, m: tf.clip_by_global_norm(g, m)[0])
    fails(run, ex.check_clip_by_global_norm, lambda g, m: [tf.clip_by_norm(t, m) for t in g],
          says="on its own")
    fails(run, ex.check_clip_by_global_norm,
          lambda g, m: [t * m / tf.linalg.global_norm(g) for t in g], says="scaled them up")
    fails(run, ex.check_clip_by_global_norm, lambda g, m: clip_by_global_norm(g, m)[:2], says="list of 3")


# ------------------------------------------------------------------------------------------------
# 07 Grad-CAM, 08 FGSM


def gradcam_maps(model, layer_name, images, class_index, relu=True, average=True):
    grad_model = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.output])
    with tf.GradientTape() as tape:
        fmap, scores = grad_model(images)
        score = tf.reduce_sum(tf.gather(scores, class_index, axis=1, batch_dims=1))
    grads = tape.gradient(score, fmap)
    if average:
        cam = tf.einsum("bhwk,bk->bhw", fmap, tf.reduce_mean(grads, axis=(1, 2)))
    else:
        cam = tf.reduce_sum(fmap * grads, axis=-1)
    return tf.nn.relu(cam) if relu else cam


def test_check_gradcam(run):
    passes(run, ex.check_gradcam, gradcam_maps)
    passes(run, ex.check_gradcam, lambda *a: gradcam_maps(*a) / tf.reduce_max(gradcam_maps(*a)))
    fails(run, ex.check_gradcam, lambda *a: gradcam_maps(*a, relu=False), says="negative")
    fails(run, ex.check_gradcam, lambda *a: gradcam_maps(*a, average=False), says="position by position")
    fails(run, ex.check_gradcam, lambda *a: gradcam_maps(*a)[..., None], says="shape")


def fgsm_step(model, x, y, epsilon, sign=1.0, clip=True, use_sign=True):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x))
    grad = tape.gradient(loss, x)
    step = tf.sign(grad) if use_sign else grad
    x_adv = x + sign * epsilon * step
    return tf.clip_by_value(x_adv, 0.0, 1.0) if clip else x_adv


def test_check_fgsm_step(run):
    passes(run, ex.check_fgsm_step, fgsm_step)
    fails(run, ex.check_fgsm_step, lambda *a: fgsm_step(*a, sign=-1.0), says="down the loss")
    fails(run, ex.check_fgsm_step, lambda *a: fgsm_step(*a, clip=False), says="outside [0, 1]")
    fails(run, ex.check_fgsm_step, lambda *a: fgsm_step(*a, use_sign=False), says="much less than epsilon")
    fails(run, ex.check_fgsm_step, lambda m, x, y, e: fgsm_step(m, x, y, e * 255), says="[0, 255] units")


# ------------------------------------------------------------------------------------------------
# 09 quantization, 10 preprocessing


def quantize_int8(x, levels=127, rounding=np.round):
    scale = np.abs(x).max() / levels
    return np.clip(rounding(x / scale), -127, 127).astype(np.int8), scale


def dequantize(q, scale):
    return q.astype(np.float32) * scale


def test_check_int8_quantize(run):
    passes(run, ex.check_int8_quantize, quantize_int8, dequantize)
    unanswered(run, ex.check_int8_quantize, quantize_int8, stub)
    fails(run, ex.check_int8_quantize, lambda x: quantize_int8(x, levels=255), dequantize, says="/ 255")
    fails(run, ex.check_int8_quantize, lambda x: quantize_int8(x, rounding=np.trunc), dequantize,
          says="truncate")
    fails(run, ex.check_int8_quantize, lambda x: (quantize_int8(x)[0].astype(np.float32), quantize_int8(x)[1]),
          dequantize, says="int8")
    fails(run, ex.check_int8_quantize, quantize_int8, lambda q, s: q / s, says="multiplies")

    def by_max(x):
        scale = x.max() / 127
        return np.clip(np.round(x / scale), -127, 127).astype(np.int8), scale

    fails(run, ex.check_int8_quantize, by_max, dequantize, says="max(x) / 127")


class FakePredictor:
    """What check_preprocess needs of a predictor: the server's prepare()."""

    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])

    def prepare(self, png):
        return (np.asarray(decode(png)) / 255.0 - self.mean) / self.std, {}


def decode(png):
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)


def test_check_preprocess(run):
    predictor = FakePredictor()
    passes(run, ex.check_preprocess, lambda png: (decode(png) / 255 - predictor.mean) / predictor.std,
           predictor)
    fails(run, ex.check_preprocess, lambda png: decode(png) / 255, predictor, says="not yet standardized")
    fails(run, ex.check_preprocess, decode, predictor, says="[0, 255]")
    unanswered(run, ex.check_preprocess, stub, predictor)


# ------------------------------------------------------------------------------------------------
# 11 SimCLR, 12 distillation, 13 federated, 14 next steps


def nt_xent(z1, z2, temperature, normalize=True, mask=True):
    z = tf.concat([z1, z2], axis=0)
    if normalize:
        z = tf.math.l2_normalize(z, axis=1)
    n = tf.shape(z1)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    if mask:
        logits -= 1e9 * tf.eye(2 * n)
    targets = tf.concat([tf.range(n, 2 * n), tf.range(n)], axis=0)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))


def test_check_nt_xent(run):
    passes(run, ex.check_nt_xent, nt_xent)
    fails(run, ex.check_nt_xent, lambda a, b, t: nt_xent(a, b, t, normalize=False), says="normalizing")
    fails(run, ex.check_nt_xent, lambda a, b, t: nt_xent(a, b, t, mask=False), says="diagonal")
    fails(run, ex.check_nt_xent, lambda a, b, t: nt_xent(a, b, 1.0), says="temperature")


def distillation_loss(teacher_logits, student_logits, temperature, t2=True):
    p = tf.nn.softmax(teacher_logits / temperature)
    kl = tf.reduce_sum(p * (tf.nn.log_softmax(teacher_logits / temperature)
                            - tf.nn.log_softmax(student_logits / temperature)), axis=-1)
    return (temperature**2 if t2 else 1.0) * tf.reduce_mean(kl)


def test_check_distillation_loss(run):
    passes(run, ex.check_distillation_loss, distillation_loss)
    passes(run, ex.check_distillation_loss,
           lambda t, s, temp: temp**2 * keras.losses.KLDivergence()(tf.nn.softmax(t / temp),
                                                                  tf.nn.softmax(s / temp)))
    fails(run, ex.check_distillation_loss, lambda t, s, temp: distillation_loss(t, s, temp, t2=False),
          says="did you forget to multiply by T^2")
    fails(run, ex.check_distillation_loss, lambda t, s, temp: distillation_loss(s, t, temp),
          says="KL(student || teacher)")
    fails(run, ex.check_distillation_loss,
          lambda t, s, temp: temp**2 * tf.reduce_mean(tf.reduce_sum(
              -tf.nn.softmax(t / temp) * tf.nn.log_softmax(s / temp), axis=-1)), says="entropy")


def fedavg(client_weights, client_sizes):
    shares = np.asarray(client_sizes, float) / np.sum(client_sizes)
    return [sum(s * w for s, w in zip(shares, layer)) for layer in zip(*client_weights)]


def test_check_fedavg(run):
    passes(run, ex.check_fedavg, fedavg)
    fails(run, ex.check_fedavg, lambda w, n: fedavg(w, np.ones(len(n))), says="counts the same")
    fails(run, ex.check_fedavg, lambda w, n: [sum(k * c for k, c in zip(n, layer)) for layer in zip(*w)],
          says="divide by the total")
    fails(run, ex.check_fedavg, lambda w, n: fedavg(w, n)[0], says="one array per layer")


def new_head(encoder, num_classes, freeze=True):
    encoder.trainable = not freeze
    return keras.Model(encoder.input, layers.Dense(num_classes, activation="softmax")(encoder.output))


def test_check_new_head(run):
    passes(run, ex.check_new_head, new_head)
    passes(run, ex.check_new_head, lambda enc, n: (setattr(enc, "trainable", False),
                                                    cc.build_classifier(enc, num_classes=n))[1])
    fails(run, ex.check_new_head, lambda enc, n: new_head(enc, n, freeze=False), says="freeze")
    fails(run, ex.check_new_head, lambda enc, n: new_head(enc, 10), says="expected (None, 20)")


# ------------------------------------------------------------------------------------------------
# progress()


def test_progress_tables_this_chapters_exercises(capsys):
    ex.VERDICTS.clear()
    assert ex.progress("99") is None
    ex.check_top_k(2 / 3, np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.4, 0.35, 0.25]]), [1, 2, 2], k=2)
    ex.check_ece(0.5)  # wrong
    ex.check_top_k_accuracy(stub)  # not answered
    capsys.readouterr()
    table = ex.progress()  # the chapter of the last check run: 05
    printed = capsys.readouterr().out
    assert "Chapter 05: 1 of 4 exercises done." in printed
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in table.data.splitlines()[2:]}
    assert rows == {"top-2 accuracy by hand": "done", "ECE by hand": "tried, not yet",
                    "top-k accuracy": "not yet", "expected calibration error": "not yet"}
    assert "| build |" in table.data and "| drill |" in table.data
    ex.check_ece(4 / 6 * 0.15 + 2 / 6 * 0.1)
    assert "2 of 4" in (ex.progress("5"), capsys.readouterr().out)[1]
