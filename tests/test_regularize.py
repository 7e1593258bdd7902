"""Regularization pieces: the mixing functions keep labels honest, cutout cuts, stochastic depth drops."""

import numpy as np
import pytest
import tensorflow as tf

import cifar_course as cc


def _batch(n=64, size=16, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    # Each image is constant and equal to its index, so a mixed pixel tells which images went into it.
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, size, size, 3)).copy()
    labels = tf.one_hot(rng.integers(0, classes, n), classes)
    return tf.constant(images), labels


def test_mixup_labels_sum_to_one_and_follow_the_image_mix():
    tf.random.set_seed(1)
    images, labels = _batch()
    mixed, mixed_labels = cc.mixup(images, labels, alpha=0.4)
    assert mixed.shape == images.shape and mixed_labels.shape == labels.shape
    np.testing.assert_allclose(mixed_labels.numpy().sum(axis=1), 1.0, atol=1e-6)
    # Recover lam and the partner from the labels' construction: pixel = lam * i + (1 - lam) * j.
    # Check that the label blend gives the same weights as the image blend for every sample.
    y = labels.numpy()
    pix = mixed.numpy()[:, 0, 0, 0]
    found = 0
    for i in range(len(pix)):
        for j in range(len(pix)):
            if i == j:
                continue
            lam = (pix[i] - j) / (i - j)
            if -1e-4 <= lam <= 1 + 1e-4 and np.allclose(lam * y[i] + (1 - lam) * y[j],
                                                          mixed_labels.numpy()[i], atol=1e-4):
                found += 1
                break
        else:
            # lam == 1 exactly (or the partner is itself): the image and label are unchanged.
            if np.isclose(pix[i], i) and np.allclose(mixed_labels.numpy()[i], y[i]):
                found += 1
    assert found == len(pix)
    assert np.abs(pix - np.arange(len(pix))).max() > 0.5  # something was actually mixed


def test_mixup_refuses_integer_labels():
    images, labels = _batch()
    with pytest.raises(ValueError, match="one_hot=True"):
        cc.mixup(images, tf.argmax(labels, axis=1))


def test_cutmix_box_area_matches_label_weight():
    tf.random.set_seed(2)
    images, labels = _batch(n=32, size=32)
    mixed, mixed_labels = cc.cutmix(images, labels, alpha=1.0)
    mixed, mixed_labels, y = mixed.numpy(), mixed_labels.numpy(), labels.numpy()
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, atol=1e-6)
    areas = []
    for i in range(len(mixed)):
        pasted = mixed[i, :, :, 0] != i  # pixels that came from another image
        area = pasted.mean()
        areas.append(area)
        if area:
            channel = mixed[i, :, :, 0]
            partner = int(channel[pasted][0])
            # A single rectangle taken from a single partner.
            assert np.all(channel[pasted] == partner)
            rows, cols = np.flatnonzero(pasted.any(axis=1)), np.flatnonzero(pasted.any(axis=0))
            assert pasted.sum() == len(rows) * len(cols)
            expected = (1 - area) * y[i] + area * y[partner]
            np.testing.assert_allclose(mixed_labels[i], expected, atol=1e-5)
        else:  # nothing pasted (empty box, or the image drew itself as partner): label unchanged
            np.testing.assert_allclose(mixed_labels[i], y[i], atol=1e-5)
    assert np.mean(areas) > 0.1


def test_cutmix_boxes_area_follows_lambda_without_clipping():
    lam = tf.constant([0.75, 0.5, 0.0])
    mask, area = cc.cutmix_boxes(3, 64, 64, lam)
    np.testing.assert_allclose(mask.numpy().mean(axis=(1, 2, 3)), area.numpy(), atol=1e-6)
    assert np.all(area.numpy() <= 1 - lam.numpy() + 0.05)


def test_cutout_zeroes_one_patch():
    images = tf.ones((8, 32, 32, 3)) * 100.0
    out = cc.cutout(images, size=8).numpy()
    zeros = (out == 0).all(axis=-1)
    for z in zeros:
        assert 16 <= z.sum() <= 64  # a square of 8x8, possibly clipped at the border
        rows, cols = np.flatnonzero(z.any(axis=1)), np.flatnonzero(z.any(axis=0))
        assert z.sum() == len(rows) * len(cols)
    assert np.all(out[out != 0] == 100.0)
    with pytest.raises(ValueError, match="even"):
        cc.cutout(images, size=7)


def test_stochastic_depth_scales_at_inference_and_drops_whole_samples_in_training():
    layer = cc.StochasticDepth(0.25)
    x = tf.ones((4000, 4, 4, 2))
    np.testing.assert_allclose(layer(x, training=False).numpy(), 0.75)
    np.testing.assert_allclose(cc.StochasticDepth(0.0)(x, training=True).numpy(), 1.0)
    out = layer(x, training=True).numpy()
    per_sample = out.reshape(len(out), -1)
    assert np.all((per_sample == 0).all(axis=1) | (per_sample == 1).all(axis=1))  # whole samples
    dropped = (per_sample == 0).all(axis=1).mean()
    assert abs(dropped - 0.25) < 0.03
    with pytest.raises(ValueError):
        cc.StochasticDepth(1.0)


def test_regularized_resnet_builds_and_carries_its_regularizers():
    plain = cc.build_regularized_resnet(width=8)
    model = cc.build_regularized_resnet(width=8, l2_factor=1e-4, dropout=0.3, drop_path=0.2)
    assert plain.count_params() == model.count_params()
    assert len(model.losses) > 0 and len(plain.losses) == 0
    names = [type(layer).__name__ for layer in model.layers]
    assert names.count("StochasticDepth") == 3 and "Dropout" in names
    out = model(tf.zeros((2, 32, 32, 3)), training=False)
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.numpy().sum(axis=1), 1.0, atol=1e-5)


def _constant_classifier(cls, classes=10):
    """A model that answers `cls` for every image: its accuracy is the share of that class."""
    inputs = tf.keras.Input((4, 4, 3))
    zeros = tf.keras.layers.Lambda(lambda x: tf.zeros((tf.shape(x)[0], classes)))(inputs)
    outputs = tf.keras.layers.Lambda(lambda z: tf.one_hot(tf.fill([tf.shape(z)[0]], cls), classes) + z)(zeros)
    return tf.keras.Model(inputs, outputs)


def test_measure_gap_is_train_minus_validation_accuracy():
    x = np.zeros((20, 4, 4, 3), np.float32)
    train_y = np.array([3] * 15 + [1] * 5)  # the model is right on 75% of these
    val_y = np.array([3] * 5 + [1] * 15)  # and on 25% of these
    train = tf.data.Dataset.from_tensor_slices((x, train_y)).batch(7)
    val = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(val_y, 10))).batch(6)  # one-hot works too
    gap = cc.measure_gap(_constant_classifier(3), train, val)
    assert gap["train accuracy"] == pytest.approx(0.75)
    assert gap["validation accuracy"] == pytest.approx(0.25)
    assert gap["gap"] == pytest.approx(0.5)


def test_mean_and_spread_covers_every_seed():
    mean, spread = cc.mean_and_spread([0.50, 0.56, 0.53])
    assert mean == pytest.approx(0.53) and spread == pytest.approx(0.03)
    assert cc.mean_and_spread([0.4]) == (pytest.approx(0.4), 0.0)
    with pytest.raises(ValueError):
        cc.mean_and_spread([])


def test_plot_mixing_examples_shows_a_row_per_mixer_with_label_weights():
    import matplotlib

    matplotlib.use("Agg")
    images, labels = _batch(n=12, size=32)
    fig = cc.plot_mixing_examples(images * 20, labels, {"mixup": cc.mixup, "CutMix": cc.cutmix}, n=4)
    assert len(fig.axes) == 12
    assert [fig.axes[4 * r].get_ylabel() for r in range(3)] == ["original", "mixup", "CutMix"]
    first = int(np.argmax(labels.numpy()[0]))
    assert fig.axes[0].get_title() == f"{first} 1.00"  # an original image has one label, weight 1
    with pytest.raises(ValueError, match="at least n=20"):
        cc.plot_mixing_examples(images, labels, {}, n=20)


def test_plot_gap_bars_draws_both_columns_and_marks_the_reference():
    import matplotlib

    matplotlib.use("Agg")
    rows = [{"technique": "none", "validation accuracy": 0.5, "gap": 0.3},
            {"technique": "augmentation", "validation accuracy": 0.6, "gap": 0.1}]
    fig = cc.plot_gap_bars(rows)
    accuracy, gap = fig.axes
    assert [bar.get_width() for bar in accuracy.patches] == [0.5, 0.6]
    assert [bar.get_width() for bar in gap.patches] == [0.3, 0.1]
    assert accuracy.lines[0].get_xdata()[0] == 0.5 and gap.lines[0].get_xdata()[0] == 0.3
    with pytest.raises(ValueError, match="No row named"):
        cc.plot_gap_bars(rows, reference="mixup")
