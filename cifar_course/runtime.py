"""Loading and running an exported model (TFLite, ONNX or SavedModel) and its preprocessing file.

What `compress`, `export` and `serve` share, so each of them imports it from here. This module imports
neither TensorFlow nor anything else of the course at import time: the serving install (no TensorFlow,
see `requirements-serve.txt`) runs a `.tflite` file through `tflite_runtime` and a `.onnx` file through
onnxruntime. Where TensorFlow is installed and `tflite_runtime` is not, TFLite runs on `tf.lite`.

The preprocessing file (`<model>.json` beside a file, `preprocessing.json` inside a SavedModel folder)
holds the class names, input size and per-channel mean/std in [0, 1] units, so a server standardizes
images exactly as training did: x = (pixels / 255 - mean) / std.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np

PREPROCESSING_FILE = "preprocessing.json"
ARTIFACT_KINDS = ("tflite", "onnx", "savedmodel")


# ------------------------------------------------------------------------------------------------
# The preprocessing file


def preprocessing_path(model_path) -> Path:
    """Where the preprocessing JSON of a model artifact lives."""
    path = Path(model_path)
    return path / PREPROCESSING_FILE if path.is_dir() else path.with_suffix(".json")


def write_preprocessing(model_path, class_names, stats=None, input_shape=(32, 32, 3)) -> Path:
    """Write the class names, input shape and channel mean/std beside a model artifact."""
    mean, std = stats if stats is not None else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    info = {"class_names": list(class_names), "input_shape": [int(d) for d in input_shape],
            "mean": [float(v) for v in np.ravel(mean)], "std": [float(v) for v in np.ravel(std)],
            "scale": "pixels / 255, then (x - mean) / std per channel"}
    path = preprocessing_path(model_path)
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def read_preprocessing(model_path) -> dict:
    """The preprocessing JSON of a model artifact, with a clear error when it is missing."""
    path = preprocessing_path(model_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No preprocessing file {path} beside the model {model_path}: write it with "
            "cc.write_preprocessing(model_path, class_names, stats) when exporting.")
    return json.loads(path.read_text())


def standardize(pixels, mean, std) -> np.ndarray:
    """uint8 images (..., H, W, C) -> float32 (pixels / 255 - mean) / std, per channel (NumPy only)."""
    x = np.asarray(pixels, np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


# ------------------------------------------------------------------------------------------------
# Keeping native libraries quiet (their output would end up in the book)


@contextlib.contextmanager
def quiet_native():
    """Silence what native code prints to the process's stdout/stderr (TFLite's converter statistics,
    'Created TensorFlow Lite XNNPACK delegate'), at the file-descriptor level."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


@contextlib.contextmanager
def quiet_tf_logger():
    """TensorFlow's Python logger announces every SavedModel it writes ('Assets written to ...')."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


# ------------------------------------------------------------------------------------------------
# Runners: one `predict(x)` for every artifact kind


def tflite_interpreter_class():
    """`tflite_runtime`'s Interpreter (the serving install), else TensorFlow's `tf.lite.Interpreter`."""
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806 (a class)
    return Interpreter


class TFLiteModel:
    """A TFLite interpreter that predicts on batches of any size (the input tensor is resized when the
    batch size changes). Not thread-safe: one instance per thread, or a lock around `predict`."""

    kind = "tflite"

    def __init__(self, model, num_threads: int | None = 1):
        content = Path(model).read_bytes() if isinstance(model, (str, Path)) else bytes(model)
        self.size_bytes = len(content)
        interpreter_class = tflite_interpreter_class()  # imported outside quiet_native: errors stay visible
        with quiet_native():
            self.interpreter = interpreter_class(model_content=content, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = int(self._input["shape"][0])
        self.input_shape = tuple(int(d) for d in self._input["shape"][1:])

    def _resize(self, batch: int):
        if batch != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], [batch, *self.input_shape])
            self.interpreter.allocate_tensors()
            self._batch = batch

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Probabilities for float32 images (N, H, W, C) standardized like the Keras model's input."""
        x = np.asarray(x, np.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"Images of shape {x.shape[1:]} given; this model takes {self.input_shape}.")
        outputs = []
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size]
            self._resize(len(chunk))
            self.interpreter.set_tensor(self._input["index"], chunk)
            self.interpreter.invoke()
            outputs.append(self.interpreter.get_tensor(self._output["index"]).copy())
        return np.concatenate(outputs) if outputs else np.zeros((0, self._output["shape"][-1]), np.float32)


def load_onnx(path, num_threads: int | None = None):
    """An onnxruntime CPU session for an exported .onnx file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if num_threads:
        options.intra_op_num_threads = num_threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predict_onnx(session, x) -> np.ndarray:
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.asarray(x, np.float32)})[0]


class OnnxModel:
    """An onnxruntime session behind the same `predict(x)`; thread-safe (onnxruntime allows concurrent
    `run` calls on one session)."""

    kind = "onnx"

    def __init__(self, path, num_threads: int | None = None):
        self.session = load_onnx(path, num_threads)
        self.input_shape = tuple(self.session.get_inputs()[0].shape[1:])

    def predict(self, x) -> np.ndarray:
        return predict_onnx(self.session, x)


class SavedModelRunner:
    """A SavedModel's 'serving_default' signature behind the same `predict(x)` (needs TensorFlow)."""

    kind = "savedmodel"

    def __init__(self, path):
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(str(path))  # the signature needs its object alive
        self._signature = self._loaded.signatures["serving_default"]

    def predict(self, x) -> np.ndarray:
        outputs = self._signature(self._tf.constant(np.asarray(x, np.float32)))
        return next(iter(outputs.values())).numpy()


def artifact_kind(path) -> str:
    """'tflite', 'onnx' or 'savedmodel' from the path, with a clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No model at {path}: pass a .tflite or .onnx file or a SavedModel folder "
                                "written by cc.export_*.")
    if path.is_dir():
        return "savedmodel"
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("tflite", "onnx"):
        raise ValueError(f"Cannot load {path}: expected a .tflite or .onnx file or a SavedModel folder.")
    return kind


def load_artifact(path, num_threads: int | None = None):
    """A runner with `predict(x)` (standardized float32 images in, probabilities out) for an exported
    model; its `kind` attribute says which runtime runs it."""
    kind = artifact_kind(path)
    if kind == "tflite":
        return TFLiteModel(path, num_threads)
    if kind == "onnx":
        return OnnxModel(path, num_threads)
    return SavedModelRunner(path)
