"""Collect the Jupytext chapters (chapters/*.md) as notebooks and execute them with nbval.

Each chapter is converted to .ipynb in _build/nbval/ at collection time (no notebook lives in git) and
handed to nbval, so a failing cell is reported with the chapter and cell named. Chapters run with
`--nbval-lax`: every cell must run without error, and the hidden check cells assert the claims.
"""

import os
from pathlib import Path

ROOT = Path(__file__).parent
NOTEBOOK_DIR = ROOT / "_build" / "nbval"

# Chapters under test run the smoke profile (synthetic data, seconds) unless told otherwise.
os.environ.setdefault("CIFAR_COURSE_PROFILE", "smoke")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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
    jupytext.write(jupytext.read(file_path), notebook)
    return IPyNbFile.from_parent(parent, path=notebook)

