"""Collect the Jupytext chapters (chapters/*.md) as notebooks and execute them with nbval.

Each chapter is converted to .ipynb in _build/nbval/ at collection time (no notebook lives in git) and
handed to nbval, so a failing cell is reported with the chapter and cell named. Chapters run with
`--nbval-lax`: every cell must run without error, and the hidden check cells assert the claims.

Chapters run on the course's kernel `cifar-course`, which tools/bootstrap.sh registers inside .venv (a
user's own `python3` kernelspec cannot stand in for it); `--nbval-kernel-name` overrides it.
"""

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent
NOTEBOOK_DIR = ROOT / "_build" / "nbval"

# Chapters under test run the smoke profile (synthetic data, seconds) unless told otherwise.
os.environ.setdefault("CIFAR_COURSE_PROFILE", "smoke")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")  # .venv's kernels before ~/.local/share/jupyter's
COURSE_KERNEL = "cifar-course"


def pytest_configure(config):
    opt = config.option
    if (getattr(opt, "nbval", False) or getattr(opt, "nbval_lax", False)) and not (
            opt.nbval_current_env or opt.current_env):
        if opt.nbval_kernel_name is None:
            opt.nbval_kernel_name = COURSE_KERNEL
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

        try:
            KernelSpecManager().get_kernel_spec(opt.nbval_kernel_name)
        except NoSuchKernel:
            raise pytest.UsageError(
                f"no Jupyter kernel named {opt.nbval_kernel_name!r}: run `make .venv/bin/.synced` "
                "(tools/bootstrap.sh registers the course's kernel inside .venv)") from None


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".md" or file_path.parent != ROOT / "chapters":
        return None
    opt = parent.config.option
    if not (opt.nbval or opt.nbval_lax):
        return None
    import jupytext
    from nbval.plugin import IPyNbFile

    NOTEBOOK_DIR.mkdir(parents=True, exist_ok=True)
    notebook = NOTEBOOK_DIR / (file_path.stem + ".ipynb")
    # Every xdist worker converts every chapter; write beside and rename, so no worker ever reads
    # another's half-written notebook.
    with tempfile.NamedTemporaryFile("w", dir=NOTEBOOK_DIR, suffix=".ipynb.tmp", delete=False) as tmp:
        jupytext.write(jupytext.read(file_path), tmp, fmt="ipynb")
    os.replace(tmp.name, notebook)
    return IPyNbFile.from_parent(parent, path=notebook)


# What each file costs `make test` in seconds (setup + call + teardown of all its tests, each chapter
# cell being one test), measured with --durations=0 on CI's kind of machine (2 cores, 2 workers). Only
# the order matters: with --dist loadfile a file runs whole on one worker, so the costliest start first
# and the two workers finish together instead of one waiting for a long file picked up last (the
# Makefile passes --no-loadscope-reorder, else xdist orders files by their number of tests). A file not
# listed counts as UNLISTED_COST. Re-measure when a file's cost changes a lot: `make test
# TEST_ARGS=--durations=0`, then sum each file's lines.
SMOKE_COST = {
    "04_regularization": 410, "08_shortcuts_robustness": 271, "test_compress": 186,
    "13_federated": 161, "03_residual_attention": 160, "06_troubleshooting": 136, "11_simclr": 130,
    "09_lightweighting": 130, "test_robustness": 116, "12_distillation": 60, "test_results": 105,
    "test_flagship": 103, "test_federated": 100, "07_gradcam": 86, "05_evaluation": 80,
    "10_deployment": 78, "test_gradcam": 69, "01_data": 61, "test_book_cache": 54, "test_train": 47,
    "test_models": 47, "14_next_steps": 45, "02_baseline_cnn": 35, "test_synthetic": 35,
    "test_bootstrap": 31, "test_exercises_student_edition": 26, "test_simclr": 26, "test_lab": 24,
    "test_exercises": 16, "test_imports": 13, "test_reference_sweep": 28, "test_serve_slim": 13, "test_serve": 12,
}
UNLISTED_COST = 20


def pytest_collection_modifyitems(items):
    # A stable sort: each file's tests stay together and in their order.
    items.sort(key=lambda item: -SMOKE_COST.get(item.path.stem, UNLISTED_COST))


# Debian's Chromium (apt-get install chromium; no browser download works offline), driven by Playwright:
# the browser tests (the built book, the demo page) each open their pages in it.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium():
    import shutil

    executable = shutil.which("chromium") or CHROMIUM
    if not os.path.exists(executable):
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs it with apt-get.")
        pytest.skip("Chromium is not installed (apt-get install -y chromium) for the in-browser checks.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS,
                                             headless=True)
        yield browser
        browser.close()
