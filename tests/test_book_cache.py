"""`make book` never publishes another profile's executed outputs.

A one-chapter book in a temporary folder goes through the real `make book` (tools/book_config.py, the
per-profile jupyter-cache, jupyter-book -W and the start-up log check): a smoke build, then a quick build
must re-execute the chapter, and a smoke build again must be served from the smoke cache.
"""

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
title: Cache test
only_build_toc_files: true
exclude_patterns: [_build]
execute:
  execute_notebooks: cache
  timeout: 300
"""
TOC = "format: jb-book\nroot: index\nchapters:\n- file: chapters/01_profile\n"
CHAPTER = """\
---
jupytext:
  text_representation: {extension: .md, format_name: myst, format_version: 0.13}
kernelspec: {display_name: Python 3 (cifar-course), language: python, name: cifar-course}
---

# Profile

```{code-cell} ipython3
import os
print(f"profile={os.environ['CIFAR_COURSE_PROFILE']} pid={os.getpid()}")
```
"""


def build(book, profile):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MAKELEVEL", "CIFAR_COURSE_PROFILE", "CIFAR_COURSE_DATA")}
    run = subprocess.run(["make", "-s", "book", f"BOOK={book}", f"PROFILE={profile}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    page = (book / "_build" / "html" / "chapters" / "01_profile.html").read_text()
    return re.search(r"profile=(\w+) pid=(\d+)", page).groups()


@pytest.mark.timeout(1200)
def test_a_build_in_another_profile_re_executes(tmp_path):
    book = tmp_path / "book"
    (book / "chapters").mkdir(parents=True)
    (book / "_config.yml").write_text(CONFIG)
    (book / "_toc.yml").write_text(TOC)
    (book / "index.md").write_text("# Cache test\n")
    (book / "chapters" / "01_profile.md").write_text(CHAPTER)

    smoke_profile, smoke_pid = build(book, "smoke")
    quick_profile, quick_pid = build(book, "quick")
    assert (smoke_profile, quick_profile) == ("smoke", "quick") and quick_pid != smoke_pid
    assert build(book, "smoke") == ("smoke", smoke_pid)  # served from the smoke cache, not re-run
    caches = sorted(p.name for p in (book / "_build" / ".jupyter_cache").iterdir())
    assert caches == ["quick-auto", "smoke-synthetic"]


def test_cache_keys_name_profile_and_data_source():
    spec = importlib.util.spec_from_file_location("book_config", ROOT / "tools" / "book_config.py")
    book_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(book_config)
    cache_key = book_config.cache_key

    assert cache_key("smoke", "cifar10") == "smoke-synthetic"  # smoke always uses the stand-in
    assert cache_key("quick", "auto") == "quick-auto" and cache_key("full", "cifar10") == "full-cifar10"
    one, other = cache_key("quick", "/data/cifar10"), cache_key("quick", "/data/cifar10-jpeg")
    assert one.startswith("quick-path-") and one != other


def test_the_generated_config_keeps_local_extensions_findable(tmp_path):
    """The generated config lives in _build/config/, and Jupyter Book resolves local extension folders
    against the config file: they must come out absolute, pointing at the book's own folder."""
    spec = importlib.util.spec_from_file_location("book_config", ROOT / "tools" / "book_config.py")
    book_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(book_config)
    (tmp_path / "book" / "_ext").mkdir(parents=True)
    (tmp_path / "_config.yml").write_text(
        CONFIG + "sphinx:\n  local_extensions:\n    student_edition: book/_ext\n")
    written = book_config.write_config(tmp_path, "smoke", "auto")
    import yaml

    folder = yaml.safe_load(written.read_text())["sphinx"]["local_extensions"]["student_edition"]
    assert Path(folder).is_absolute() and Path(folder) == (tmp_path / "book" / "_ext").resolve()


def test_a_new_reference_record_or_package_change_empties_the_cache(tmp_path):
    """jupyter-cache keys on the cells' code only: the glued reference numbers and the package's code
    come from outside the cells, so a change to either must empty the profile's cache."""
    spec = importlib.util.spec_from_file_location("book_config", ROOT / "tools" / "book_config.py")
    book_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(book_config)
    (tmp_path / "_config.yml").write_text(CONFIG)
    record = tmp_path / "book" / "reference_results" / "quick" / "01_data.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"metrics": {"accuracy": 0.5}}')
    (tmp_path / "cifar_course").mkdir()
    (tmp_path / "cifar_course" / "train.py").write_text("EPOCHS = 8\n")
    cache = tmp_path / "_build" / ".jupyter_cache" / "smoke-synthetic"
    doctrees = tmp_path / "_build" / ".doctrees"

    def executed_output_kept(change=None):
        if change:
            change()
        book_config.write_config(tmp_path, "smoke", "auto")
        kept = (cache / "executed").exists()
        assert (doctrees / "index.doctree").exists() == kept  # Sphinx's pages go with the cache
        (cache / "executed").mkdir(exist_ok=True)  # what a build leaves behind
        doctrees.mkdir(parents=True, exist_ok=True)
        (doctrees / "index.doctree").write_text("")
        return kept

    assert not executed_output_kept()  # first build
    assert executed_output_kept()  # nothing changed: the cache serves
    assert not executed_output_kept(lambda: record.write_text('{"metrics": {"accuracy": 0.6}}'))
    assert executed_output_kept()
    package = tmp_path / "cifar_course"
    assert not executed_output_kept(lambda: (package / "train.py").write_text("EPOCHS = 9\n"))
    assert not executed_output_kept(lambda: (package / "new.py").write_text(""))
    assert executed_output_kept(lambda: (tmp_path / "chapters").mkdir())  # elsewhere: cells' own key
