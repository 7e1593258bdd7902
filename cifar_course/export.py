"""Exporting a trained model for serving: SavedModel, TFLite and ONNX, each with the preprocessing it
needs written beside it, and checks that the exported file computes what the Keras model computes.

Introduced in the deployment chapter (10). tf2onnx is imported inside the function that needs it.
Reading the artifacts back and the preprocessing file are `runtime`'s (the serving install has no
TensorFlow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .compress import to_tflite
from .runtime import load_artifact, quiet_native, quiet_tf_logger, write_preprocessing


def export_saved_model(model, path, class_names, stats=None) -> Path:
    """Write a SavedModel folder (serving signature 'serving_default') plus its preprocessing file."""
    path = Path(path)
    with quiet_tf_logger():
        model.save(path, save_format="tf", include_optimizer=False)
    write_preprocessing(path, class_names, stats, model.input_shape[1:])
    return path


def export_tflite(model, path, class_names, stats=None, mode: str = "float32",
                  representative_data=None) -> Path:
    """Convert to TFLite (see `compress.to_tflite` for the modes) and write the preprocessing file."""
    path = Path(path)
    to_tflite(model, mode, representative_data, path=path)
    write_preprocessing(path, class_names, stats, model.input_shape[1:])
    return path


def export_onnx(model, path, class_names, stats=None, opset: int = 13) -> Path:
    """Convert a Keras model to ONNX with tf2onnx (batch dimension left dynamic)."""
    import tensorflow as tf
    import tf2onnx

    path = Path(path)
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="images"),)
    with quiet_native(), quiet_tf_logger():
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=str(path))
    write_preprocessing(path, class_names, stats, model.input_shape[1:])
    return path


def export_gap(model, path, x) -> float:
    """Largest absolute difference between the Keras model's probabilities and the exported artifact's
    (SavedModel folder, .tflite or .onnx) on the standardized images `x`."""
    expected = model.predict(np.asarray(x, np.float32), verbose=0)
    got = load_artifact(path).predict(np.asarray(x, np.float32))
    return float(np.abs(expected - got).max())


def export_for_serving(model, folder, class_names, stats=None) -> dict:
    """What the server and the Docker image serve: FOLDER/model.tflite and FOLDER/model.onnx (float32),
    each with its preprocessing JSON. `cifar-course export-demo FOLDER` trains a model and calls this."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {"tflite": export_tflite(model, folder / "model.tflite", class_names, stats),
            "onnx": export_onnx(model, folder / "model.onnx", class_names, stats)}
