"""Checks that learners call on their exercise answers: a tick when right, a hint (never the answer)
when not. Each returns True or False, so the chapter's hidden solution cell can assert it.

One module per topic; every check is re-exported here: `cc.exercises.check_channel_means(answer)`.
"""

from __future__ import annotations


def report(ok: bool, success: str, hint: str) -> bool:
    """Print the verdict a learner sees and return it."""
    print(f"Correct: {success}" if ok else f"Not yet. Hint: {hint}")
    return bool(ok)
from .training import *  # noqa: E402,F401,F403
from .deployment import *  # noqa: E402,F401,F403
from .inspection import *  # noqa: E402,F401,F403
from .beyond import *  # noqa: E402,F401,F403
from .strategy import *  # noqa: E402,F401,F403
from .data import *  # noqa: E402,F401,F403
