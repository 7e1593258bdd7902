"""Loading CIFAR-10 from wherever it is: the official archive, its extracted batches, an image folder tree,
or the synthetic stand-in.

Every loader returns uint8 images of shape (N, 32, 32, 3) and 1-D integer labels, like
`keras.datasets.cifar10.load_data()` but with the labels flattened (Keras gives shape (N, 1), a classic
source of silent broadcasting bugs). Bad input raises `DataError` with the file at fault and the fix.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import config

CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
BATCHES_DIRNAME = "cifar-10-batches-py"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


class DataError(ValueError):
    """Data that cannot be used as it is; the message says which file and what to do."""


class Splits(tuple):
    """`((x_train, y_train), (x_test, y_test))` that also knows where it came from.

    Unpacks like the Keras loader; `source` says what was loaded ("synthetic" for the stand-in) and
    `class_names` names the labels.
    """

    def __new__(cls, train, test, source: str, class_names=CLASS_NAMES):
        self = super().__new__(cls, (tuple(train), tuple(test)))
        self.source = source
        self.class_names = tuple(class_names)
        return self

    @property
    def is_synthetic(self) -> bool:
        return self.source.startswith("synthetic")


# ------------------------------------------------------------------------------------------------
# Checks shared by every loader


def check_arrays(x, y, num_classes: int = len(CLASS_NAMES), name: str = "data") -> None:
    """Raise DataError unless x is uint8 (N, 32, 32, 3) and y holds N labels in [0, num_classes)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise DataError(
            f"{name}: images must have shape (N, 32, 32, 3), got {x.shape}. "
            "Channels go last; resize other sizes first (load_image_folder(..., resize=True))."
        )
    if x.dtype != np.uint8:
        raise DataError(f"{name}: images must be uint8 in [0, 255], got dtype {x.dtype}.")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{name}: labels must be 1-D with one label per image; got shape {y.shape} for {len(x)} "
            "images. Flatten Keras-style (N, 1) labels with y.ravel()."
        )
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"{name}: labels must lie in [0, {num_classes}), found {y.min()}..{y.max()}."
        )


# ------------------------------------------------------------------------------------------------
# The official python archive and its extracted batches


def load_batches(folder) -> Splits:
    """Load an extracted `cifar-10-batches-py` folder (data_batch_1..5 and test_batch)."""
    folder = Path(folder)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"{folder} is not a complete CIFAR-10 batches folder: missing {', '.join(missing)}. "
            "Extract the official cifar-10-python.tar.gz again, or delete the folder so it is downloaded."
        )
    parts = [_read_batch(folder / n) for n in names]
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return Splits((x_train, y_train), parts[5], source=f"cifar10 batches ({folder})")


def _read_batch(path: Path):
    # The official files are pickles; only open ones from the hash-checked archive or your own copy.
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data, labels = batch[b"data"], batch[b"labels"]
    except Exception as err:  # truncated files raise EOFError, UnpicklingError, KeyError, ...
        raise DataError(
            f"{path} is truncated or not a CIFAR-10 batch ({type(err).__name__}: {err}). "
            "Delete the folder and extract the official archive again."
        ) from None
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path}: expected (N, 3072) pixel rows with N labels, got {data.shape}.")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored channels-first
    y = np.asarray(labels).astype(np.int64)  # check before narrowing: -1 as uint8 would pass as 255
    check_arrays(x, y, name=str(path))
    return x, y.astype(np.uint8)


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_cifar10(cache_dir=None, url: str = ARCHIVE_URL, sha256: str = ARCHIVE_SHA256,
                     timeout: float = 20.0) -> Path:
    """Download the official archive (if not cached), check its sha256, extract; return the batches folder."""
    cache_dir = Path(cache_dir or config.data_dir())
    batches = cache_dir / BATCHES_DIRNAME
    if batches.is_dir():
        return batches
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = cache_dir / "cifar-10-python.tar.gz"
    if not archive.is_file():
        partial = archive.with_suffix(".partial")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise DataError(
                f"Could not download {url} ({err}). Download it on a machine with internet access and "
                f"put it at {archive}, or point CIFAR_COURSE_DATA at a local copy."
            ) from None
        partial.rename(archive)
    extract_archive(archive, cache_dir, sha256)
    return batches


def extract_archive(archive, dest, sha256: str = ARCHIVE_SHA256) -> Path:
    """Check the archive's sha256, then extract it safely into dest; return the batches folder."""
    archive, dest = Path(archive), Path(dest)
    actual = sha256_of(archive)
    if actual != sha256:
        raise DataError(
            f"{archive} has sha256 {actual}, expected {sha256}: the download is incomplete or not the "
            "official CIFAR-10 python archive. Delete it and download again."
        )
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(dest, filter="data")  # refuses absolute paths and links out of dest
    return dest / BATCHES_DIRNAME


# ------------------------------------------------------------------------------------------------
# Image folder trees: train/<class>/*.png, test/<class>/*.jpg


def load_image_folder(path, class_names=None, resize: bool = False, size: int = 32):
    """Load `path/<class>/<image>` into (x, y, class_names).

    Classes come from the folder names (sorted) unless `class_names` fixes them and their order.
    Images that are not size x size raise DataError unless `resize=True`.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"Image folder {path} does not exist. Check the path (one subfolder per class).")
    found = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        if not found:
            raise DataError(f"{path} has no class subfolders: put images in {path}/<class name>/.")
        class_names = found
    class_names = list(class_names)
    unknown = sorted(set(found) - set(class_names))
    missing = sorted(set(class_names) - set(found))
    if unknown or missing:
        raise DataError(
            f"{path}: class folders do not match the expected classes"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + f". Expected exactly: {', '.join(class_names)}."
        )
    files, labels = [], []
    for label, name in enumerate(class_names):
        for file in sorted((path / name).iterdir()):
            if file.name.startswith("."):
                continue  # .DS_Store and friends
            if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
                raise DataError(f"{file} is not an image file; remove it from the class folder.")
            files.append(file)
            labels.append(label)
    if not files:
        raise DataError(f"{path}: the class folders hold no images.")

    def read(file):
        try:
            with Image.open(file) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    if not resize:
                        raise DataError(
                            f"{file} is {im.size[0]}x{im.size[1]}, not {size}x{size}. "
                            "Pass resize=True to resize every image, or resize them yourself."
                        )
                    im = im.resize((size, size), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"{file} cannot be read as an image ({err}); remove or replace it.") from None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        x = np.stack(list(pool.map(read, files)))
    return x, np.asarray(labels, dtype=np.uint8), tuple(class_names)


def load_image_tree(path, class_names=CLASS_NAMES, resize: bool = False) -> Splits:
    """Load a tree with `train/` and `test/` image folders (the layout of the course's JPEG copy)."""
    path = Path(path)
    for split in ("train", "test"):
        if not (path / split).is_dir():
            raise DataError(
                f"{path} has no {split}/ folder. An image tree needs {path}/train/<class>/ and "
                f"{path}/test/<class>/."
            )
    cache = _tree_cache_path(path, class_names, resize)
    if cache and cache.is_file():
        with np.load(cache) as f:
            names = tuple(str(name) for name in f["class_names"]) if "class_names" in f else class_names
            return Splits((f["x_train"], f["y_train"]), (f["x_test"], f["y_test"]),
                          source=f"cifar10 image folder ({path})", class_names=names)
    x_train, y_train, names = load_image_folder(path / "train", class_names, resize)
    x_test, y_test, _ = load_image_folder(path / "test", names, resize)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache.parent, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                     class_names=np.array(names))
        os.replace(tmp.name, cache)
    return Splits((x_train, y_train), (x_test, y_test),
                  source=f"cifar10 image folder ({path})", class_names=names)


def _tree_cache_path(path: Path, class_names, resize: bool):
    """A decoded copy in the data dir (None if unwritable), keyed by the tree's location, its files' count,
    total size and latest change, and the load options: adding, removing or editing an image re-decodes."""
    try:
        stats = [f.stat() for f in path.glob("*/*/*")]
        fingerprint = (path.resolve(), len(stats), sum(st.st_size for st in stats),
                       max((st.st_mtime_ns for st in stats), default=0), class_names and tuple(class_names),
                       bool(resize))
        key = hashlib.sha256(repr(fingerprint).encode()).hexdigest()[:16]
        return config.data_dir() / "decoded" / f"tree-{key}.npz"
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------
# One entry point


def load_cifar10(source: str | None = None, data_dir=None, profile=None) -> Splits:
    """Load CIFAR-10 as `((x_train, y_train), (x_test, y_test))`, subset to the profile's sizes.

    source: "auto" (a local copy, else a download, else the synthetic stand-in with a loud warning),
    "cifar10" (real data or an error), "synthetic", or a path to a batches folder, an image tree or the
    official archive. Default: the profile's data setting ($CIFAR_COURSE_DATA outside smoke).
    """
    from .synthetic import make_synthetic

    prof = profile or config.profile()
    source = (source or prof.data).strip()
    data_dir = Path(data_dir or config.data_dir())
    if source == "synthetic":
        splits = make_synthetic(n_train=prof.train_size or 10_000, n_test=prof.test_size or 2_000)
    elif source in ("auto", "cifar10"):
        local = _find_local(data_dir)
        if local is not None:
            splits = _load_path(local)
        else:
            try:
                splits = load_batches(download_cifar10(data_dir))
            except DataError as err:
                if source == "cifar10":
                    raise
                _warn_synthetic(err)
                splits = make_synthetic(n_train=prof.train_size or 10_000, n_test=prof.test_size or 2_000)
    else:
        splits = _load_path(Path(source).expanduser())
    return subset(splits, prof.train_size, prof.test_size)


def _find_local(data_dir: Path):
    for candidate in (data_dir / BATCHES_DIRNAME, data_dir / "cifar10", data_dir):
        if (candidate / "data_batch_1").is_file() or (candidate / "train").is_dir():
            return candidate
    return None


def _load_path(path: Path) -> Splits:
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        return load_batches(extract_archive(path, config.data_dir()))
    if not path.exists():
        raise DataError(
            f"Data path {path} does not exist. Set CIFAR_COURSE_DATA to a cifar-10-batches-py folder, "
            "an image tree with train/ and test/, the official archive, or 'synthetic'."
        )
    if (path / "data_batch_1").exists() or (path / "test_batch").exists():
        return load_batches(path)
    if (path / BATCHES_DIRNAME).is_dir():
        return load_batches(path / BATCHES_DIRNAME)
    return load_image_tree(path)


def _warn_synthetic(reason) -> None:
    bar = "!" * 78
    print(
        f"{bar}\n"
        "!! No CIFAR-10 found and no download possible: using the SYNTHETIC stand-in.\n"
        "!! Every number below is about synthetic shapes, NOT about CIFAR-10.\n"
        f"!! Reason: {reason}\n"
        "!! Fix: set CIFAR_COURSE_DATA to your copy (see the setup page).\n"
        f"{bar}",
        file=sys.stderr,
    )


def subset(splits: Splits, train_size=None, test_size=None, seed: int = 0) -> Splits:
    """Keep a class-balanced random subset of each split (None keeps everything)."""

    def pick(x, y, n):
        if n is None or n >= len(y):
            return x, y
        rng = np.random.default_rng(seed)
        classes = np.unique(y)
        per_class = [rng.permutation(np.flatnonzero(y == c))[: n // len(classes)] for c in classes]
        idx = np.sort(np.concatenate(per_class))
        return x[idx], y[idx]

    (x_train, y_train), (x_test, y_test) = splits
    return Splits(pick(x_train, y_train, train_size), pick(x_test, y_test, test_size),
                  source=splits.source, class_names=splits.class_names)


def describe(splits: Splits) -> str:
    """One line saying what was loaded, for the top of every chapter."""
    (x_train, _), (x_test, _) = splits
    kind = "SYNTHETIC stand-in (not CIFAR-10)" if splits.is_synthetic else "real CIFAR-10"
    return (f"Data: {kind} from {splits.source}: {len(x_train):,} training and "
            f"{len(x_test):,} test images, {len(splits.class_names)} classes.")
