"""tf.data pipelines and augmentation recipes."""

import numpy as np
import pytest
import tensorflow as tf

import cifar_course as cc


@pytest.fixture(scope="module")
def images():
    (x, y), _ = cc.make_synthetic(64, 10)
    return x, y


def test_channel_stats_match_numpy(images):
    x, _ = images
    mean, std = cc.channel_stats(x)
    assert mean.shape == (3,) and std.shape == (3,)
    np.testing.assert_allclose(mean, (x / 255).mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, (x / 255).std(axis=(0, 1, 2)), rtol=1e-4)


def test_normalized_training_images_have_zero_mean_unit_std(images):
    x, y = images
    ds = cc.make_dataset(x, y, batch_size=64, stats=cc.channel_stats(x))
    (batch, labels), = list(ds)
    assert batch.dtype == tf.float32 and batch.shape == (64, 32, 32, 3)
    np.testing.assert_allclose(batch.numpy().mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(batch.numpy().std(axis=(0, 1, 2)), 1, atol=1e-3)
    assert np.array_equal(labels.numpy(), y)  # no shuffling outside training
    raw = next(iter(cc.make_dataset(x, y, batch_size=8)))[0].numpy()
    assert raw.min() >= 0 and raw.max() <= 1 and np.allclose(raw, x[:8] / 255)


def test_sparse_and_one_hot_labels(images):
    x, y = images
    _, sparse = next(iter(cc.make_dataset(x, y, batch_size=16)))
    _, one_hot = next(iter(cc.make_dataset(x, y, batch_size=16, one_hot=True)))
    assert sparse.shape == (16,) and sparse.dtype == tf.int32
    assert one_hot.shape == (16, 10) and one_hot.dtype == tf.float32
    assert np.array_equal(one_hot.numpy().argmax(1), sparse.numpy()) and np.all(one_hot.numpy().sum(1) == 1)


def test_training_shuffles_each_epoch_and_drops_the_partial_batch(images):
    x, y = images
    ds = cc.make_dataset(x[:60], y[:60], batch_size=16, training=True)
    epoch1 = np.concatenate([b[1].numpy() for b in ds])
    epoch2 = np.concatenate([b[1].numpy() for b in ds])
    assert len(epoch1) == 48  # 3 full batches of 16; 12 left out
    assert not np.array_equal(epoch1, y[:48])  # shuffled
    assert not np.array_equal(epoch1, epoch2)  # and reshuffled every epoch


@pytest.mark.parametrize("recipe", ["affine", "padcrop"])
def test_augmentation_keeps_shape_and_dtype_and_changes_images(images, recipe):
    x, y = images
    plain = next(iter(cc.make_dataset(x, y, batch_size=64, training=True, seed=1)))
    augmented = next(iter(cc.make_dataset(x, y, batch_size=64, training=True, augment=recipe, seed=1)))
    assert augmented[0].shape == plain[0].shape and augmented[0].dtype == tf.float32
    assert np.array_equal(augmented[1], plain[1])  # same shuffle, same labels
    changed = np.abs(augmented[0].numpy() - plain[0].numpy()).mean(axis=(1, 2, 3)) > 1e-3
    assert changed.mean() > 0.8
    # Evaluation pipelines never augment.
    test = next(iter(cc.make_dataset(x, y, batch_size=64, augment=recipe)))[0].numpy()
    assert np.allclose(test, x / 255)


def test_pad_crop_flip_only_translates_and_flips(images):
    x, _ = images
    batch = tf.constant(x[:32].astype(np.float32))
    out = cc.pad_crop_flip(batch, pad=4).numpy()
    padded = np.pad(x[:32].astype(np.float32), [(0, 0), (4, 4), (4, 4), (0, 0)], mode="reflect")
    offsets = set()
    for i in range(32):
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                   if np.array_equal(out[i], (lambda c: c[:, ::-1] if flip else c)(padded[i, dy:dy + 32, dx:dx + 32]))]
        assert matches, f"image {i} is not a shifted or flipped crop of its reflect-padded input"
        offsets.add(matches[0])
    assert len(offsets) > 5  # offsets differ from image to image


def test_random_affine_with_zero_ranges_is_the_identity(images):
    x, _ = images
    batch = tf.constant(x[:8].astype(np.float32))
    out = cc.random_affine(batch, rotation_deg=0, shift=0, zoom=0, flip=False)
    np.testing.assert_allclose(out.numpy(), batch.numpy(), atol=1e-3)
    moved = cc.random_affine(batch)
    assert moved.shape == batch.shape and not np.allclose(moved.numpy(), batch.numpy())


def test_unknown_augmentation_name_and_mismatched_lengths(images):
    x, y = images
    with pytest.raises(ValueError, match="Unknown augmentation 'cutmixx'.*affine.*padcrop"):
        cc.make_dataset(x, y, augment="cutmixx")
    with pytest.raises(ValueError, match="64 images but 10 labels"):
        cc.make_dataset(x, y[:10])
    custom = cc.make_dataset(x, y, batch_size=4, training=True, augment=lambda b: b * 0)
    assert float(tf.reduce_max(next(iter(custom))[0])) == 0


def test_image_data_generator_equivalents_and_throughput_rows(images):
    x, y = images
    gen = cc.make_image_data_generator("padcrop")
    assert gen.width_shift_range == 4 and gen.fill_mode == "reflect" and gen.horizontal_flip
    with pytest.raises(ValueError, match="'affine' or 'padcrop'"):
        cc.make_image_data_generator("mixup")
    rows = cc.measure_throughput(x, y, recipes=("padcrop",), batch_size=16, n_images=32, repeats=1)
    assert [r["loader"] for r in rows] == ["ImageDataGenerator", "tf.data (this course)"]
    assert rows[0]["speed-up"] == 1.0 and all(r["images/s"] > 0 for r in rows)


def test_measure_parallelism_times_each_setting_of_the_same_pipeline(images):
    x, y = images
    rows = cc.measure_parallelism(x, y, settings=(1, 2, "AUTOTUNE"), recipe="padcrop", batch_size=16,
                                  n_images=32, repeats=1)
    assert [r["num_parallel_calls"] for r in rows] == ["1", "2", "AUTOTUNE"]
    assert rows[0]["relative"] == 1.0 and all(r["images/s"] > 0 for r in rows)
    # The setting changes how batches are prepared, never what they hold (without augmentation).
    one = [b[0].numpy() for b in cc.make_dataset(x, y, batch_size=16, num_parallel_calls=1)]
    auto = [b[0].numpy() for b in cc.make_dataset(x, y, batch_size=16)]
    np.testing.assert_array_equal(np.concatenate(one), np.concatenate(auto))


def test_pad_crop_without_flip_only_shifts():
    x = tf.constant(np.random.default_rng(1).normal(size=(16, 8, 8, 3)), tf.float32)
    out = cc.pad_crop_flip(x, pad=0, flip=False)
    np.testing.assert_array_equal(out.numpy(), x.numpy())


def test_normalize_is_standardize_of_pixels():
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
    stats = (np.array([0.4, 0.5, 0.6], np.float32), np.array([0.2, 0.25, 0.3], np.float32))
    expected = (x / 255.0 - stats[0]) / stats[1]
    np.testing.assert_allclose(cc.normalize(x, stats).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(cc.standardize(x / 255.0, stats).numpy(), expected, atol=1e-5)
    assert cc.standardize(x / 255.0).dtype == tf.float32
