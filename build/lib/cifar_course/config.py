"""Profiles, data choice and seeding: the one place where run sizes are decided.

A profile says how big a run is. Every chapter reads it with `profile()` and sizes its work from it,
so the same notebook runs in seconds on synthetic data (`smoke`, what CI runs), in minutes on a laptop
CPU with real CIFAR-10 (`quick`), or at full size on a GPU (`full`).

Environment variables:
    CIFAR_COURSE_PROFILE   smoke | quick | full           (default: quick)
    CIFAR_COURSE_DATA      auto | cifar10 | synthetic | PATH (default: auto; smoke forces synthetic)
    CIFAR_COURSE_DATA_DIR  where downloads and caches live (default: ~/.cache/cifar_course)
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import numpy as np

PROFILE_ENV = "CIFAR_COURSE_PROFILE"
DATA_ENV = "CIFAR_COURSE_DATA"
DATA_DIR_ENV = "CIFAR_COURSE_DATA_DIR"
DEFAULT_PROFILE = "quick"


@dataclasses.dataclass(frozen=True)
class Profile:
    """How big a run is. `train_size`/`test_size` of None mean the whole split."""

    name: str
    data: str  # "synthetic" or whatever CIFAR_COURSE_DATA says ("auto", "cifar10", a path)
    train_size: int | None
    test_size: int | None
    epochs: int  # a chapter's default training length; chapters may scale it with `choose`
    batch_size: int
    description: str

    def choose(self, *, smoke, quick, full):
        """Pick the value for this profile: `epochs = p.choose(smoke=1, quick=10, full=50)`."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.name]

    @property
    def is_smoke(self) -> bool:
        return self.name == "smoke"


PROFILES = {
    "smoke": Profile(
        name="smoke", data="synthetic", train_size=2_000, test_size=500, epochs=2, batch_size=128,
        description="synthetic stand-in, seconds per chapter: checks that everything runs (CI)",
    ),
    "quick": Profile(
        name="quick", data="auto", train_size=None, test_size=None, epochs=10, batch_size=256,
        description="real CIFAR-10 on a laptop CPU, minutes per chapter",
    ),
    "full": Profile(
        name="full", data="auto", train_size=None, test_size=None, epochs=50, batch_size=512,
        description="real CIFAR-10 on one GPU: the published numbers",
    ),
}


def profile(name: str | None = None) -> Profile:
    """Return the active profile: `name`, else $CIFAR_COURSE_PROFILE, else 'quick'.

    Outside smoke, $CIFAR_COURSE_DATA overrides where the data comes from.
    """
    name = (name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE).strip().lower()
    if name not in PROFILES:
        raise ValueError(
            f"Unknown profile {name!r} (from {PROFILE_ENV} or the argument). "
            f"Choose one of: {', '.join(PROFILES)}."
        )
    chosen = PROFILES[name]
    if name != "smoke" and os.environ.get(DATA_ENV):
        chosen = dataclasses.replace(chosen, data=os.environ[DATA_ENV])
    return chosen


def data_dir() -> Path:
    """Folder for downloads and decoded caches (never inside the repository)."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache" / "cifar_course")


def seed_everything(seed: int = 0, deterministic: bool | None = None) -> None:
    """Seed Python, NumPy and TensorFlow in one call.

    `deterministic` also makes TF ops deterministic (repeatable runs, some speed lost on a GPU);
    by default it is on for the smoke profile only.
    """
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.keras.utils.set_random_seed(seed)
    if deterministic is None:
        deterministic = profile().is_smoke
    if deterministic:
        tf.config.experimental.enable_op_determinism()
