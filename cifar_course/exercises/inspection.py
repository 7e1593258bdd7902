"""Checks for the chapters on what the model looks at: Grad-CAM, shortcuts and adversarial robustness."""

from __future__ import annotations

import numpy as np

from .checking import Mistake, as_array, call, compare, exercise, verdict

__all__ = ["check_channel_weights", "check_energy_inside", "check_budget_in_model_units", "check_projection",
           "check_gradcam", "check_fgsm_step"]


@exercise("07", "Grad-CAM channel weights", "drill", "the channel weights in `answer`")
def check_channel_weights(answer, grads) -> str:
    """Grad-CAM's channel weights: the gradient (B, h, w, k) averaged over the map's positions -> (B, k)."""
    expected = np.asarray(grads).mean(axis=(1, 2))
    compare(answer, expected, "weights", atol=1e-5, variants=[
        ("you summed over the positions: Grad-CAM averages.", np.asarray(grads).sum(axis=(1, 2)))])
    return (f"one weight per image and channel, shape {expected.shape}: the gradient averaged over all "
            "positions of the map (global average pooling of the gradient).")


@exercise("07", "heatmap mass on the object", "drill", "the share in `answer`")
def check_energy_inside(answer, heatmap, mask) -> str:
    """Share of one heatmap's total mass that lies on the object mask."""
    heatmap, mask = np.asarray(heatmap, float), np.asarray(mask, bool)
    expected = float((heatmap * mask).sum() / heatmap.sum())
    compare(answer, expected, "share", atol=1e-4, scalar=True, variants=[
        ("that is the object's share of the image's pixels, whatever the heatmap.", mask.mean()),
        ("that is the heatmap's mass outside the object.", 1 - expected)])
    return (f"{expected:.3f} of the heatmap's mass is on the object; a uniform heatmap would score the "
            "object's share of the image.")


@exercise("08", "the budget in model units", "drill", "the three budgets in `answer`")
def check_budget_in_model_units(answer, std, epsilon: float = 8 / 255) -> str:
    """The L-infinity budget per channel after standardization: epsilon / std (the mean cancels)."""
    std = np.asarray(std, float)
    expected = epsilon / std
    compare(answer, expected, "budgets", atol=1e-6, variants=[
        ("you multiplied by the std; standardizing divides by it.", epsilon * std)])
    return (f"{np.round(expected, 4).tolist()}: standardizing divides every difference by the channel's "
            "std, so the same pixel budget is larger in the model's units.")


@exercise("08", "PGD projection", "drill", "the projected batch in `answer`")
def check_projection(answer, x_adv, x, epsilon: float = 8 / 255) -> str:
    """PGD's projection: into the epsilon-box around x, then into the valid range [0, 1]."""
    answer = as_array(answer, "projection")
    expected = np.clip(np.clip(x_adv, x - epsilon, x + epsilon), 0.0, 1.0)
    if answer.shape == expected.shape and np.abs(answer - x).max() > epsilon + 1e-6:
        raise Mistake("some pixels are further than epsilon from x.")
    if answer.shape == expected.shape and (answer.min() < -1e-6 or answer.max() > 1 + 1e-6):
        raise Mistake("some pixels are outside [0, 1].")
    compare(answer, expected, "projection", atol=1e-6)
    return "every pixel within epsilon of the original and inside [0, 1]."


# ------------------------------------------------------------------------------------------------
# Build exercises


def _tiny_conv_model(output: str = "linear"):
    """A small random CNN whose last conv layer is 'last_conv' (an 8x8 map), for checks to run on."""
    from tensorflow import keras
    from tensorflow.keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(12, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.Flatten()(x)  # not GAP: after GAP the gradient is the same at every position
    return keras.Model(inputs, layers.Dense(5, activation=output)(x))


@exercise("07", "Grad-CAM with a GradientTape", "build",
          "`gradcam_maps(model, layer_name, images, class_index)`")
def check_gradcam(gradcam_fn) -> str:
    """`gradcam_maps(model, layer_name, images, class_index)`: for a model that outputs class scores,
    the (B, h, w) Grad-CAM maps of `layer_name`'s output for the classes `class_index` (one per image),
    before upsampling: ReLU of the channels weighted by their average gradient. Scaling each map to a
    maximum of 1 is allowed."""
    import tensorflow as tf
    from tensorflow import keras

    from ..gradcam import gradcam_from_activations

    model = _tiny_conv_model()
    images = tf.random.stateless_uniform((6, 16, 16, 3), [3, 4])
    classes = np.array([0, 1, 2, 3, 4, 0])
    grad_model = keras.Model(model.inputs, [model.get_layer("last_conv").output, model.output])
    with tf.GradientTape() as tape:
        feature_map, scores = grad_model(images)
        score = tf.reduce_sum(tf.gather(scores, classes, axis=1, batch_dims=1))
    grads = tape.gradient(score, feature_map)
    expected = gradcam_from_activations(feature_map, grads).numpy()
    got = as_array(call(gradcam_fn, model, "last_conv", images, classes), "heatmaps")
    if got.shape != expected.shape:
        hint = (" (one map per image at the layer's resolution, no channel axis)"
                if got.ndim != 3 else "")
        raise Mistake(f"your heatmaps have shape {got.shape}, expected {expected.shape}{hint}")
    if got.min() < -1e-6:
        raise Mistake("your heatmaps have negative values: Grad-CAM keeps only evidence for the class.")

    def scaled(m):  # each map to a maximum of 1, so both conventions compare
        peak = m.max(axis=(1, 2), keepdims=True)
        return np.where(peak > 0, m / np.where(peak > 0, peak, 1), 0)

    fm, g = feature_map.numpy(), grads.numpy()
    gxa = np.maximum((fm * g).sum(-1), 0)
    predicted = tf.argmax(scores, 1).numpy()
    with tf.GradientTape() as tape:
        fmap, s = grad_model(images)
        top = tf.reduce_sum(tf.reduce_max(s, axis=1))
    by_prediction = gradcam_from_activations(fmap, tape.gradient(top, fmap)).numpy()
    variants = [("you multiply gradient and activation position by position; Grad-CAM weights each "
                 "channel by its gradient averaged over the positions.", scaled(gxa))]
    if not np.array_equal(predicted, classes):
        variants.append(("your maps are for the predicted class; use the class_index you are given.",
                         scaled(by_prediction)))
    compare(scaled(got), scaled(expected), "heatmaps (each scaled to a maximum of 1)", atol=1e-4,
            variants=variants)
    return "the tape's gradient averaged per channel, a weighted sum of the channels, then ReLU."


@exercise("08", "one FGSM step", "build", "`fgsm_step(model, x, y, epsilon)`")
def check_fgsm_step(fgsm_fn, epsilon: float = 8 / 255) -> str:
    """`fgsm_step(model, x, y, epsilon)`: pixels x in [0, 1], integer labels y, a model that outputs
    probabilities -> x moved by epsilon along the sign of the loss's input gradient, kept in [0, 1]."""
    import tensorflow as tf

    from ..robustness import fgsm

    model = _tiny_conv_model(output="softmax")
    x = tf.random.stateless_uniform((16, 16, 16, 3), [5, 6]).numpy()
    x[:, :2] = 0.0  # some pixels at the edges of the valid range, where the clipping matters
    x[:, -2:] = 1.0
    y = np.arange(16) % 5
    expected = fgsm(model, x, y, epsilon=epsilon)
    got = as_array(call(fgsm_fn, model, tf.constant(x), tf.constant(y), epsilon), "adversarial images")
    if got.shape != x.shape:
        raise Mistake(f"your images have shape {got.shape}, expected {x.shape}")
    step = got - x
    if np.abs(step).max() > epsilon + 1e-5:
        big = np.abs(step).max()
        raise Mistake(f"some pixels moved by {big:.3g}, more than epsilon = {epsilon:.4f}"
                      + (" (is epsilon in [0, 255] units somewhere?)" if big > 10 * epsilon else ""))
    if got.min() < -1e-6 or got.max() > 1 + 1e-6:
        raise Mistake("some pixels are outside [0, 1]: clip the adversarial images to the valid range.")
    agree = np.isclose(got, expected, atol=1e-5).mean()
    if agree > 0.99:
        return f"every pixel moved by epsilon = {epsilon:.4f} uphill on the loss, then clipped to [0, 1]."
    moved = (np.abs(step) > 1e-6) & (np.abs(expected - x) > 1e-6)
    if moved.any() and (np.sign(step[moved]) == -np.sign((expected - x)[moved])).mean() > 0.99:
        raise Mistake("your step goes down the loss, making the images easier: FGSM climbs it.")
    if np.abs(step).max() < 0.5 * epsilon:
        raise Mistake("your pixels moved by much less than epsilon: step by epsilon times the sign of "
                      "the gradient, not by the gradient itself.")
    raise Mistake(f"{100 * (1 - agree):.0f}% of the pixels differ from the reference's step: is it the "
                  "gradient of the loss of the true labels, with respect to the input images?")
