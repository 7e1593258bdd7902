"""compress and export: cost counts against hand-computed values, QAT/int8/pruning on a tiny model,
TFLite/SavedModel/ONNX agreeing with Keras. Seconds in total."""

import numpy as np
import pytest
from tensorflow import keras
from tensorflow.keras import layers

from cifar_course import compress as C
from cifar_course import export as E
from cifar_course import runtime as R
from cifar_course.models import build_mobilenet_v2, build_separable_cnn, build_small_cnn, conv_bn_relu


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 96)
    return x, y


def build_two_stage_cnn(widths=(32, 64)):
    """build_small_cnn's layer types (conv-BN-ReLU, max-pooling, global pooling, a softmax classifier) in
    two stages: 10 layers instead of its 23, with about the weights of build_small_cnn(width=8) (20,330
    against 18,850). Conversion, QAT and pruning wrappers cost time per layer, not per weight."""
    inputs = keras.Input((32, 32, 3))
    x = layers.MaxPooling2D()(conv_bn_relu(inputs, widths[0], name="stage1"))  # (16, 16, 32)
    x = layers.GlobalAveragePooling2D()(conv_bn_relu(x, widths[1], name="stage2"))  # (64,)
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="classifier")(x))


@pytest.fixture(scope="module")
def tiny(data):
    x, y = data
    keras.utils.set_random_seed(0)
    model = build_two_stage_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def tflites(tiny, data):
    """Each conversion takes seconds: convert once per module."""
    return {"float32": C.to_tflite(tiny), "dynamic": C.to_tflite(tiny, "dynamic"),
            "int8": C.to_tflite(tiny, "int8", representative_data=data[0][:64])}


def test_count_cost_matches_hand_computation():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)  # 8*8 * 3*3*3 * 4 = 6912
    x = layers.DepthwiseConv2D(3, padding="valid", use_bias=False)(x)  # 6*6 * 3*3 * 4 = 1296
    x = layers.SeparableConv2D(5, 3, strides=2, padding="same")(x)  # 3*3*(9*4 + 4*5) = 504
    x = layers.Flatten()(x)  # 45
    out = layers.Dense(7)(x)  # 45*7 = 315
    cost = C.count_cost(keras.Model(inputs, out))
    assert cost["macs"] == 6912 + 1296 + 504 + 315
    assert cost["params"] == 108 + 36 + (36 + 20 + 5) + (45 * 7 + 7)


def test_separable_variants_are_cheaper():
    dense = C.count_cost(build_small_cnn(width=16))
    separable = C.count_cost(build_separable_cnn(width=16))
    mobile = build_mobilenet_v2(width=8)
    assert separable["params"] < dense["params"] / 3 and separable["macs"] < dense["macs"] / 3
    assert mobile(np.zeros((2, 32, 32, 3), "float32")).shape == (2, 10)
    kinds = {row[1] for row in C.count_cost(mobile)["layers"]}
    assert {"DepthwiseConv2D", "Add"} <= kinds


def test_tflite_variants_agree_and_int8_is_smaller(tiny, data, tflites):
    x, _ = data
    float_tfl, int8_tfl, dynamic_tfl = tflites["float32"], tflites["int8"], tflites["dynamic"]
    assert C.keras_tflite_gap(tiny, float_tfl, x[:16]) < 1e-5
    assert C.keras_tflite_gap(tiny, int8_tfl, x[:16]) < 0.05  # probabilities, 8-bit activations
    assert len(int8_tfl) < len(float_tfl) / 2 and len(dynamic_tfl) < len(float_tfl) / 2
    probs = R.TFLiteModel(int8_tfl).predict(x[:5], batch_size=2)  # resizes to 2, then 1
    assert probs.shape == (5, 10) and np.allclose(probs.sum(-1), 1, atol=0.02)
    with pytest.raises(ValueError, match="representative_data"):
        C.to_tflite(tiny, "int8")
    with pytest.raises(ValueError, match="mode"):
        C.to_tflite(tiny, "int4")


def test_qat_converts_to_int8(tiny, data, tflites):
    x, y = data
    qat = C.build_qat_model(tiny)
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, y, epochs=1, batch_size=32, verbose=0)
    tfl = C.to_tflite(qat, "int8")
    assert len(tfl) < len(tflites["float32"]) / 2
    assert C.keras_tflite_gap(qat, tfl, x[:16]) < 0.05


def test_qat_passthrough_for_unsupported_layer(data):
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    x = layers.Rescaling(0.5)(x)  # tfmot has no 8-bit config for Rescaling
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    with pytest.raises(RuntimeError, match="not supported"):
        C.build_qat_model(model, passthrough=(layers.Dense,))  # Rescaling left to tfmot: refused
    qat = C.build_qat_model(model, passthrough=(layers.Rescaling,))
    assert np.isfinite(qat.predict(data[0][:2], verbose=0)).all()


def test_pruning_reaches_target_sparsity(tiny, data, tflites):
    x, y = data
    epochs, steps = 2, 3
    begin, end = C.pruning_steps(epochs, steps, end=0.5)
    assert (begin, end) == (0, 3)
    pruned = C.build_pruned_model(keras.models.clone_model(tiny), begin, end, 0.3, 0.7)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=C.pruning_callbacks())
    stripped = C.strip_pruning(pruned)
    assert not any("prune" in type(layer).__name__.lower() for layer in stripped.layers)
    s = C.sparsity(stripped)
    assert abs(s["overall"] - 0.7) < 0.02
    assert C.sparsity(tiny)["overall"] < 0.01
    dense, pruned = tflites["float32"], C.to_tflite(stripped)
    assert C.file_sizes(pruned)["gzip_bytes"] < 0.6 * C.file_sizes(dense)["gzip_bytes"]
    assert C.file_sizes(pruned)["raw_bytes"] > 0.9 * C.file_sizes(dense)["raw_bytes"]  # zeros stored densely
    sparse_format = C.to_tflite(stripped, sparse=True)
    assert C.file_sizes(sparse_format)["raw_bytes"] < 0.6 * C.file_sizes(pruned)["raw_bytes"]
    same = R.TFLiteModel(sparse_format).predict(x[:8]), R.TFLiteModel(pruned).predict(x[:8])
    np.testing.assert_allclose(*same, atol=1e-6)  # the same model, stored differently
    with pytest.raises(ValueError, match="at least 2"):
        C.pruning_steps(1, 1)


def test_compare_tflite_rows(data, tflites):
    x, y = data
    rows = C.compare_tflite({"float32": tflites["float32"], "dynamic": tflites["dynamic"]},
                            x[:40], y[:40], repeats=3)
    assert [r["model"] for r in rows] == ["float32", "dynamic"]
    assert rows[0]["smaller_x"] == 1.0 and rows[1]["smaller_x"] > 2
    assert all(r["latency_b1_ms"] > 0 and r["throughput_b32_ips"] > 0 for r in rows)


def test_paired_latency_times_every_model_in_turns(data, tflites):
    x, _ = data
    times = C.paired_latency({"float32": tflites["float32"], "int8": tflites["int8"]}, x, batch_size=2,
                             repeats=3, rounds=2)
    assert list(times) == ["float32", "int8"]
    assert all(t > 0 for t in times.values())


def test_paired_latency_rotates_which_model_runs_first(monkeypatch):
    order = []
    monkeypatch.setattr(C, "TFLiteModel", lambda content, num_threads: content)  # the runner is its name
    monkeypatch.setattr(C, "time_tflite", lambda runner, *args: order.append(runner) or {"latency_ms": 1.0})
    times = C.paired_latency({"a": "a", "b": "b", "c": "c"}, x=None, rounds=4)
    assert times == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]


def test_exports_agree_with_keras(tiny, data, tmp_path):
    x, _ = data
    stats = (np.zeros(3), np.ones(3))
    names = [f"c{i}" for i in range(10)]
    saved = E.export_saved_model(tiny, tmp_path / "saved", names, stats)
    onnx_path = E.export_onnx(tiny, tmp_path / "model.onnx", names, stats)
    tfl = E.export_tflite(tiny, tmp_path / "model.tflite", names, stats)
    for path in (saved, onnx_path, tfl):
        assert E.export_gap(tiny, path, x[:8]) < 1e-5, path
        assert R.read_preprocessing(path)["class_names"] == names
    with pytest.raises(FileNotFoundError, match="write_preprocessing"):
        R.read_preprocessing(tmp_path / "missing.tflite")
