"""The built book as a reader gets it: no TensorFlow start-up log in any page, and in a browser (offline)
the results page fits a 1280-pixel window, formulas render, and every chapter shows its real-CIFAR-10
figures (at least one on each page with figure slots; a slot without one says so).

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
    # resolve(): `make book` passes a relative folder (./_build/html), and file:// URIs need absolute paths
    pages = sorted(Path(html or ROOT / "_build" / "html").resolve().glob("chapters/*.html"))
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


# What a reader sees in a browser (Chromium from conftest.py's fixture, offline: file:// pages only).
# `make book` runs these on the book it built; in `make test` they check the last build, if any.
@pytest.fixture(scope="module")
def browser_page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def html_root():
    return chapter_pages()[0].parent.parent


# The widest element inside the article, and how far it reaches past the article's right edge (pixels).
OVERFLOW = """() => {
  const article = document.querySelector('article') || document.querySelector('main');
  const right = article.getBoundingClientRect().right;
  let worst = {overflow: 0, what: ''};
  for (const el of article.querySelectorAll('table, pre, img, .cell_output, p')) {
    const reach = Math.max(el.getBoundingClientRect().right, el.getBoundingClientRect().left
                           + el.scrollWidth) - right;
    if (reach > worst.overflow) worst = {overflow: reach, what: el.tagName + ' ' +
                                         (el.textContent || '').slice(0, 60)};
  }
  return {worst, page: document.documentElement.scrollWidth, window: window.innerWidth};
}"""


def test_results_page_fits_a_1280_pixel_window(browser_page):
    results = html_root() / "book" / "results.html"
    if not results.is_file():
        pytest.skip("this build has no results page (a test book of a few pages)")
    browser_page.goto(results.as_uri())
    browser_page.wait_for_load_state("load")
    browser_page.screenshot(path=str(html_root().parent / "results-1280.png"), full_page=True)  # to look at
    fit = browser_page.evaluate(OVERFLOW)
    assert fit["page"] <= fit["window"], f"the page scrolls sideways: {fit}"
    assert fit["worst"]["overflow"] <= 2, f"content reaches past the page's text column: {fit['worst']}"


def test_formulas_render_without_a_network(browser_page):
    pages = [page for page in chapter_pages() if "\\(" in page.read_text(errors="replace")
             or "\\[" in page.read_text(errors="replace")]
    if not pages:
        pytest.skip("no built chapter has a formula")
    for page in pages:
        browser_page.goto(page.as_uri())
        browser_page.wait_for_selector("mjx-container", state="attached")
        raw = browser_page.evaluate(
            "() => [...document.querySelectorAll('article p, article li')]"
            ".map(e => e.innerText).filter(t => /\\\\\\(|\\\\\\[|\\\\frac/.test(t)).slice(0, 3)")
        assert not raw, f"{page.name}: formulas left as TeX source: {raw}"


def test_every_chapter_page_shows_a_reference_figure_or_says_none_is_committed(browser_page):
    """Each chapter page with figure slots shows at least one real-CIFAR-10 reference figure; a slot
    with none committed must say so in so many words (a page with neither has lost its slots)."""
    slots = {path.stem for path in (ROOT / "chapters").glob("*.md")
             if "cc.show_reference_figure(" in path.read_text()}
    silent, missing = [], []
    for page in chapter_pages():
        if page.stem not in slots:  # not a course chapter with figures (14, or a test book's page)
            continue
        browser_page.goto(page.as_uri())
        shown = browser_page.evaluate(
            "() => [...document.querySelectorAll('details')].filter(d => d.querySelector("
            "'img[alt*=\"reference run on real CIFAR-10\"]')).length")
        told = browser_page.evaluate(
            "() => document.body.innerText.includes('No reference figure on real CIFAR-10 is committed')")
        if not shown:
            missing.append(page.stem)
            if not told:
                silent.append(page.stem)
    assert not silent, f"chapter pages with neither a reference figure nor a note saying so: {silent}"
    assert not missing, f"chapter pages showing no reference figure on real CIFAR-10: {missing}"
