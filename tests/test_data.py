"""The data layer: every loader on tiny fixtures written here, and a clear DataError for each bad input."""

import hashlib
import io
import pickle
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

import cifar_course as cc
from cifar_course import data as data_mod

BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_batch(path, n=20, seed=0, labels=None, width=3072):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (n, width), dtype=np.uint8)
    labels = list(rng.integers(0, 10, n)) if labels is None else labels
    with open(path, "wb") as f:
        pickle.dump({b"data": rows, b"labels": labels}, f)
    return rows, labels


def write_batches(folder, n=20):
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_batch(folder / name, n, seed=i) for i, name in enumerate(BATCH_NAMES)}


def write_tree(root, classes=cc.CLASS_NAMES, per_class=2, size=32, splits=("train", "test")):
    rng = np.random.default_rng(0)
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Downloads and decoded caches go to a temporary folder, never the user's."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CIFAR_COURSE_DATA_DIR", str(folder))
    return folder


def no_network(monkeypatch):
    def refuse(url, timeout=None):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", refuse)


# ------------------------------------------------------------------------------------------------
# Good paths


def test_batches_folder_loads_channels_last_with_flat_labels(tmp_path):
    written = write_batches(tmp_path / "cifar-10-batches-py")
    (x_train, y_train), (x_test, y_test) = splits = cc.load_batches(tmp_path / "cifar-10-batches-py")
    assert x_train.shape == (100, 32, 32, 3) and x_test.shape == (20, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.shape == (100,)
    rows, labels = written["data_batch_1"]
    # Stored channels-first: pixel (row 2, col 5) of channel 1 is at 1024 + 2 * 32 + 5.
    assert x_train[0, 2, 5, 1] == rows[0, 1024 + 2 * 32 + 5]
    assert list(y_train[:20]) == list(labels)
    assert not splits.is_synthetic and "batches" in splits.source


def test_image_folder_takes_classes_from_folder_names(tmp_path):
    write_tree(tmp_path, classes=("cats", "dogs"), per_class=3, splits=("train",))
    x, y, names = cc.load_image_folder(tmp_path / "train")
    assert names == ("cats", "dogs") and x.shape == (6, 32, 32, 3) and list(y) == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(x[0], np.asarray(Image.open(tmp_path / "train" / "cats" / "0.png")))


def test_image_folder_resizes_only_when_asked(tmp_path):
    write_tree(tmp_path, classes=("a", "b"), per_class=1, size=40, splits=("train",))
    with pytest.raises(cc.DataError, match=r"0\.png is 40x40, not 32x32.*resize=True"):
        cc.load_image_folder(tmp_path / "train")
    x, _, _ = cc.load_image_folder(tmp_path / "train", resize=True)
    assert x.shape == (2, 32, 32, 3)


def test_image_tree_loads_and_uses_its_cache(tmp_path, cache):
    write_tree(tmp_path / "tree")
    first = cc.load_image_tree(tmp_path / "tree")
    assert first[0][0].shape == (20, 32, 32, 3) and first.class_names == cc.CLASS_NAMES
    assert list((cache / "decoded").glob("tree-*.npz"))
    second = cc.load_image_tree(tmp_path / "tree")
    assert np.array_equal(first[0][0], second[0][0]) and np.array_equal(first[1][1], second[1][1])
    assert len(list((cache / "decoded").glob("tree-*.npz"))) == 1  # the second load used the cache


def test_image_tree_cache_keeps_class_names_read_from_the_folders(tmp_path, cache):
    write_tree(tmp_path / "tree", classes=("cats", "dogs"))
    first = cc.load_image_tree(tmp_path / "tree", class_names=None)
    second = cc.load_image_tree(tmp_path / "tree", class_names=None)  # from the cache
    assert first.class_names == second.class_names == ("cats", "dogs")


def test_image_tree_cache_notices_an_edited_image(tmp_path, cache):
    write_tree(tmp_path / "tree")
    first = cc.load_image_tree(tmp_path / "tree")
    edited = tmp_path / "tree" / "train" / "cat" / "0.png"  # same name, same file count, new pixels
    Image.new("RGB", (32, 32), (255, 0, 0)).save(edited)
    os.utime(edited, ns=(edited.stat().st_atime_ns, edited.stat().st_mtime_ns + 10**9))
    second = cc.load_image_tree(tmp_path / "tree")
    red = (second[0][0] == [255, 0, 0]).all(axis=(1, 2, 3))
    assert red.sum() == 1 and not (first[0][0] == [255, 0, 0]).all(axis=(1, 2, 3)).any()


def make_archive(tmp_path, n=10):
    write_batches(tmp_path / "src" / "cifar-10-batches-py", n)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_official_format_archive_extracts_after_hash_check(tmp_path):
    archive, digest = make_archive(tmp_path)
    folder = data_mod.extract_archive(archive, tmp_path / "out", sha256=digest)
    (x_train, _), (x_test, _) = cc.load_batches(folder)
    assert x_train.shape == (50, 32, 32, 3) and x_test.shape == (10, 32, 32, 3)


def test_download_from_a_url_checks_the_hash_and_extracts(tmp_path):
    archive, digest = make_archive(tmp_path)
    folder = cc.download_cifar10(tmp_path / "dl", url=archive.as_uri(), sha256=digest)
    assert cc.load_batches(folder)[0][0].shape == (50, 32, 32, 3)
    assert (tmp_path / "dl" / "cifar-10-python.tar.gz").is_file()  # cached for next time


def test_auto_falls_back_to_synthetic_with_a_loud_banner(tmp_path, cache, monkeypatch, capsys):
    no_network(monkeypatch)
    splits = cc.load_cifar10("auto", profile=cc.profile("quick"), data_dir=tmp_path / "empty")
    err = capsys.readouterr().err
    assert "SYNTHETIC" in err and "NOT about CIFAR-10" in err and "network disabled" in err
    assert splits.is_synthetic and "SYNTHETIC" in cc.describe(splits)


def test_cifar10_source_refuses_to_fall_back(tmp_path, cache, monkeypatch):
    no_network(monkeypatch)
    with pytest.raises(cc.DataError, match="Could not download"):
        cc.load_cifar10("cifar10", profile=cc.profile("quick"), data_dir=tmp_path / "empty")


def test_auto_finds_a_local_copy_in_the_data_dir(tmp_path, cache, monkeypatch):
    no_network(monkeypatch)
    write_batches(tmp_path / "dd" / "cifar-10-batches-py")
    splits = cc.load_cifar10("auto", profile=cc.profile("quick"), data_dir=tmp_path / "dd")
    assert not splits.is_synthetic and len(splits[0][0]) == 100


def test_data_env_variable_is_a_path(tmp_path, cache, monkeypatch):
    write_batches(tmp_path / "mine")
    monkeypatch.setenv("CIFAR_COURSE_DATA", str(tmp_path / "mine"))
    monkeypatch.setenv("CIFAR_COURSE_PROFILE", "quick")
    splits = cc.load_cifar10()
    assert str(tmp_path / "mine") in splits.source and len(splits[1][0]) == 20
    # The smoke profile ignores it: CI always runs on the synthetic stand-in.
    assert cc.load_cifar10(profile=cc.profile("smoke")).is_synthetic


def test_path_to_an_archive_or_a_parent_folder_loads(tmp_path, cache):
    archive, _ = make_archive(tmp_path)
    # The real archive's hash is checked by default, so a home-made one is refused by name.
    with pytest.raises(cc.DataError, match="sha256"):
        cc.load_cifar10(str(archive), profile=cc.profile("quick"))
    splits = cc.load_cifar10(str(tmp_path / "src"), profile=cc.profile("quick"))
    assert len(splits[0][0]) == 50


def test_profile_given_by_name(tmp_path, cache):
    make_archive(tmp_path)
    splits = cc.load_cifar10(str(tmp_path / "src"), profile="quick")  # was an AttributeError
    assert len(splits[0][0]) == 50 and not splits.is_synthetic
    smoke = cc.load_cifar10(profile="smoke")
    assert smoke.is_synthetic and len(smoke[0][0]) == cc.profile("smoke").train_size


def test_subset_is_stratified_and_keeps_provenance():
    counts = np.array([50, 60, 70, 80, 90, 100, 110, 120, 130, 140])
    y = np.repeat(np.arange(10), counts).astype(np.uint8)
    x = np.zeros((len(y), 32, 32, 3), np.uint8)
    x[:, 0, 0, 0] = np.arange(len(y)) % 256
    splits = cc.Splits((x, y), (x[:100], y[:100]), source="test")
    (xs, ys), (xt, yt) = cc.subset(splits, 190, None)
    assert np.bincount(ys).tolist() == (counts // 5).tolist() and len(yt) == 100  # each class's share
    assert np.all(np.isin(xs[:, 0, 0, 0], x[:, 0, 0, 0])) and len(xs) == len(ys)
    assert cc.subset(splits, 190, None).source == "test"
    assert np.array_equal(cc.subset(splits, 190)[0][1], ys)  # repeatable
    assert not np.array_equal(cc.subset(splits, 190, seed=1)[0][0], xs)  # but random


def test_subset_of_balanced_data_is_balanced():
    y = np.arange(1000) % 10
    idx = data_mod.stratified_indices(y, 200, seed=3)
    assert np.bincount(y[idx]).tolist() == [20] * 10 and np.all(np.diff(idx) > 0)  # sorted, no repeats
    assert len(data_mod.stratified_indices(y, 0.05)) == 50
    assert len(data_mod.stratified_indices(y, 1.0)) == len(data_mod.stratified_indices(y, 5000)) == 1000


def test_sha256_of_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "blob"
    path.write_bytes(b"cifar" * 300_000)
    assert data_mod.sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------
# Bad input: a DataError that names the file and the fix


def test_missing_folder(tmp_path):
    with pytest.raises(cc.DataError, match="missing data_batch_1.*Extract the official"):
        cc.load_batches(tmp_path)
    with pytest.raises(cc.DataError, match="does not exist.*CIFAR_COURSE_DATA"):
        cc.load_cifar10(str(tmp_path / "nowhere"), profile=cc.profile("quick"))
    with pytest.raises(cc.DataError, match="does not exist"):
        cc.load_image_folder(tmp_path / "nowhere")


def test_truncated_batch_file(tmp_path):
    write_batches(tmp_path)
    blob = (tmp_path / "data_batch_3").read_bytes()
    (tmp_path / "data_batch_3").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(cc.DataError, match=r"data_batch_3 is truncated.*extract the official archive again"):
        cc.load_batches(tmp_path)


def test_corrupt_batch_file(tmp_path):
    write_batches(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(cc.DataError, match="test_batch is truncated or not a CIFAR-10 batch"):
        cc.load_batches(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"something": 1}, f)
    with pytest.raises(cc.DataError, match="test_batch"):
        cc.load_batches(tmp_path)


def test_batch_with_wrong_shape(tmp_path):
    write_batches(tmp_path)
    write_batch(tmp_path / "data_batch_2", width=1024)
    with pytest.raises(cc.DataError, match=r"data_batch_2: expected \(N, 3072\)"):
        cc.load_batches(tmp_path)


def test_batch_with_labels_out_of_range(tmp_path):
    write_batches(tmp_path)
    write_batch(tmp_path / "data_batch_4", n=3, labels=[0, 10, 2])
    with pytest.raises(cc.DataError, match=r"data_batch_4: labels must lie in \[0, 10\)"):
        cc.load_batches(tmp_path)


def test_batch_with_negative_labels(tmp_path):
    write_batches(tmp_path)
    write_batch(tmp_path / "data_batch_4", n=3, labels=[0, -1, 2])
    with pytest.raises(cc.DataError, match=r"data_batch_4: labels must lie in \[0, 10\), found -1\.\.2"):
        cc.load_batches(tmp_path)


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((4, 32, 32), np.uint8), np.zeros(4), r"shape \(N, 32, 32, 3\)"),
    (np.zeros((4, 3, 32, 32), np.uint8), np.zeros(4), "Channels go last"),
    (np.zeros((4, 32, 32, 3), np.float32), np.zeros(4), "uint8"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.zeros((4, 1)), r"y.ravel\(\)"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.zeros(3), "one label per image"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 2, 12]), r"\[0, 10\)"),
])
def test_check_arrays_rejects_wrong_arrays(x, y, message):
    with pytest.raises(cc.DataError, match=message):
        cc.check_arrays(x, y, name="mine")
    cc.check_arrays(np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 2, 9]))  # the right thing passes


def test_unknown_and_missing_class_folders(tmp_path):
    classes = list(cc.CLASS_NAMES)
    write_tree(tmp_path, classes=classes[:9] + ["zebra"], per_class=1)
    with pytest.raises(cc.DataError, match="unknown: zebra; missing: truck"):
        cc.load_image_tree(tmp_path)


def test_folder_without_class_subfolders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(cc.DataError, match="no class subfolders"):
        cc.load_image_folder(tmp_path / "empty")


def test_tree_without_a_test_split(tmp_path):
    write_tree(tmp_path, splits=("train",), per_class=1)
    with pytest.raises(cc.DataError, match="no test/ folder"):
        cc.load_image_tree(tmp_path)


def test_non_image_files(tmp_path):
    write_tree(tmp_path, classes=("a", "b"), per_class=1, splits=("train",))
    (tmp_path / "train" / "a" / "notes.txt").write_text("hello")
    with pytest.raises(cc.DataError, match=r"notes\.txt is not an image file; remove it"):
        cc.load_image_folder(tmp_path / "train")
    (tmp_path / "train" / "a" / "notes.txt").unlink()
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(cc.DataError, match=r"broken\.png cannot be read as an image"):
        cc.load_image_folder(tmp_path / "train")
    (tmp_path / "train" / "a" / "broken.png").unlink()
    (tmp_path / "train" / "a" / ".DS_Store").write_bytes(b"junk")  # hidden files are skipped
    assert len(cc.load_image_folder(tmp_path / "train")[0]) == 2


def test_non_32x32_images_in_a_tree(tmp_path, cache):
    write_tree(tmp_path, per_class=1)
    Image.new("RGB", (28, 30)).save(tmp_path / "test" / "cat" / "0.png")
    with pytest.raises(cc.DataError, match=r"cat/0\.png is 28x30, not 32x32"):
        cc.load_image_tree(tmp_path)
    assert cc.load_image_tree(tmp_path, resize=True)[1][0].shape == (10, 32, 32, 3)


def test_failed_download(tmp_path):
    with pytest.raises(cc.DataError, match="Could not download .*put it at .*cifar-10-python.tar.gz"):
        cc.download_cifar10(tmp_path, url=(tmp_path / "absent.tar.gz").as_uri())
    assert not list(tmp_path.glob("*.partial")) and not (tmp_path / "cifar-10-python.tar.gz").exists()
    with pytest.raises(cc.DataError, match="Could not download"):
        cc.download_cifar10(tmp_path, url="http://127.0.0.1:9/cifar.tar.gz", timeout=2)


def test_sha256_mismatch(tmp_path):
    archive, digest = make_archive(tmp_path)
    with pytest.raises(cc.DataError, match=r"has sha256 [0-9a-f]{64}, expected 0{64}.*Delete it and download"):
        data_mod.extract_archive(archive, tmp_path / "out", sha256="0" * 64)
    assert not (tmp_path / "out" / "cifar-10-batches-py").exists()
    with pytest.raises(cc.DataError, match="sha256"):
        cc.download_cifar10(tmp_path / "dl", url=archive.as_uri(), sha256="0" * 64)


def test_archive_with_a_path_escaping_the_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(Exception):
        data_mod.extract_archive(archive, tmp_path / "out", sha256=digest)
    assert not (tmp_path / "escaped.txt").exists()
