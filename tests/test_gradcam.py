"""Grad-CAM: heatmap shape and range, dependence on the class, nested models, and localization on the
synthetic stand-in against a random-heatmap baseline."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

import cifar_course as cc
from cifar_course.gradcam import (
    center_heatmaps, compute_gradcam, find_last_conv_layer, localization_report, localization_scores,
    random_heatmaps,
)


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained for a few seconds on the synthetic stand-in, with the test split's masks."""
    cc.seed_everything(0)
    data = cc.make_synthetic(1500, 300, masks=True)
    (x_train, y_train), (x_test, y_test) = data
    # 372 steps of 16 images, BatchNorm momentum 0.9: the running statistics that inference uses have
    # caught up (with Keras' 0.99 and batches of 32, 184 steps, test accuracy was 14%, near chance).
    model = cc.build_small_cnn(width=16, bn_momentum=0.9)
    cc.train_model(model, cc.make_dataset(x_train, y_train, 16, training=True), epochs=4, learning_rate=2e-3,
                   progress_every=None)
    x = cc.normalize(x_test).numpy()
    return model, x, y_test, data.masks[1]


def test_heatmaps_are_normalized_input_sized_and_non_negative():
    model = cc.build_small_cnn(width=8)
    x = np.random.default_rng(0).uniform(size=(6, 32, 32, 3)).astype("float32")
    heat, classes = compute_gradcam(model, x, batch_size=4)  # two batches
    assert heat.shape == (6, 32, 32) and heat.dtype == np.float32 and classes.shape == (6,)
    assert heat.min() >= 0.0 and heat.max() <= 1.0 + 1e-6
    peaks = heat.max(axis=(1, 2))
    assert np.all((np.abs(peaks - 1) < 1e-5) | (peaks == 0)) and (peaks > 0).any()
    assert compute_gradcam(model, x, size=(64, 48))[0].shape == (6, 64, 48)


def test_predicted_class_is_the_default(trained):
    model, x, _, _ = trained
    _, classes = compute_gradcam(model, x[:8])
    np.testing.assert_array_equal(classes, model.predict(x[:8], verbose=0).argmax(1))


def test_heatmap_changes_with_the_class(trained):
    model, x, y, _ = trained
    own, _ = compute_gradcam(model, x[:20], class_index=y[:20])
    other, _ = compute_gradcam(model, x[:20], class_index=(y[:20] + 5) % 10)
    assert np.abs(own - other).mean() > 0.05


def test_softmax_is_restored_after_the_call(trained):
    model, x, _, _ = trained
    before = model(x[:4]).numpy()
    compute_gradcam(model, x[:4])
    np.testing.assert_allclose(model(x[:4]).numpy(), before, atol=1e-6)
    assert np.allclose(before.sum(1), 1.0, atol=1e-5)


def test_nested_and_sequential_models_work(trained):
    model, x, _, _ = trained
    # The trained network's body as a backbone inside a functional model and a Sequential model.
    backbone = keras.Model(model.inputs, model.get_layer("stage3b_relu").output, name="backbone")
    head = [model.layers[-2], model.layers[-1]]  # global pooling, classifier (shared weights)
    inputs = keras.Input((32, 32, 3))
    outputs = head[1](head[0](backbone(inputs)))
    functional = keras.Model(inputs, outputs)
    sequential = keras.Sequential([backbone, *head])
    sequential.build((None, 32, 32, 3))
    flat, _ = compute_gradcam(model, x[:5])
    for nested in (functional, sequential):
        assert [layer.name for layer in find_last_conv_layer(nested)] == ["backbone", "stage3b_relu"]
        heat, _ = compute_gradcam(nested, x[:5])
        np.testing.assert_allclose(heat, flat, atol=1e-4)


def test_model_without_convolution_is_refused():
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="no convolutional feature map"):
        compute_gradcam(model, np.zeros((1, 32, 32, 3), "float32"))


def test_localization_scores_on_known_heatmaps():
    masks = np.zeros((2, 4, 4), bool)
    masks[:, :2, :2] = True
    perfect = masks.astype(float)
    assert localization_scores(perfect, masks) == {"energy_inside": 1.0, "pointing_game": 1.0,
                                                   "object_area": 0.25}
    uniform = localization_scores(np.ones((2, 4, 4)), masks)
    assert uniform["energy_inside"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same shape"):
        localization_scores(np.ones((2, 8, 8)), masks)


def test_baselines_score_about_the_object_area():
    masks = cc.make_synthetic(10, 400, masks=True).masks[1]
    scores = localization_scores(random_heatmaps(len(masks), seed=1), masks)
    assert abs(scores["energy_inside"] - scores["object_area"]) < 0.05
    assert center_heatmaps(3).shape == (3, 32, 32)


def test_gradcam_beats_the_random_baseline_clearly(trained):
    model, x, _, masks = trained
    rows = {r["heatmap"]: r for r in localization_report(model, x, masks)}
    cam, rand = rows["Grad-CAM"], rows["random heatmap"]
    assert cam["energy_inside"] > rand["energy_inside"] + 0.1
    assert cam["pointing_game"] > rand["pointing_game"] + 0.2
