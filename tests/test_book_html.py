"""No rendered chapter shows TensorFlow's C++ start-up log.

`make book` runs this on the pages it just built (CIFAR_COURSE_BOOK_HTML=<book>/_build/html, where no
pages is a failure); in `make test` it checks the last build in _build/html, if there is one.
"""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What TensorFlow 2.14's C++ side prints when it starts below TF_CPP_MIN_LOG_LEVEL=3 on a CPU machine
# (chapter 10 names TF-TRT in its prose, hence the whole "TF-TRT Warning").
TF_STARTUP_LOG = re.compile(
    r"Unable to register cu(DNN|FFT|BLAS)|cuda_dnn|oneDNN custom operations|cpu_feature_guard"
    r"|TF-TRT Warning")


def chapter_pages():
    html = os.environ.get("CIFAR_COURSE_BOOK_HTML")
    pages = sorted(Path(html or ROOT / "_build" / "html").glob("chapters/*.html"))
    if not pages:
        if html:
            pytest.fail(f"no chapter pages under {html}/chapters: the book did not build")
        pytest.skip("no built book in _build/html (make book)")
    return pages


def test_the_pattern_catches_tensorflow_startup_lines():
    # Lines as TensorFlow 2.14 prints them when the log level is not set.
    lines = [
        "E tensorflow/compiler/xla/stream_executor/cuda/cuda_dnn.cc:9342] Unable to register cuDNN "
        "factory: Attempting to register factory for plugin cuDNN when one has already been registered",
        "I tensorflow/core/util/port.cc:111] oneDNN custom operations are on. You may see slightly "
        "different numerical results due to floating-point round-off errors",
        "I tensorflow/core/platform/cpu_feature_guard.cc:182] This TensorFlow binary is optimized to use "
        "available CPU instructions in performance-critical operations.",
        "W tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] TF-TRT Warning: Could not find TensorRT",
    ]
    assert all(TF_STARTUP_LOG.search(line) for line in lines)
    assert not TF_STARTUP_LOG.search("TensorRT reaches it through TF-TRT (a converter)")


def test_no_chapter_page_shows_tensorflow_startup_log():
    found = {page.name: match.group(0) for page in chapter_pages()
             if (match := TF_STARTUP_LOG.search(page.read_text(errors="replace")))}
    assert not found, f"TensorFlow start-up log in the built book: {found}"
