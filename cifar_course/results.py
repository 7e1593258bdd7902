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
    """CPU model and cores, and any GPUs TensorFlow sees."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus}


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
