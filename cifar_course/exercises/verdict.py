"""The verdict every check prints: its own module, so the topic modules import it without importing the
`exercises` package that imports them (no cycle)."""

from __future__ import annotations


def report(ok: bool, success: str, hint: str) -> bool:
    """Print the verdict a learner sees and return it."""
    print(f"Correct: {success}" if ok else f"Not yet. Hint: {hint}")
    return bool(ok)
