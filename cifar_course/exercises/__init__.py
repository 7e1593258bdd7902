"""Checks that learners call on their exercise answers. A drill asks for one value; a build exercise asks
for a function or layer of the chapter, which the check runs against the course's own implementation on
random inputs and says what differs (shape, scale, a missing term), never the answer. With no answer yet
a check prints one line, "not answered yet: ...". Each returns True or False, so the chapter's hidden
solution cell can assert it. `progress()` tables a chapter's exercises, done or not yet.

One module per group of chapters; every check is re-exported here: `cc.exercises.check_standardize(fn)`.
"""

from __future__ import annotations

from .checking import EXERCISES, VERDICTS, Mistake, progress  # noqa: F401
from .data import *  # noqa: E402,F401,F403
from .training import *  # noqa: E402,F401,F403
from .strategy import *  # noqa: E402,F401,F403
from .inspection import *  # noqa: E402,F401,F403
from .deployment import *  # noqa: E402,F401,F403
from .beyond import *  # noqa: E402,F401,F403
