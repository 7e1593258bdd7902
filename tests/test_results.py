"""Records round trip: record -> load_results -> results_table -> compare_with_reference."""

import json
import os
import shutil
import subprocess
import sys

import cifar_course as cc
from cifar_course import results


def test_record_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_COURSE_RESULTS", str(tmp_path))
    path = cc.record("99_demo", {"accuracy": 0.123456, "loss": 2}, "synthetic (seed=0)", 3.21,
                     profile=cc.profile("smoke"))
    assert path == tmp_path / "smoke" / "99_demo.json"
    saved = json.loads(path.read_text())
    assert saved["metrics"] == {"accuracy": 0.1235, "loss": 2} and saved["synthetic"] is True
    assert saved["wall_time_s"] == 3.2 and saved["versions"]["tensorflow"].startswith("2.14")
    assert saved["hardware"]["cores"] >= 1 and saved["versions"]["cifar_course"] == cc.__version__

    records = cc.load_results(tmp_path)
    assert [r["chapter"] for r in records] == ["99_demo"] and records[0]["origin"] == "your run"
    rows = cc.results_table(records)
    assert {r["metric"] for r in rows} == {"accuracy", "loss"}
    assert all(r["data"] == "SYNTHETIC" and r["profile"] == "smoke" for r in rows)


def test_compare_with_reference(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "REFERENCE_DIR", tmp_path / "ref")
    (tmp_path / "ref").mkdir()
    rows = cc.compare_with_reference("99_demo", {"accuracy": 0.5}, profile=cc.profile("smoke"),
                                     data_source="synthetic (seed=0)")
    assert list(rows[0].values()) == ["accuracy", 0.5, "-"]
    assert "SYNTHETIC" in list(rows[0])[1] and "none recorded" in list(rows[0])[2]

    monkeypatch.setenv("CIFAR_COURSE_RESULTS", str(tmp_path / "ref"))
    cc.record("99_demo", {"accuracy": 0.71}, "cifar10 image folder (/data)", 60, profile=cc.profile("quick"))
    rows = cc.compare_with_reference("99_demo", {"accuracy": 0.5, "new": 1}, profile=cc.profile("smoke"),
                                     data_source="synthetic (seed=0)")
    assert list(rows[0].values())[1:] == [0.5, 0.71] and list(rows[1].values())[2] == "-"
    assert "real CIFAR-10" in list(rows[0])[2]
    records = cc.load_results(tmp_path / "ref")
    assert records[0]["origin"] == "reference" and cc.results_table(records)[0]["data"] == "cifar10 image folder"


def test_load_results_with_nothing_recorded(tmp_path):
    assert cc.load_results(tmp_path / "none") == [] and cc.results_table([]) == []


def test_record_takes_a_profile_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_COURSE_RESULTS", str(tmp_path))
    path = cc.record("99_demo", {"accuracy": 0.5}, "synthetic (seed=0)", profile="quick")  # by name
    assert path == tmp_path / "quick" / "99_demo.json" and json.loads(path.read_text())["profile"] == "quick"
    monkeypatch.setenv("CIFAR_COURSE_PROFILE", "full")
    assert cc.record("99_demo", {}, "synthetic (seed=0)").parent.name == "full"  # None: the active one
    monkeypatch.setenv(results.REFERENCES_ENV, str(tmp_path))
    assert cc.reference("99_demo", "quick") == cc.reference("99_demo", cc.profile("quick")) is not None


def test_the_clone_finds_its_reference_records():
    assert cc.reference("01_data")["profile"] == "quick"
    assert cc.reference("99_no_such_chapter") is None


def test_an_installed_copy_finds_the_references_or_says_why(tmp_path):
    """A copy of the package outside the clone (as pip installs it) has no book beside it."""
    site = tmp_path / "site-packages"
    shutil.copytree(results.REPO_ROOT / "cifar_course", site / "cifar_course",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = "import cifar_course as cc; print(cc.reference('01_data')['chapter'])"
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(results.REFERENCES_ENV, None)
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "FileNotFoundError: No reference records" in run.stderr
    assert "CIFAR_COURSE_REFERENCES" in run.stderr.splitlines()[-1]

    env[results.REFERENCES_ENV] = str(results.REFERENCE_DIR)
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "01_data", run.stderr
