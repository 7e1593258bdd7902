"""The conda/Binder environment and the lock file must install the same versions."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lock_versions():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions = {}
    for pkg in lock["package"]:
        if pkg["name"] != "cifar-course":
            versions.setdefault(pkg["name"], set()).add(pkg["version"])
    return versions  # a package may be locked at two versions under different markers


def environment_pins():
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        match = re.match(r"\s+- ([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            pins.setdefault(match.group(1).lower(), set()).add(match.group(2))
    return pins


def test_environment_yml_pins_match_the_lock():
    locked, pinned = lock_versions(), environment_pins()
    wrong = {name: (vs, locked.get(name)) for name, vs in pinned.items() if vs != locked.get(name)}
    assert not wrong, f"environment.yml is out of step with uv.lock (run 'make lock'): {wrong}"
    # Everything in the lock is in environment.yml, except what postBuild installs without resolution.
    missing = set(locked) - set(pinned) - {"tensorflow-federated"}
    assert not missing, f"environment.yml lacks {sorted(missing)}: run 'make lock'"


def test_the_stack_is_pinned_as_decided():
    locked = lock_versions()
    (version,) = locked["typing-extensions"]
    assert tuple(int(p) for p in version.split(".")[:2]) >= (4, 12)  # override: 4.5 stops IPython
    assert locked["jaxlib"] == {"0.4.13"}  # override: TFF's 0.4.14 is no longer published
    assert locked["tensorflow"] == {"2.14.1"}
    assert locked["tensorflow-addons"] == {"0.23.0"}
    assert locked["tensorflow-federated"] == {"0.87.0"}
    assert next(iter(locked["jupyter-book"])).startswith("1.0.")
