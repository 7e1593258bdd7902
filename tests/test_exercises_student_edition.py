"""The student edition (`make book-student`) holds no solution: a one-page book with an exercise and a
gated solution around an executed code cell, built with the course's own _config.yml, twice."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"

PAGE = """---
jupytext:
  text_representation: {extension: .md, format_name: myst, format_version: 0.13}
kernelspec: {display_name: Python 3, language: python, name: python3}
---

# One exercise

```{exercise}
:label: tiny-ex

Write EXERCISE_TEXT_MARKER.
```

```{code-cell} ipython3
print("LEARNER_CELL_MARKER")
```

````{solution-start} tiny-ex
:class: dropdown
````

SOLUTION_TEXT_MARKER in prose.

```{code-cell} ipython3
print("SOLUTION_OUTPUT" + "_MARKER")  # SOLUTION_CODE_MARKER
```

````{solution-end}
````

```{solution} tiny-ex
:label: tiny-sol-plain

PLAIN_SOLUTION_MARKER
```
"""


def build(book: Path, edition: str | None) -> str:
    """Build the book; return the text of every file of the HTML output."""
    env = {**os.environ, "CIFAR_COURSE_EDITION": edition or ""}
    out = book / f"out-{edition or 'full'}"
    result = subprocess.run([str(JUPYTER_BOOK), "build", str(book), "--path-output", str(out), "-W"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = out / "_build" / "html"
    return "\n".join(f.read_text(errors="replace") for f in html.rglob("*") if f.is_file()
                     and f.suffix in (".html", ".txt", ".md", ".ipynb", ".js", ".json", ".py"))


@pytest.mark.skipif(not JUPYTER_BOOK.exists(), reason="jupyter-book is not installed")
def test_student_edition_removes_every_solution(tmp_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["sphinx"]["local_extensions"] = {
        name: str(ROOT / path) for name, path in config["sphinx"]["local_extensions"].items()}
    config["execute"]["execute_notebooks"] = "force"
    shutil.copy(ROOT / "book" / "references.bib", tmp_path / "references.bib")
    config["bibtex_bibfiles"] = ["references.bib"]
    config.pop("exclude_patterns", None)
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    (tmp_path / "page.md").write_text(PAGE)

    full = build(tmp_path, None)
    for marker in ("EXERCISE_TEXT_MARKER", "LEARNER_CELL_MARKER", "SOLUTION_TEXT_MARKER",
                   "SOLUTION_OUTPUT_MARKER", "SOLUTION_CODE_MARKER", "PLAIN_SOLUTION_MARKER"):
        assert marker in full, marker  # the full edition shows everything (so the test can fail)

    student = build(tmp_path, "student")
    assert "EXERCISE_TEXT_MARKER" in student and "LEARNER_CELL_MARKER" in student
    for marker in ("SOLUTION_TEXT_MARKER", "SOLUTION_OUTPUT_MARKER", "SOLUTION_CODE_MARKER",
                   "PLAIN_SOLUTION_MARKER"):
        assert marker not in student, marker
