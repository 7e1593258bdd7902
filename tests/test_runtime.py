"""runtime: the preprocessing file, NumPy standardization, loading an artifact by its kind, and no
TensorFlow import at import time (the serving install has none; tests/test_serve_slim.py runs there)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from tensorflow import keras

from cifar_course import runtime as R
from cifar_course.models import build_small_cnn


def test_runtime_imports_no_tensorflow():
    """Loaded as a standalone file, so the package's __init__ (which imports TensorFlow) stays out."""
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('runtime', {R.__file__!r}); "
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_preprocessing_round_trip(tmp_path):
    model_file = tmp_path / "m.tflite"
    path = R.write_preprocessing(model_file, ["a", "b"], (np.array([0.5, 0.4, 0.3]), np.full(3, 0.2)))
    assert path == tmp_path / "m.json" and R.preprocessing_path(tmp_path) == tmp_path / R.PREPROCESSING_FILE
    info = R.read_preprocessing(model_file)
    assert info["class_names"] == ["a", "b"] and info["input_shape"] == [32, 32, 3]
    assert info["mean"] == pytest.approx([0.5, 0.4, 0.3]) and json.loads(path.read_text()) == info
    with pytest.raises(FileNotFoundError, match="write_preprocessing"):
        R.read_preprocessing(tmp_path / "other.onnx")


def test_standardize_per_channel():
    pixels = np.array([[[0, 255, 51]]], np.uint8)
    x = R.standardize(pixels, [0.0, 0.5, 0.2], [1.0, 0.5, 0.1])
    assert x.dtype == np.float32 and np.allclose(x, [[[0.0, 1.0, 0.0]]], atol=1e-6)


def test_load_artifact_by_kind(tmp_path):
    from cifar_course.compress import to_tflite

    keras.utils.set_random_seed(0)
    model = build_small_cnn(width=4)
    path = tmp_path / "model.tflite"
    to_tflite(model, path=path)
    runner = R.load_artifact(path)
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32")
    assert runner.kind == "tflite" and runner.input_shape == (32, 32, 3)
    assert np.abs(runner.predict(x) - model.predict(x, verbose=0)).max() < 1e-5
    # Without tflite_runtime in the full environment, TFLite runs on TensorFlow's interpreter.
    import tensorflow as tf

    try:
        import tflite_runtime  # noqa: F401
    except ImportError:
        assert R.tflite_interpreter_class() is tf.lite.Interpreter
    with pytest.raises(FileNotFoundError, match="No model"):
        R.load_artifact(tmp_path / "missing.onnx")
    (tmp_path / "model.pb").write_bytes(b"")
    with pytest.raises(ValueError, match="expected a .tflite or .onnx"):
        R.load_artifact(tmp_path / "model.pb")
    assert R.artifact_kind(tmp_path) == "savedmodel"
