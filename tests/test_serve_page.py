"""The demo page in a real headless browser: the distribution's Chromium (`apt-get install chromium`,
which .ci/run does) driven by Playwright, on 127.0.0.1 only. The page loads and names the model, an
uploaded PNG shows the top-k classes as bars, a file that is not an image shows the server's error."""

import numpy as np
import pytest
from tensorflow import keras

from cifar_course import export as E
from cifar_course import serve as S
from cifar_course.models import build_small_cnn


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("page")
    names = [f"class{i}" for i in range(10)]
    path = E.export_tflite(build_small_cnn(width=4), folder / "model.tflite", names)
    with S.running_server(path, top_k=3) as base:
        yield base


@pytest.fixture(scope="module")
def page(url, chromium):
    page = chromium.new_page()
    page.set_default_timeout(15_000)
    page.goto(url + "/")
    yield page
    page.close()


def test_page_loads_and_names_the_model(page):
    page.wait_for_function("document.getElementById('model').textContent.includes('model.tflite')")
    assert "10 classes" in page.text_content("#model")


def test_upload_shows_the_top_classes(page, tmp_path):
    png = tmp_path / "cat.png"
    png.write_bytes(S.encode_png(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)))
    page.set_input_files("#file", str(png))
    page.wait_for_selector(".prediction")
    rows = page.query_selector_all(".prediction")
    assert len(rows) == 3 and all(row.text_content().startswith("class") for row in rows)
    widths = [float(page.evaluate("el => parseFloat(el.style.width)", row.query_selector(".bar")))
              for row in rows]
    assert widths == sorted(widths, reverse=True) and widths[0] > 0
    assert "Resized from 64x64 to 32x32" in page.text_content("#results")
    assert page.text_content("#error") == ""


def test_bad_file_shows_the_error(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not a picture")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "Could not decode the image" in page.text_content("#error")
    assert page.query_selector_all(".prediction") == []
