"""Regenerate the committed reference results in one sweep: every chapter that keeps a record, executed
in the quick profile on real CIFAR-10, one at a time, each from a fresh kernel.

    make references CIFAR_COURSE_DATA=/path/to/cifar10            # every recording chapter
    make references CIFAR_COURSE_DATA=... CHAPTERS="02_baseline_cnn 11_simclr"

Why a tool: a record names the commit it ran at, so the tree must be clean; a chapter whose hidden check
fails must not reach the book; and two heavy runs at once would corrupt each other's timings, so every
chapter waits for one lock file (shared with anything else run under `flock` on it). Each chapter writes
into its own results folder under _build/references/; only chapters that ran to the end without an error
are copied into book/reference_results (`cc.promote_results`). The summary lists each chapter's status,
its time and its first error; commit what it promoted.
"""

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def recording_chapters(chapters_dir: Path = ROOT / "chapters") -> list[str]:
    """The chapters that keep a results record (their last cell calls cc.record), in course order."""
    return [p.stem for p in sorted(chapters_dir.glob("[0-9][0-9]_*.md")) if "cc.record(" in p.read_text()]


def uncommitted_changes(root: Path = ROOT) -> str:
    """`git status` of tracked files: a record must name a commit whose code it ran."""
    return subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                          capture_output=True, text=True, check=True).stdout.strip()


def first_error(notebook: Path) -> str:
    """The first error a partly executed notebook shows, in one line ("" when none)."""
    if not notebook.is_file():
        return "the notebook was not written"
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"{output['ename']}: {output['evalue']}".replace("\n", " ")[:300]
    return ""


def run_chapter(chapter: str, work: Path, lock_path: Path, profile: str, chapters_dir: Path) -> dict:
    """Execute one chapter under the lock into work/<chapter>/; return its status row."""
    folder = work / chapter
    notebook = folder / f"{chapter}.ipynb"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([BIN / "jupytext", "-q", "--to", "ipynb", "--output", notebook,
                    chapters_dir / f"{chapter}.md"], check=True)
    env = {**os.environ, "CIFAR_COURSE_PROFILE": profile, "CIFAR_COURSE_RESULTS": str(folder / "results")}
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one heavy run at a time on this machine
        start = time.perf_counter()
        done = subprocess.run([BIN / "jupyter-execute", "--inplace", "--allow-errors", "--timeout=-1",
                               notebook], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    error = first_error(notebook)
    if not error and done.returncode != 0:
        error = (done.stderr.strip().splitlines() or ["jupyter-execute failed"])[-1]
    records = sorted((folder / "results" / profile).glob("*.json"))
    status = "passed" if not error and records else "failed"
    return {"chapter": chapter, "status": status, "seconds": round(seconds), "error": error,
            "results": str(folder / "results")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter names (default: every recording chapter)")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--lock", default=os.environ.get("CIFAR_COURSE_LOCK", "/tmp/heavy.lock"),
                        help="the lock file every heavy run on this machine waits for")
    parser.add_argument("--work", default=str(ROOT / "_build" / "references"))
    parser.add_argument("--no-promote", action="store_true", help="run and report, copy nothing")
    args = parser.parse_args(argv)

    data = os.environ.get("CIFAR_COURSE_DATA", "")
    if not data or not Path(data).exists():
        print("The reference sweep needs real CIFAR-10: set CIFAR_COURSE_DATA to its folder or archive "
              "(book/setup.md).", file=sys.stderr)
        return 2
    dirty = uncommitted_changes()
    if dirty:
        print("Commit or stash these first: a reference record names the commit it ran at.\n" + dirty,
              file=sys.stderr)
        return 2
    known = recording_chapters()
    chapters = args.chapters or known
    unknown = sorted(set(chapters) - set(known))
    if unknown:
        print(f"Unknown chapters {unknown}; recording chapters are: {' '.join(known)}", file=sys.stderr)
        return 2

    work = Path(args.work)
    rows = []
    for chapter in chapters:
        row = run_chapter(chapter, work, Path(args.lock), args.profile, ROOT / "chapters")
        rows.append(row)
        print(f"{chapter}: {row['status']} in {row['seconds']} s {row['error']}", flush=True)
        (work / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    if not args.no_promote:
        sys.path.insert(0, str(ROOT))
        import cifar_course as cc

        for row in rows:
            if row["status"] == "passed":
                promoted = cc.promote_results(args.profile, source=row["results"])
                print(f"promoted {row['chapter']}: {len(promoted)} files")
    failed = [r["chapter"] for r in rows if r["status"] != "passed"]
    print(f"{len(rows) - len(failed)} of {len(rows)} chapters passed"
          + (f"; not promoted: {' '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
