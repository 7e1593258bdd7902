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


def test_select_figures_quotes_the_reference_for_synthetic_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "REFERENCE_DIR", tmp_path / "ref")
    (tmp_path / "ref").mkdir()
    figures, which = cc.select_figures("99_demo", {"acc": 0.9}, "cifar10 image folder")
    assert figures == {"acc": 0.9} and which == "this run"
    figures, which = cc.select_figures("99_demo", {"acc": 0.9}, "synthetic (seed=0)")
    assert which == "no reference run yet" and figures["acc"] != figures["acc"]  # NaN
    monkeypatch.setenv("CIFAR_COURSE_RESULTS", str(tmp_path / "ref"))
    cc.record("99_demo", {"acc": 0.71}, "cifar10 image folder", 60, profile=cc.profile("quick"))
    figures, which = cc.select_figures("99_demo", {"acc": 0.9, "new": 1}, "synthetic (seed=0)")
    assert figures["acc"] == 0.71 and figures["new"] != figures["new"]
    assert which == "the reference run on real CIFAR-10"


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
    """A copy of the package outside the clone (as pip installs it) has no book beside it. One
    interpreter for both cases: importing the package (TensorFlow) is most of the cost."""
    site = tmp_path / "site-packages"
    shutil.copytree(results.REPO_ROOT / "cifar_course", site / "cifar_course",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = (
        "import os, cifar_course as cc\n"
        "try:\n"
        "    print('found', cc.reference('01_data'))\n"
        "except FileNotFoundError as error:\n"
        "    print('refused', str(error).replace(chr(10), ' '))\n"
        f"os.environ[{results.REFERENCES_ENV!r}] = {str(results.REFERENCE_DIR)!r}\n"
        "print('found', cc.reference('01_data')['chapter'])\n")
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(results.REFERENCES_ENV, None)
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    without, with_env = run.stdout.strip().splitlines()[-2:]
    assert without.startswith("refused No reference records") and "CIFAR_COURSE_REFERENCES" in without
    assert with_env == "found 01_data"


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2], [2.3, 1.2, 0.9])
    return fig


def test_save_figure_marks_data_and_writes_small_png_with_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_COURSE_RESULTS", str(tmp_path))
    fig = _figure()
    path = cc.save_figure(fig, "99_demo", "curve", "synthetic (seed=0)", profile=cc.profile("smoke"))
    assert path == tmp_path / "smoke" / "figures" / "99_demo" / "curve.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 60_000
    prov = json.loads(path.with_suffix(".json").read_text())
    assert prov["synthetic"] is True and prov["data"] == "SYNTHETIC stand-in" and prov["profile"] == "smoke"
    assert {"commit", "cpu", "date"} <= set(prov)
    assert any("SYNTHETIC" in t.get_text() for t in fig.texts)   # the mark the reader sees

    real = cc.save_figure(_figure(), "99_demo", "curve", "cifar10 image folder (/home/me/data)",
                          profile=cc.profile("quick"))
    prov = json.loads(real.with_suffix(".json").read_text())
    assert prov["data"] == "cifar10 image folder" and "/home/me" not in real.with_suffix(".json").read_text()


def test_show_reference_figure_with_and_without_a_reference(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "REFERENCE_DIR", tmp_path / "ref")
    missing = cc.show_reference_figure("99_demo", "curve", "synthetic (seed=0)", "a curve").data
    assert "No reference figure" in missing and "a curve" in missing

    monkeypatch.setenv("CIFAR_COURSE_RESULTS", str(tmp_path / "run"))
    cc.save_figure(_figure(), "99_demo", "curve", "cifar10 image folder (/data)", profile=cc.profile("quick"))
    cc.record("99_demo", {"accuracy": 0.7}, "cifar10 image folder (/data)", profile=cc.profile("quick"))
    copied = cc.promote_results("quick")
    assert {p.name for p in copied} == {"99_demo.json", "curve.png", "curve.json"}
    assert json.loads((tmp_path / "ref" / "quick" / "99_demo.json").read_text())["data_source"] == \
        "cifar10 image folder"

    shown = cc.show_reference_figure("99_demo", "curve", "synthetic (seed=0)").data
    assert "data:image/png;base64," in shown and "<details open" in shown and "SYNTHETIC" in shown
    assert "commit" in shown and "JPEG" in shown
    collapsed = cc.show_reference_figure("99_demo", "curve", "cifar10 image folder (/data)").data
    assert "<details " in collapsed and "<details open" not in collapsed


def test_promote_results_refuses_synthetic_runs(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setenv("CIFAR_COURSE_RESULTS", str(tmp_path))
    cc.record("99_demo", {"accuracy": 0.9}, "synthetic (seed=0)", profile=cc.profile("smoke"))
    with pytest.raises(ValueError, match="synthetic"):
        cc.promote_results("smoke", destination=tmp_path / "ref")


def test_chapter_summary_sets_your_run_beside_the_reference():
    ref = {"chapter": "02_baseline_cnn", "origin": "reference", "profile": "quick", "synthetic": False,
           "data_source": "cifar10 image folder", "date": "2026-11-23T13:05:30+00:00", "notes": "",
           "hardware": {"cpu": "AMD EPYC", "cores": 2, "gpus": []},
           "metrics": {"test_accuracy": 0.7065, "train_time_s": 165.2, "epochs": 10}}
    mine = dict(ref, origin="your run", profile="smoke", synthetic=True, data_source="synthetic (seed=0)",
                metrics={"test_accuracy": 0.31, "epochs": 3}, date="2026-12-01T10:00:00+00:00")
    page = cc.chapter_summary([ref, mine])
    assert "**02 " in page and "smoke, SYNTHETIC, 2026-12-01" in page
    assert "AMD EPYC x2, 2026-11-23, commit not recorded" in page
    assert "| test_accuracy | 0.3100 | 0.7065 |" in page
    assert "train_time_s" not in page   # only the headline figures
    table_lines = [line for line in page.splitlines() if line.startswith("|")]
    assert all(line.count("|") == 4 for line in table_lines)   # three columns: fits the page


def test_reference_sweep_time_sums_the_recording_chapters_and_names_the_missing(tmp_path, monkeypatch):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (chapters / "01_a.md").write_text("cc.record('01_a', ...)")
    (chapters / "02_b.md").write_text("cc.record('02_b', ...)")
    (chapters / "03_c.md").write_text("no training here")
    monkeypatch.setattr(results, "REPO_ROOT", tmp_path)
    monkeypatch.setenv(results.REFERENCES_ENV, str(tmp_path / "ref"))
    (tmp_path / "ref" / "quick").mkdir(parents=True)
    rec = {"wall_time_s": 90.5, "hardware": {"cpu": "Some CPU", "cores": 2}}
    (tmp_path / "ref" / "quick" / "01_a.json").write_text(json.dumps(rec))
    assert cc.reference_sweep_time("quick") == {"seconds": 90.5, "chapters": 1, "cpus": ["Some CPU x2"],
                                             "missing": ["02_b"]}


def test_the_committed_references_time_every_recording_chapter():
    runtime = cc.reference_sweep_time("quick")
    assert runtime["missing"] == [] and runtime["chapters"] >= 13 and runtime["seconds"] > 60


def test_reference_runtime_reads_the_record_or_says_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv(results.REFERENCES_ENV, str(tmp_path))
    (tmp_path / "quick").mkdir()
    assert cc.reference_runtime("07_gradcam").startswith("not measured yet")
    record = {"chapter": "07_gradcam", "wall_time_s": 306.9, "date": "2026-11-23T11:09:21+00:00",
              "hardware": {"cpu": "AMD EPYC", "cores": 2, "gpus": []}}
    (tmp_path / "quick" / "07_gradcam.json").write_text(json.dumps(record))
    assert cc.reference_runtime("07_gradcam") == (
        "5.1 minutes in the reference run (quick profile, real CIFAR-10, AMD EPYC, 2 cores, 2026-11-23)")
    assert cc.format_duration(42.4) == "42 s"


def test_cpu_label_names_the_vector_units_that_set_the_speed():
    epyc = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n" \
           "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t: avx512f\n"
    assert results.cpu_label(epyc) == "AMD EPYC (family 25 model 1, AVX2)"
    xeon = "cpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n" \
           "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert results.cpu_label(xeon) == (
        "Intel(R) Xeon(R) Platinum 8481C (family 6 model 143, AVX-512 with BF16, AMX)")
    assert results.cpu_label("model name\t: Some CPU\nflags\t: sse2\n") == "Some CPU (no AVX2)"


def test_reference_provenance_counts_commits_and_names_edited_records(tmp_path, monkeypatch):
    monkeypatch.setenv(results.REFERENCES_ENV, str(tmp_path))
    (tmp_path / "quick").mkdir()
    assert cc.reference_provenance() == "No reference record is committed yet."
    runs = {"01_a": {"commit": "abc", "date": "2026-12-01T10:00:00", "notes": ""},
            "02_b": {"date": "2026-11-23T09:00:00", "notes": "written from the run's log (overwritten)"}}
    for name, rec in runs.items():
        (tmp_path / "quick" / f"{name}.json").write_text(json.dumps({"chapter": name, **rec}))
    assert cc.reference_provenance() == (
        "2 reference records, run between 2026-11-23 and 2026-12-01; 1 name the commit they ran at; "
        "edited after their run, and marked so where shown: 02_b (rebuilt from the run's log after its "
        "file was overwritten).")
    (tmp_path / "quick" / "02_b.json").write_text(json.dumps({"chapter": "02_b", **runs["01_a"]}))
    assert cc.reference_provenance().endswith("2 name the commit they ran at; none was edited after its run.")


def test_the_commit_is_read_when_the_package_is_imported(monkeypatch):
    # A checkout during a long run (a reference sweep in a worktree) must not relabel the run's records.
    at_import = results.commit()
    assert at_import != "not recorded"  # this clone is a git checkout
    monkeypatch.setattr(results, "_read_commit", lambda: "another commit")
    assert results.commit() == at_import


def test_overview_accuracies_reads_real_data_records_only(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "REFERENCE_DIR", tmp_path / "ref")
    monkeypatch.setenv("CIFAR_COURSE_RESULTS", str(tmp_path / "run"))
    quick = cc.profile("quick")
    cc.record("02_baseline_cnn", {"test_accuracy": 0.72}, "cifar10 image folder (/data)", profile=quick)
    cc.record("05_evaluation", {"ece": 0.01}, "cifar10 image folder (/data)", profile=quick)  # no top-1
    cc.record("12_distillation", {"student_distilled_accuracy": 0.5}, "cifar10 image folder", profile=quick)
    cc.promote_results("quick")
    # a synthetic record slipped into the folder by hand is not a result on CIFAR-10
    fake = json.loads((tmp_path / "ref" / "quick" / "12_distillation.json").read_text())
    fake["synthetic"] = True
    (tmp_path / "ref" / "quick" / "12_distillation.json").write_text(json.dumps(fake))
    rows = cc.overview_accuracies()
    assert [(r["record"], r["accuracy"]) for r in rows] == [("02_baseline_cnn", 0.72)]
    assert rows[0]["what"] == "baseline CNN (test)" and len(rows[0]["date"]) == 10
