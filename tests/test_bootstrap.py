"""tools/bootstrap.sh on a machine like current Debian or Ubuntu: system Python 3.12, PEP 668, no 3.11.

The simulated system Python is a copy of a real 3.12 interpreter whose stdlib folder (symlinks to the real
one) carries an EXTERNALLY-MANAGED marker, so its pip refuses to install exactly as Debian's does. With it
alone on PATH (no uv, no python3.11), the bootstrap must either get uv and a Python 3.11 without touching
it, or stop with one sentence saying what to install.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def find_python312():
    candidates = [shutil.which("python3.12"), "/usr/bin/python3.12", "/usr/local/bin/python3.12",
                  *map(str, sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12")))]
    for exe in filter(lambda c: c and os.path.exists(c), candidates):
        probe = subprocess.run([exe, "-c", "import sys, venv, ensurepip; print(sys.prefix)"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return Path(exe), Path(probe.stdout.strip())
    pytest.skip("no Python 3.12 with venv and ensurepip on this machine to play the system Python")


def make_externally_managed_python(exe, prefix, root):
    """root/bin/python3 -> a copy of exe, whose stdlib is root/lib/python3.12 (marked EXTERNALLY-MANAGED)."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(exe, root / "bin" / "python3.12")
    (root / "bin" / "python3").symlink_to("python3.12")
    stdlib = root / "lib" / "python3.12"
    stdlib.mkdir(parents=True)
    for entry in (prefix / "lib" / "python3.12").iterdir():
        if entry.name != "EXTERNALLY-MANAGED":
            (stdlib / entry.name).symlink_to(entry)
    (stdlib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=This Python is managed by the (simulated) system.\n")
    return root / "bin" / "python3"


@pytest.mark.timeout(600)
def test_bootstrap_on_a_pep668_system_without_python311(tmp_path):
    exe, prefix = find_python312()
    system_python = make_externally_managed_python(exe, prefix, tmp_path / "usr")
    site_uv = prefix / "lib" / "python3.12" / "site-packages" / "uv"
    had_uv = site_uv.exists()
    env = {"HOME": str(tmp_path / "home"), "PIP_CONFIG_FILE": os.devnull,
           "UV_PYTHON_INSTALL_DIR": str(tmp_path / "uv-python"), "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    tools = tmp_path / "tools-bin"  # the few commands the script needs, and nothing named python or uv
    tools.mkdir()
    for name in ("bash", "dirname", "rm"):
        (tools / name).symlink_to(shutil.which(name))
    env["PATH"] = f"{system_python.parent}:{tools}"

    refused = subprocess.run([system_python, "-m", "pip", "install", "uv"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr

    repo = tmp_path / "clone"
    (repo / "tools").mkdir(parents=True)
    shutil.copy2(ROOT / "tools" / "bootstrap.sh", repo / "tools")
    run = subprocess.run([repo / "tools" / "bootstrap.sh", "--check"], env=env, capture_output=True,
                         text=True, timeout=540)
    assert "Traceback" not in run.stderr
    if run.returncode == 0:  # uv was installed into .tools/ and could download a Python 3.11
        assert "(Python 3.11." in run.stdout and f"{repo}/.tools/bin/uv" in run.stdout, run.stdout
    else:  # no download of Python (or of uv): one sentence saying what to install
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 1 and len(lines) == 1, run.stderr
        assert lines[0].startswith("bootstrap: ") and "install" in lines[0]
        if "Python 3.11" in lines[0]:  # uv itself got installed, beside the clone
            assert (repo / ".tools" / "bin" / "uv").exists()
    # Whatever happened, nothing went into the system Python.
    assert site_uv.exists() == had_uv


@pytest.mark.timeout(120)
def test_bootstrap_finds_what_ci_has():
    """CI's machine: Python 3.11 and uv (or pip and PyPI) on PATH."""
    if not shutil.which("python3.11"):
        pytest.skip("no python3.11 on PATH")
    run = subprocess.run([ROOT / "tools" / "bootstrap.sh", "--check"], capture_output=True, text=True,
                         timeout=100)
    assert run.returncode == 0, run.stderr
    assert "(Python 3.11." in run.stdout and "uv: " in run.stdout
