"""Evaluation metrics against cases small enough to compute by hand."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

import cifar_course as cc

PROBS = np.array([
    [0.7, 0.2, 0.1],  # true 0: top-1 right
    [0.5, 0.3, 0.2],  # true 1: right at top-2
    [0.6, 0.3, 0.1],  # true 2: right only at top-3
    [0.05, 0.15, 0.8],  # true 0: wrong, confident (right only at top-3)
])
LABELS = np.array([0, 1, 2, 0])


def test_top_k_accuracy_by_hand():
    assert cc.top_k_accuracy(PROBS, LABELS, 1) == 0.25
    assert cc.top_k_accuracy(PROBS, LABELS, 2) == 0.5  # samples 0 and 1
    assert cc.top_k_accuracy(PROBS, LABELS, 3) == 1.0


def test_ece_is_zero_when_calibrated_and_the_gap_when_not():
    # 10 samples at confidence 0.8 of which 8 are right: perfectly calibrated.
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert cc.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.0, abs=1e-9)
    # The same confidences, all right: under-confident by 0.2.
    assert cc.expected_calibration_error(probs, np.zeros(10, int), n_bins=10) == pytest.approx(0.2)
    # Two bins: half at 0.9 all wrong (gap 0.9), half at 0.6 all right (gap 0.4) -> ECE 0.65.
    probs = np.array([[0.9, 0.1]] * 5 + [[0.6, 0.4]] * 5)
    labels = np.array([1] * 5 + [0] * 5)
    assert cc.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.65)
    bins = cc.calibration_bins(probs, labels, n_bins=10)
    assert sum(b["count"] for b in bins) == 10 and [b["count"] for b in bins][5] == 5


def test_worst_mistakes_orders_wrong_predictions_by_confidence():
    idx = cc.worst_mistakes(PROBS, LABELS, n=5)
    # Wrong at top-1: samples 1 (0.5), 2 (0.6), 3 (0.8) -> most confident first.
    assert list(idx) == [3, 2, 1]
    assert list(cc.worst_mistakes(PROBS, LABELS, n=1)) == [3]


def test_confusion_and_report():
    pred = PROBS.argmax(axis=1)  # [0, 0, 0, 2]
    m = cc.confusion(LABELS, pred, 3)
    assert m.tolist() == [[1, 0, 1], [1, 0, 0], [1, 0, 0]]
    rows = cc.class_report(LABELS, pred, ["a", "b", "c"])
    assert [r["class"] for r in rows] == ["a", "b", "c", "macro avg"]
    assert rows[0]["precision"] == pytest.approx(1 / 3) and rows[0]["recall"] == pytest.approx(0.5)
    assert rows[1]["recall"] == 0 and rows[0]["support"] == 2


def test_confused_pairs_add_both_directions_and_rank_them():
    matrix = np.array([[50, 1, 4], [3, 40, 0], [2, 0, 30]])
    rows = cc.confused_pairs(matrix, ["a", "b", "c"])
    assert [(r["pair"], r["errors"]) for r in rows] == [("a/c", 6), ("a/b", 4), ("b/c", 0)]
    assert sum(r["share of all errors"] for r in rows) == pytest.approx(1.0)
    assert len(cc.confused_pairs(matrix, ["a", "b", "c"], n=1)) == 1


def test_calibration_bins_agree_with_scikit_learn():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10) * 0.3, size=2000)
    labels = rng.integers(0, 10, 2000)
    correct = probs.argmax(1) == labels
    accuracy, confidence = calibration_curve(correct, probs.max(1), n_bins=15, strategy="uniform")
    full = [b for b in cc.calibration_bins(probs, labels, 15) if b["count"]]
    np.testing.assert_allclose([b["accuracy"] for b in full], accuracy, atol=1e-9)
    np.testing.assert_allclose([b["confidence"] for b in full], confidence, atol=1e-9)


def test_evaluate_runs_over_a_dataset_with_one_hot_or_integer_labels():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    x = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    y = np.arange(20) % 3
    res_int = cc.evaluate_model(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(6), ["a", "b", "c"])
    res_hot = cc.evaluate_model(model, tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, 3))).batch(6),
                                ["a", "b", "c"])
    assert res_int["probs"].shape == (20, 3) and res_int["labels"].tolist() == y.tolist()
    assert res_hot["top1"] == res_int["top1"] and res_int["top3"] == 1.0
    assert res_int["confusion"].sum() == 20


def test_top_k_accuracy_matches_the_definition_on_random_scores():
    rng = np.random.default_rng(0)
    for classes in (2, 3, 10):
        probs = rng.dirichlet(np.ones(classes), size=200)  # continuous: no ties
        labels = rng.integers(0, classes, 200)
        for k in range(1, classes + 2):
            by_hand = (np.argsort(-probs, axis=1)[:, :k] == labels[:, None]).any(axis=1).mean()
            assert cc.top_k_accuracy(probs, labels, k) == pytest.approx(by_hand)
    assert cc.top_k_accuracy(PROBS[:1], LABELS[:1], 1) == 1.0  # classes missing from the labels count too


def test_predict_outputs_batches_arrays_and_datasets_alike():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    x = np.random.default_rng(0).normal(size=(23, 4)).astype("float32")
    expected = model(x).numpy()
    calls = []

    def double(batch):
        calls.append(len(batch))
        return batch * 2.0

    np.testing.assert_allclose(cc.predict_outputs(model, x, batch_size=5), expected, rtol=1e-6)
    doubled = cc.predict_outputs(model, x, batch_size=5, preprocess=double)
    assert calls == [5, 5, 5, 5, 3] and doubled.dtype == np.float32
    np.testing.assert_allclose(doubled, model(2 * x).numpy(), rtol=1e-6)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(10)
    np.testing.assert_allclose(cc.predict_outputs(model, ds), expected, rtol=1e-6)
    assert cc.predict_outputs(model, x[:0]).shape == (0, 3)


def test_bad_shapes_get_a_clear_error():
    with pytest.raises(ValueError, match="argmax"):
        cc.top_k_accuracy(PROBS, np.eye(3)[[0, 1, 2, 0]], 1)


def test_plots_draw(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    fig = cc.plot_confusion_matrix(cc.confusion(LABELS, PROBS.argmax(1), 3), ["a", "b", "c"])
    assert len(fig.axes[0].texts) == 9
    fig = cc.plot_reliability(cc.calibration_bins(PROBS, LABELS, 5), 0.1)
    assert "ECE" in fig.axes[0].get_title()
    fig = cc.plot_mistakes(np.zeros((4, 8, 8, 3), np.uint8), PROBS, LABELS, [3, 2], ["a", "b", "c"])
    assert len(fig.axes) == 8
