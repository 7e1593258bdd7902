"""Recording the figures a chapter states, and reading them back for the results page.

Each chapter ends with one `record(...)` call. Records are JSON files under `results/<profile>/` (outside
git, or $CIFAR_COURSE_RESULTS). Reference records from real-data runs are committed under
`book/reference_results/<profile>/`, so a book built offline still shows real CIFAR-10 figures. They are
found beside the package in a clone (or an editable install); a package installed elsewhere finds them
through $CIFAR_COURSE_REFERENCES, and says so when it cannot.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

from . import config

RESULTS_ENV = "CIFAR_COURSE_RESULTS"
REFERENCES_ENV = "CIFAR_COURSE_REFERENCES"
REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = REPO_ROOT / "book" / "reference_results"


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or REPO_ROOT / "results")


def _reference_path() -> Path:
    return Path(os.environ.get(REFERENCES_ENV) or REFERENCE_DIR)


def reference_dir() -> Path:
    """The folder of committed reference records: $CIFAR_COURSE_REFERENCES, else the clone's own."""
    folder = _reference_path()
    if not folder.is_dir():
        where = (f"${REFERENCES_ENV}={folder}" if os.environ.get(REFERENCES_ENV) else
                 f"{folder} (beside cifar_course at {Path(__file__).parent}; an installed copy has no "
                 "book beside it)")
        raise FileNotFoundError(
            f"No reference records: {where} is not a folder. Set {REFERENCES_ENV} to the "
            "book/reference_results folder of a clone of the course, or install the package from a "
            "clone in editable mode (uv sync, or pip install -e .).")
    return folder


def hardware() -> dict:
    """CPU model, its vector units (they set CPU speed: AVX-512-BF16 runs bfloat16 several times faster
    than AVX2 alone), cores, and any GPUs TensorFlow sees."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = cpu_label(Path("/proc/cpuinfo").read_text())
    except OSError:
        pass
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus}


def cpu_label(cpuinfo: str) -> str:
    """ "AMD EPYC (family 25 model 1, AVX2)" from /proc/cpuinfo's first processor: a bare model name
    such as "AMD EPYC" covers machines that differ two- to four-fold in speed here."""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    name, flags = fields.get("model name", "unknown CPU"), set(fields.get("flags", "").split())
    if "avx512_bf16" in flags:
        units = "AVX-512 with BF16"
    elif "avx512f" in flags:
        units = "AVX-512"
    elif "avx2" in flags:
        units = "AVX2"
    else:
        units = "no AVX2"
    if "amx_bf16" in flags:
        units += ", AMX"
    model = f"family {fields['cpu family']} model {fields['model']}, " if "cpu family" in fields else ""
    return f"{name} ({model}{units})"


def versions() -> dict:
    import importlib.metadata

    import tensorflow as tf

    # From the installed metadata, not `cifar_course.__version__`: importing the package from one of its
    # modules would be an import cycle.
    return {"python": sys.version.split()[0], "tensorflow": tf.__version__,
            "cifar_course": importlib.metadata.version("cifar_course")}


def record(chapter: str, metrics: dict, data_source: str, wall_time_s: float | None = None,
           profile=None, notes: str = "") -> Path:
    """Write the chapter's headline figures with their provenance; return the file written."""
    prof = config.resolve(profile)
    payload = {
        "chapter": chapter,
        "profile": prof.name,
        "data_source": data_source,
        "synthetic": data_source.startswith("synthetic"),
        "hardware": hardware(),
        "versions": versions(),
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 1),
        "metrics": {k: _plain(v) for k, v in metrics.items()},
        "notes": notes,
    }
    path = results_dir() / prof.name / f"{chapter}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _plain(value):
    """NumPy and TF scalars to plain JSON numbers, rounded for reading."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def load_results(*folders) -> list[dict]:
    """Every record under the given folders (default: the reader's results, then the references)."""
    folders = folders or (results_dir(), reference_dir())
    records = []
    for folder in folders:
        for path in sorted(Path(folder).glob("*/*.json")):
            rec = json.loads(path.read_text())
            rec["origin"] = "reference" if Path(folder) == _reference_path() else "your run"
            records.append(rec)
    return records


def reference(chapter: str, profile="quick") -> dict | None:
    """The committed reference record of a chapter for a profile (a name or a Profile), or None;
    FileNotFoundError if there are no reference records at all (an installed copy without the book)."""
    path = reference_dir() / config.resolve(profile).name / f"{chapter}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def reference_sweep_time(profile="quick") -> dict:
    """How long the committed reference runs of the chapters took, summed: what publishing the book on
    real data (`make book-publish`) spends executing chapters. Returns the total in seconds, the number
    of chapter records, the CPU models they ran on, and the recording chapters lacking a record or time."""
    folder = reference_dir() / config.resolve(profile).name
    chapters = sorted(p.stem for p in (REPO_ROOT / "chapters").glob("[0-9][0-9]_*.md")
                      if "cc.record(" in p.read_text())  # the chapters that train and keep a record
    total, cpus, missing = 0.0, set(), []
    for chapter in chapters:
        path = folder / f"{chapter}.json"
        rec = json.loads(path.read_text()) if path.is_file() else None
        if rec is None or rec.get("wall_time_s") is None:
            missing.append(chapter)
            continue
        total += rec["wall_time_s"]
        cpus.add(f"{rec['hardware']['cpu']} x{rec['hardware']['cores']}")
    return {"seconds": total, "chapters": len(chapters) - len(missing), "cpus": sorted(cpus),
            "missing": missing}


def _edit_mark(rec: dict) -> str:
    """How a record was changed after its run ("" if it is as the run wrote it), from its notes."""
    notes = rec.get("notes", "")
    if "corrected" in notes:
        return "its metric keys corrected by hand"
    if "written from the run's log" in notes:
        return "rebuilt from the run's log after its file was overwritten"
    return ""


def reference_provenance(profile="quick") -> str:
    """A sentence on the committed reference records as they stand: how many there are, how many name
    the commit they ran at, which were edited after their run (named), and over which dates."""
    records = [json.loads(p.read_text()) for p in sorted((reference_dir() / config.resolve(profile).name)
                                                          .glob("*.json"))]
    if not records:
        return "No reference record is committed yet."
    with_commit = sum(1 for r in records if r.get("commit", "not recorded") != "not recorded")
    edited = [f"{r['chapter']} ({_edit_mark(r)})" for r in records if _edit_mark(r)]
    dates = sorted(r["date"][:10] for r in records)
    text = (f"{len(records)} reference records, run between {dates[0]} and {dates[-1]}; "
            f"{with_commit} name the commit they ran at")
    text += (f"; edited after their run, and marked so where shown: {', '.join(edited)}." if edited
             else "; none was edited after its run.")
    return text


def format_duration(seconds: float) -> str:
    """A wall time as a reader says it: "45 s" under 90 seconds, else "3.5 minutes"."""
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} minutes"


def reference_runtime(chapter: str, profile="quick") -> str:
    """How long the chapter's committed reference run took, with its machine, for the chapter's Runtime
    line (so the runtime a chapter states is measured, not typed); says so when there is none."""
    try:
        rec = reference(chapter, profile)
    except FileNotFoundError:
        rec = None
    name = config.resolve(profile).name
    if rec is None or rec.get("wall_time_s") is None:
        return f"not measured yet (no {name}-profile reference run is committed)"
    hw = rec["hardware"]
    return (f"{format_duration(rec['wall_time_s'])} in the reference run ({name} profile, real CIFAR-10, "
            f"{hw['cpu']}, {hw['cores']} cores, {rec['date'][:10]})")


def results_table(records=None):
    """A pandas-free table (list of rows) of every record's metrics, for the results page."""
    rows = []
    for rec in records if records is not None else load_results():
        data = "SYNTHETIC" if rec["synthetic"] else rec["data_source"].split(" (")[0]
        for name, value in rec["metrics"].items():
            rows.append({
                "chapter": rec["chapter"], "origin": rec["origin"], "profile": rec["profile"],
                "data": data, "metric": name, "value": value, "wall time (s)": rec["wall_time_s"],
                "hardware": f"{rec['hardware']['cpu']} x{rec['hardware']['cores']}"
                + (f" + {', '.join(rec['hardware']['gpus'])}" if rec["hardware"]["gpus"] else ""),
                "date": rec["date"][:10],
            })
    return rows


def compare_with_reference(chapter: str, metrics: dict, profile=None, data_source: str = "") -> list[dict]:
    """Rows of metric | this run | the committed quick-profile reference on real CIFAR-10.

    Chapters display these rows so a reader running the smoke profile (synthetic data) still sees the
    real-data figures, labelled with where and when they were measured.
    """
    prof = config.resolve(profile)
    ref = reference(chapter)
    this = f"this run ({prof.name}, {'SYNTHETIC' if data_source.startswith('synthetic') else 'CIFAR-10'})"
    where = (f"reference (quick, real CIFAR-10, {ref['hardware']['cores']}-core "
             f"{ref['hardware']['cpu']}, {ref['date'][:10]})") if ref else "reference (none recorded yet)"
    rows = []
    for name, value in metrics.items():
        rows.append({"metric": name, this: _plain(value),
                     where: ref["metrics"].get(name, "-") if ref else "-"})
    return rows


def select_figures(chapter: str, metrics: dict, data_source: str) -> tuple[dict, str]:
    """The figures that prose about CIFAR-10 should quote, and which run they come from.

    Why: a book built on the synthetic stand-in must not describe CIFAR-10 with the stand-in's numbers.
    On real data: (metrics, "this run"). On synthetic data: the committed reference record's metrics
    (NaN for a name it lacks) and "the reference run on real CIFAR-10".
    """
    if not data_source.startswith("synthetic"):
        return dict(metrics), "this run"
    ref = reference(chapter)
    ref_metrics = ref["metrics"] if ref else {}
    return ({k: ref_metrics.get(k, float("nan")) for k in metrics},
            "the reference run on real CIFAR-10" if ref else "no reference run yet")


# --- Reference figures and the results page --------------------------------------------------------

REFERENCE_DATA = (
    "the reference runs use a public JPEG re-encoding of CIFAR-10 (the official 50,000 training and "
    "10,000 test images, saved as JPEG files in class folders). Its pixels differ from the official "
    "batches, and accuracies on it run below published figures: airbench94_muon's own script reaches "
    "90.75% on it on a 2-core CPU in bfloat16, where its authors publish 94.01% for the official data on "
    "a GPU. How the 3.3 points split between the JPEG copy and the precision is not measured."
)

# The few figures of each chapter that the results page sets side by side (the rest stay in the records).
HEADLINE_METRICS = {
    "01_data": ["train_images", "test_images", "speedup_affine", "speedup_padcrop", "images_per_s_padcrop"],
    "02_baseline_cnn": ["test_accuracy", "best_val_accuracy", "epochs", "seconds_per_epoch", "parameters"],
    "03_residual_attention": ["plain-20 test_accuracy", "ResNet-20 test_accuracy", "plain-56 test_accuracy",
                              "ResNet-56 test_accuracy", "SE-ResNet-20 (width 16) test_accuracy"],
    "04_regularization": ["gap_none", "val_acc_mean_none", "val_acc_mean_augmentation", "val_acc_mean_best",
                          "gap_mean_best", "early_stopping_best_epoch"],
    "05_evaluation": ["top1_accuracy", "top3_accuracy", "ece", "hardest_class_recall",
                      "easiest_class_recall"],
    "06_troubleshooting": ["sorted_val_acc", "shuffled_val_acc", "high_lr_tail_loss", "low_lr_tail_loss",
                           "tight_clip_tail_loss", "overfit_gap_none", "overfit_gap_augmentation"],
    "07_gradcam": ["test_accuracy", "heatmap_share_in_centre", "synthetic_pointing_gradcam",
                   "synthetic_pointing_random"],
    "08_shortcuts_robustness": ["clean_accuracy", "pgd10_accuracy", "adv_clean_accuracy",
                                "adv_pgd10_accuracy", "border_grey_changed", "centre_grey_changed"],
    "09_lightweighting": ["float_accuracy", "separable_accuracy", "int8_smaller_x", "int8_drop_points",
                          "pruned_sparsity", "pruned_int8_accuracy"],
    "10_deployment": ["keras_accuracy", "export_gap_tflite", "served_agreement", "latency_b1_ms",
                      "throughput_b32_ips"],
    "11_simclr": ["linear_ntxent", "linear_random", "finetune_10pct_simclr", "finetune_10pct_scratch"],
    "12_distillation": ["teacher_accuracy", "student_scratch_accuracy", "student_distilled_accuracy",
                        "best_temperature"],
    "13_federated": ["central_accuracy", "fedavg_iid_accuracy", "fedavg_noniid_accuracy",
                     "noniid_gap", "shared_noniid_accuracy", "shared_noniid_recovered",
                     "fedavgm_noniid_recovered", "fedprox_noniid_recovered"],
}


# One accuracy per chapter for the course's closing overview: (record, metric, what was measured).
OVERVIEW_ACCURACIES = [
    ("02_baseline_cnn", "test_accuracy", "baseline CNN (test)"),
    ("03_residual_attention", "ResNet-20 test_accuracy", "ResNet-20 (test)"),
    ("04_regularization", "val_acc_mean_best", "best regularizer (validation)"),
    ("05_evaluation", "top1_accuracy", "small CNN (test)"),
    ("07_gradcam", "test_accuracy", "Grad-CAM's network (test)"),
    ("08_shortcuts_robustness", "adv_pgd10_accuracy", "adversarially trained, under PGD-10"),
    ("09_lightweighting", "pruned_int8_accuracy", "pruned and int8 (test)"),
    ("10_deployment", "keras_accuracy", "the deployed network (test)"),
    ("11_simclr", "finetune_10pct_simclr", "SimCLR, 10% of the labels (test)"),
    ("12_distillation", "student_distilled_accuracy", "distilled student (test)"),
    ("13_federated", "fedavg_noniid_accuracy", "FedAvg, non-IID clients (test)"),
    ("flagship_5min", "test_accuracy_tta", "flagship, 5-minute budget (test)"),
    ("flagship_15min", "test_accuracy_tta", "flagship, 15-minute budget (test)"),
]


def overview_accuracies(profile="quick") -> list[dict]:
    """The accuracy each chapter's reference run reached on real CIFAR-10, one row per chapter with a
    record (record, what, accuracy, date): the course's techniques on one axis, for its last page."""
    rows = []
    for name, metric, what in OVERVIEW_ACCURACIES:
        rec = reference(name, profile)
        if rec and not rec["synthetic"] and metric in rec["metrics"]:
            rows.append({"record": name, "what": what, "accuracy": float(rec["metrics"][metric]),
                         "date": rec["date"][:10]})
    return rows


def data_label(data_source: str) -> str:
    """What a run trained on, without local paths: "SYNTHETIC stand-in" or e.g. "cifar10 image folder"."""
    if data_source.startswith("synthetic"):
        return "SYNTHETIC stand-in"
    return data_source.split(" (")[0]


def commit() -> str:
    """The git commit whose code this process runs ("+local changes" when the tree differed), or "not
    recorded". Read once, when the package is imported: a checkout during a long run must not relabel it."""
    global _COMMIT
    if _COMMIT is None:
        _COMMIT = _read_commit()
    return _COMMIT


def _read_commit() -> str:
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short=10", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "not recorded"
    return head + (" +local changes" if dirty else "")


_COMMIT = None
commit()


def figure_provenance(chapter: str, name: str, data_source: str, profile=None) -> dict:
    """What a saved figure shows and where it was made (the JSON sidecar of the PNG)."""
    prof = profile or config.profile()
    hw = hardware()
    return {
        "chapter": chapter, "figure": name, "profile": prof.name, "data": data_label(data_source),
        "synthetic": data_source.startswith("synthetic"), "commit": commit(),
        "cpu": f"{hw['cpu']} x{hw['cores']}" + (f" + {', '.join(hw['gpus'])}" if hw["gpus"] else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _provenance_line(prov: dict) -> str:
    if prov["synthetic"]:
        return f"SYNTHETIC stand-in (coloured shapes, not CIFAR-10), {prov['profile']} profile"
    return (f"CIFAR-10 ({prov['data']}), {prov['profile']} profile, commit {prov['commit']}, "
            f"{prov['cpu']}, {prov['date'][:10]}")


def save_figure(fig, chapter: str, name: str, data_source: str, profile=None, max_pixels: int = 800) -> Path:
    """Mark a chapter's key figure with the data it shows, and save it as a small PNG with a JSON sidecar.

    The mark (a line under the figure) is what tells a reader a figure shows the synthetic stand-in. Files
    go to results/<profile>/figures/<chapter>/<name>.png and .json; `promote_results` copies a real-data
    run's into book/reference_results/, where `show_reference_figure` finds them. PNGs are kept small:
    at most `max_pixels` wide or high (60 to 100 dpi) and reduced to a 256-colour palette.
    """
    import io

    from PIL import Image

    prof = profile or config.profile()
    prov = figure_provenance(chapter, name, data_source, prof)
    colour = "crimson" if prov["synthetic"] else "0.3"
    bottom = fig.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.get_size_inches()[1]
    fig.text(0.5, bottom - 0.005, _provenance_line(prov), ha="center", va="top", fontsize=7, color=colour)
    dpi = min(100, max(60, max_pixels / max(fig.get_size_inches())))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    folder = results_dir() / prof.name / "figures" / chapter
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                    dither=Image.Dither.NONE)
    image.save(path, optimize=True)
    path.with_suffix(".json").write_text(json.dumps(prov, indent=2) + "\n")
    return path


def reference_figure(chapter: str, name: str, profile="quick") -> tuple[Path, dict] | None:
    """The committed reference PNG of a chapter's figure and its provenance, or None."""
    path = _reference_path() / config.resolve(profile).name / "figures" / chapter / f"{name}.png"
    sidecar = path.with_suffix(".json")
    if not (path.is_file() and sidecar.is_file()):
        return None
    return path, json.loads(sidecar.read_text())


def show_reference_figure(chapter: str, name: str, data_source: str, title: str = "", profile: str = "quick"):
    """The committed real-CIFAR-10 figure matching the one above, in a labelled drop-down (open when this
    run is synthetic), or one line saying none is committed yet. Returns an IPython HTML object."""
    import base64
    import html

    from IPython.display import HTML

    synthetic = data_source.startswith("synthetic")
    what = html.escape(title or name.replace("_", " "))
    found = reference_figure(chapter, name, profile)
    if found is None:
        return HTML(f"<p><em>No reference figure on real CIFAR-10 is committed yet for “{what}” "
                    f"(the {profile}-profile run on real data makes it).</em></p>")
    path, prov = found
    encoded = base64.b64encode(path.read_bytes()).decode()
    mine = ("Your figure, before this box, shows the SYNTHETIC stand-in, not CIFAR-10. "
            if synthetic else "Your figure comes before this box. ")
    caption = (f"{mine}This one is the reference run on real CIFAR-10 ({html.escape(prov['data'])}, the JPEG re-encoding: see "
               f"the results page), {prov['profile']} profile, commit {html.escape(prov['commit'])}, "
               f"{html.escape(prov['cpu'])}, {prov['date'][:10]}.")
    return HTML(
        f"<details{' open' if synthetic else ''} style='border-left:3px solid #888;padding-left:0.6em'>"
        f"<summary><strong>Reference run on real CIFAR-10: {what}</strong></summary>"
        f"<img src='data:image/png;base64,{encoded}' alt='{what}, reference run on real CIFAR-10' "
        f"style='max-width:100%'><p style='font-size:0.85em'>{caption}</p></details>")


def promote_results(profile: str = "quick", source=None, destination=None) -> list[Path]:
    """Copy a real-data run's records and figures into the committed references (book/reference_results).

    Run it after executing chapters on real CIFAR-10 (`make chapter ... PROFILE=quick`), then commit what
    it lists. Local paths are dropped from the data source; synthetic records are refused.
    """
    import shutil

    source = Path(source or results_dir()) / profile
    destination = Path(destination or REFERENCE_DIR) / profile
    copied = []
    for record_path in sorted(source.glob("*.json")):
        rec = json.loads(record_path.read_text())
        if rec.get("synthetic", True):
            raise ValueError(f"{record_path} is a synthetic-data record: references are real-data runs.")
        rec["data_source"] = data_label(rec["data_source"])
        target = destination / record_path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(rec, indent=2) + "\n")
        copied.append(target)
    for figure in sorted((source / "figures").glob("*/*.png")):
        sidecar = figure.with_suffix(".json")
        if json.loads(sidecar.read_text()).get("synthetic", True):
            raise ValueError(f"{figure} shows synthetic data: references are real-data runs.")
        target = destination / "figures" / figure.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for path in (figure, sidecar):
            shutil.copy2(path, target / path.name)
            copied.append(target / path.name)
    return copied


def _run_label(rec: dict) -> str:
    data = "SYNTHETIC" if rec["synthetic"] else data_label(rec["data_source"])
    return f"{rec['profile']}, {data}, {rec['date'][:10]}"


def _reference_label(rec: dict) -> str:
    """Profile, data, machine, date and commit of a reference record, and whether it was edited."""
    hw, mark = rec["hardware"], _edit_mark(rec)
    edited = f" ({mark}; the next run regenerates it)" if mark else ""
    return (f"{rec['profile']} profile on real CIFAR-10 ({data_label(rec['data_source'])}), "
            f"{hw['cpu']} x{hw['cores']}, {rec['date'][:10]}, commit {rec.get('commit', 'not recorded')}"
            f"{edited}")


def _chapter_title(chapter: str) -> str:
    """ "05_evaluation" -> "05 Evaluating a classifier" (the chapter's own title), else the name itself."""
    path = REPO_ROOT / "chapters" / f"{chapter}.md"
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("# "):
                return f"{chapter[:2]} {line[2:].strip()}"
    return chapter


def chapter_summary(records=None, digits: int = 4) -> str:
    """The results page: per chapter its headline figures, your latest run beside the reference run.

    Returns Markdown: a heading line per chapter naming both runs (profile, data, machine, date, commit),
    then a three-column table (figure | your run | reference) narrow enough for the page.
    """
    from .tables import markdown_table

    records = load_results() if records is None else records
    chapters = sorted({r["chapter"] for r in records})
    parts = []
    for chapter in chapters:
        ref = next((r for r in records if r["chapter"] == chapter and r["origin"] == "reference"), None)
        mine = sorted((r for r in records if r["chapter"] == chapter and r["origin"] != "reference"),
                      key=lambda r: r["date"])
        mine = mine[-1] if mine else None
        names = [m for m in HEADLINE_METRICS.get(chapter, [])
                 if any(m in r["metrics"] for r in (ref, mine) if r)]
        if not names:
            names = list((ref or mine)["metrics"])[:5]
        rows = [{"figure": m,
                 "your run": (mine["metrics"].get(m, "-") if mine else "-"),
                 "reference": (ref["metrics"].get(m, "-") if ref else "-")} for m in names]
        rows = [{k: (str(v) if isinstance(v, (list, dict, bool)) else v) for k, v in row.items()}
                for row in rows]
        lines = [f"**{_chapter_title(chapter)}**", "",
                 f"- your run: {_run_label(mine) if mine else 'none yet (run the chapter)'}",
                 f"- reference: {_reference_label(ref) if ref else 'none committed'}", "",
                 markdown_table(rows, digits)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) if parts else "No results recorded yet."


def show_reference_provenance(*records: str, profile: str = "quick"):
    """Under a table of reference figures: where each record comes from (data, machine, date, commit, and
    whether it was edited after its run), then what the reference data is. Returns IPython Markdown."""
    from IPython.display import Markdown

    lines = []
    for name in records:
        ref = reference(name, profile)
        lines.append(f"*Reference run of {name}: {_reference_label(ref)}.*" if ref else
                     f"*No reference record of {name} is committed yet: its reference figures are empty.*")
    lines.append(f"*About the reference data: {REFERENCE_DATA}*")
    return Markdown("\n\n".join(lines))
