"""The synthetic stand-in: repeatable, CIFAR-shaped, balanced, learnable but not trivial."""

import numpy as np
import pytest

import cifar_course as cc


def test_deterministic_by_seed():
    a, b, c = cc.draw_synthetic(50, seed=3), cc.draw_synthetic(50, seed=3), cc.draw_synthetic(50, seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_shapes_dtypes_and_balanced_classes():
    splits = cc.make_synthetic(200, 60, masks=True)
    (x_train, y_train), (x_test, y_test) = splits
    assert x_train.shape == (200, 32, 32, 3) and x_train.dtype == np.uint8
    assert y_train.shape == (200,) and x_test.shape == (60, 32, 32, 3)
    assert np.bincount(y_train).tolist() == [20] * 10
    assert np.bincount(cc.draw_synthetic(2000)[1]).tolist() == [200] * 10  # past uint8's 255 too
    cc.check_arrays(x_train, y_train)
    assert splits.is_synthetic and splits.class_names == cc.SHAPE_NAMES
    m_train, m_test = splits.masks
    assert m_train.shape == (200, 32, 32) and m_train.dtype == bool and m_test.shape == (60, 32, 32)
    assert x_train.std() > 30  # varied images, not flat colour


def test_masks_cover_the_object():
    x, y, masks = cc.draw_synthetic(100, seed=1)
    coverage = masks.mean(axis=(1, 2))
    assert (coverage > 0.03).all() and (coverage < 0.6).all()
    # The object differs from the background around it: pixel statistics inside and outside the mask differ.
    inside = np.array([x[i][masks[i]].mean(axis=0) for i in range(100)])
    outside = np.array([x[i][~masks[i]].mean(axis=0) for i in range(100)])
    assert np.abs(inside - outside).sum(axis=1).mean() > 40


def background(x):
    """Mean colour of the image border (the object never reaches it)."""
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    return border.mean(axis=1) / 255


def test_background_bias_ties_background_to_class_and_offset_swaps_it():
    from cifar_course.synthetic import CLASS_BACKGROUNDS

    x, y, _ = cc.draw_synthetic(300, seed=0, background_bias=1.0)
    distance = np.abs(background(x) - CLASS_BACKGROUNDS[y]).sum(axis=1)
    assert np.median(distance) < 0.2
    x, y, _ = cc.draw_synthetic(300, seed=0, background_bias=1.0, background_offset=3)
    swapped = np.abs(background(x) - CLASS_BACKGROUNDS[(y.astype(int) + 3) % 10]).sum(axis=1)
    own = np.abs(background(x) - CLASS_BACKGROUNDS[y]).sum(axis=1)
    assert np.median(swapped) < 0.2 and np.median(own) > 0.3
    x, y, _ = cc.draw_synthetic(300, seed=0, background_bias=0.0)
    assert np.median(np.abs(background(x) - CLASS_BACKGROUNDS[y]).sum(axis=1)) > 0.3
    with pytest.raises(ValueError, match="background_bias"):
        cc.draw_synthetic(10, background_bias=1.5)


def test_learnable_but_not_trivial():
    import tensorflow as tf

    cc.seed_everything(0, deterministic=True)
    (x_train, y_train), (x_test, y_test) = cc.make_synthetic(2000, 500)
    layers = tf.keras.layers
    inputs = tf.keras.Input((32, 32, 3))
    h = layers.Rescaling(1 / 255)(inputs)
    for width in (32, 64):
        h = layers.Conv2D(width, 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(h)
    h = layers.Dense(64, activation="relu")(layers.Flatten()(h))
    model = tf.keras.Model(inputs, layers.Dense(10)(h))
    model.compile(tf.keras.optimizers.Adam(1e-3),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=5, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    # Chance is 0.10 (+-0.013 on 500 images); a tiny CNN gets about 0.3 here after 5 short epochs.
    assert 0.2 < accuracy < 0.97, accuracy
