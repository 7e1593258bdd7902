"""Figures: the right panels, and errors for wrong input."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import cifar_course as cc  # noqa: E402


@pytest.fixture(scope="module")
def data():
    (x, y), _ = cc.make_synthetic(100, 10)
    return x, y


def test_image_grid_has_a_row_per_class(data):
    x, y = data
    fig = cc.plot_image_grid(x, y, cc.SHAPE_NAMES, per_class=4)
    assert len(fig.axes) == 40
    assert [fig.axes[4 * row].get_ylabel() for row in range(10)] == list(cc.SHAPE_NAMES)
    shown = fig.axes[0].get_images()[0].get_array()
    assert any(np.array_equal(shown, img) for img in x[y == 0])  # row 0 shows class 0
    with pytest.raises(ValueError, match="100 images but 5 labels"):
        cc.plot_image_grid(x, y[:5], cc.SHAPE_NAMES)


def test_class_balance_bars_count_each_split(data):
    x, y = data
    fig = cc.plot_class_balance(y, y[:50], cc.SHAPE_NAMES)
    heights = sorted(bar.get_width() for bar in fig.axes[0].patches)
    assert len(heights) == 20 and heights[-1] == np.bincount(y).max()
    assert sum(heights) == 150


def test_augmentations_one_row_per_recipe(data):
    x, _ = data
    fig = cc.plot_augmentations(x[0], {"flip": lambda b: b[:, :, ::-1], "same": lambda b: b}, n=3)
    assert len(fig.axes) == 8
    assert np.array_equal(fig.axes[1].get_images()[0].get_array(), x[0][:, ::-1])
    assert np.array_equal(fig.axes[5].get_images()[0].get_array(), x[0])
    with pytest.raises(ValueError, match="one image"):
        cc.plot_augmentations(x[:2], {"same": lambda b: b})


def test_plot_schedule_draws_one_line_per_schedule():
    scheds = {n: cc.make_schedule(n, 0.1, 50, steps_per_epoch=5) for n in ("cosine", "onecycle")}
    ax = cc.plot_schedule(scheds, 50, steps_per_epoch=5)
    assert len(ax.get_lines()) == 2 and ax.get_xlabel() == "epoch"


def test_plot_history_draws_train_and_validation_per_run():
    runs = {"a": {"loss": [2.0, 1.5], "val_loss": [2.1, 1.7]}, "b": {"loss": [2.0, 1.2]}}
    loss_ax, = cc.plot_history(runs, metrics=("loss",))
    styles = [line.get_linestyle() for line in loss_ax.get_lines()]
    assert styles == ["-", "--", "-"]  # a: train and validation, b: train only (no validation logged)
    assert loss_ax.get_xlabel() == "epoch" and list(loss_ax.get_lines()[0].get_xdata()) == [1, 2]
