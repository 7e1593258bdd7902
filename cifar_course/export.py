"""Exporting a trained model for serving: SavedModel, TFLite and ONNX, each with the preprocessing it
needs written beside it, and checks that the exported file computes what the Keras model computes.

Introduced in the deployment chapter (10). tf2onnx and onnxruntime are imported inside the functions.

The preprocessing file (`<model>.json` beside a file, `preprocessing.json` inside a SavedModel folder)
holds the class names, input size and per-channel mean/std in [0, 1] units, so a server standardizes
images exactly as training did: x = (pixels / 255 - mean) / std.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PREPROCESSING_FILE = "preprocessing.json"


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


def _quiet_tf_logger():
    """TensorFlow's Python logger announces every SavedModel it writes ('Assets written to ...')."""
    import contextlib

    import tensorflow as tf

    @contextlib.contextmanager
    def quiet():
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")
        try:
            yield
        finally:
            logger.setLevel(level)

    return quiet()


def export_saved_model(model, path, class_names, stats=None) -> Path:
    """Write a SavedModel folder (serving signature 'serving_default') plus its preprocessing file."""
    path = Path(path)
    with _quiet_tf_logger():
        model.save(path, save_format="tf", include_optimizer=False)
    write_preprocessing(path, class_names, stats, model.input_shape[1:])
    return path


def export_tflite(model, path, class_names, stats=None, mode: str = "float32",
                  representative_data=None) -> Path:
    """Convert to TFLite (see `compress.to_tflite` for the modes) and write the preprocessing file."""
    from .compress import to_tflite

    path = Path(path)
    to_tflite(model, mode, representative_data, path=path)
    write_preprocessing(path, class_names, stats, model.input_shape[1:])
    return path


def export_onnx(model, path, class_names, stats=None, opset: int = 13) -> Path:
    """Convert a Keras model to ONNX with tf2onnx (batch dimension left dynamic)."""
    import tensorflow as tf
    import tf2onnx

    from .compress import quiet_native

    path = Path(path)
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="images"),)
    with quiet_native(), _quiet_tf_logger():
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=str(path))
    write_preprocessing(path, class_names, stats, model.input_shape[1:])
    return path


def load_onnx(path):
    """An onnxruntime CPU session for an exported .onnx file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predict_onnx(session, x) -> np.ndarray:
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.asarray(x, np.float32)})[0]


def export_gap(model, path, x) -> float:
    """Largest absolute difference between the Keras model's probabilities and the exported artifact's
    (SavedModel folder, .tflite or .onnx) on the standardized images `x`."""
    from .serve import load_predictor

    expected = model.predict(np.asarray(x, np.float32), verbose=0)
    got = load_predictor(path).predict_array(np.asarray(x, np.float32))
    return float(np.abs(expected - got).max())
