"""The reference sweep (tools/reference_sweep.py): which chapters it runs, what it refuses, and that a
chapter whose cell fails is reported failed with its error while a chapter that runs to the end passes."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("reference_sweep", ROOT / "tools" / "reference_sweep.py")
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)

HEADER = """---
jupytext:
  text_representation: {extension: .md, format_name: myst, format_version: 0.13}
kernelspec: {display_name: Python 3 (cifar-course), language: python, name: cifar-course}
---

```{code-cell} ipython3
"""
# a chapter's last cell, without TensorFlow: a record of a real-data run where cc.record writes it
WRITE_RECORD = """import json, os, pathlib
folder = pathlib.Path(os.environ["CIFAR_COURSE_RESULTS"]) / os.environ["CIFAR_COURSE_PROFILE"]
folder.mkdir(parents=True)
(folder / "99_demo.json").write_text(json.dumps({"chapter": "99_demo", "synthetic": False}))
```
"""


def test_recording_chapters_are_the_chapters_that_keep_a_record():
    chapters = sweep.recording_chapters()
    assert "02_baseline_cnn" in chapters and "13_federated" in chapters
    assert "14_next_steps" not in chapters  # it trains nothing worth a record
    assert chapters == sorted(chapters)


def test_sweep_refuses_without_data_and_names_unknown_chapters(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("CIFAR_COURSE_DATA", raising=False)
    assert sweep.main(["02_baseline_cnn", "--work", str(tmp_path)]) == 2
    assert "CIFAR_COURSE_DATA" in capsys.readouterr().err
    monkeypatch.setenv("CIFAR_COURSE_DATA", str(tmp_path))
    monkeypatch.setattr(sweep, "uncommitted_changes", lambda: "")
    assert sweep.main(["99_no_such_chapter", "--work", str(tmp_path)]) == 2
    assert "99_no_such_chapter" in capsys.readouterr().err
    monkeypatch.setattr(sweep, "uncommitted_changes", lambda: " M chapters/02_baseline_cnn.md")
    assert sweep.main(["02_baseline_cnn", "--work", str(tmp_path)]) == 2
    assert "Commit" in capsys.readouterr().err


def test_a_failing_cell_fails_the_chapter_and_a_clean_run_passes(tmp_path):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (chapters / "98_broken.md").write_text(HEADER + "assert 1 + 1 == 3, 'the claim check'\n```\n\n"
                                           "```{code-cell} ipython3\n" + WRITE_RECORD)
    (chapters / "99_demo.md").write_text(HEADER + WRITE_RECORD)
    lock = tmp_path / "lock"
    broken = sweep.run_chapter("98_broken", tmp_path / "work", lock, "quick", chapters)
    assert broken["status"] == "failed" and "the claim check" in broken["error"], broken
    demo = sweep.run_chapter("99_demo", tmp_path / "work", lock, "quick", chapters)
    assert demo["status"] == "passed" and demo["error"] == "", demo
    record = Path(demo["results"]) / "quick" / "99_demo.json"
    assert json.loads(record.read_text())["chapter"] == "99_demo"
