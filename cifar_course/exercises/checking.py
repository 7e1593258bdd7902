"""What every check shares: the three verdicts a learner sees, the comparison that says what differs,
and the record of this kernel's verdicts that `progress()` tables.

A check takes the learner's answer (a number, an array or a function they wrote) first. It returns a
success message, or raises `Mistake` with what differs (never the answer). `@exercise` turns that into
what the learner sees and a True/False the hidden solution cell can assert:

    Correct: ...                                   the answer matches the course's own implementation
    Not yet: your loss is 1/16 of the reference's  what differs: shape, scale, sign, a missing term
    not answered yet: write ... and run this cell  the answer is None, or the function is still the stub
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


class Mistake(Exception):
    """Raised by a check: the answer is wrong, and the message says how (without giving the answer)."""


class NotAnswered(Exception):
    """Raised by a check: the answer is None, or the learner's function is still the stub."""


@dataclass(frozen=True)
class Exercise:
    chapter: str  # "05"
    title: str  # a few words, as the progress table shows them
    kind: str  # "drill" (compute one value) or "build" (write a function or layer of the chapter)
    task: str  # what to write, for the "not answered yet" line


EXERCISES: dict[str, Exercise] = {}  # check name -> exercise, in the order the chapters define them
VERDICTS: dict[str, bool] = {}  # check name -> last verdict in this kernel (True: correct)
_last_chapter: list[str] = []


def exercise(chapter: str, title: str, kind: str, task: str):
    """Register a check and give it the learner-facing behaviour: print one verdict, return a bool."""
    if kind not in ("drill", "build"):
        raise ValueError(f"kind must be 'drill' or 'build', got {kind!r}")

    def decorate(check):
        EXERCISES[check.__name__] = Exercise(chapter, title, kind, task)

        @functools.wraps(check)
        def run(answer, *args, **kwargs):
            _last_chapter[:] = [chapter]
            try:
                if answer is None or answer is Ellipsis:
                    raise NotAnswered
                success = check(answer, *args, **kwargs)
            except NotAnswered:
                print(f"not answered yet: write {task} and run this cell again")
                VERDICTS.pop(check.__name__, None)
                return False
            except (TypeError, ValueError) as err:  # an answer of the wrong kind: a list for a number
                mistake = f"could not read your answer ({type(answer).__name__}): {err}"
                print(f"Not yet: {mistake}")
                VERDICTS[check.__name__] = False
                return False
            except Mistake as mistake:
                print(f"Not yet: {mistake}")
                VERDICTS[check.__name__] = False
                return False
            print(f"Correct: {success}")
            VERDICTS[check.__name__] = True
            return True

        return run

    return decorate


def verdict(ok: bool, success: str, hint: str) -> str:
    """For a one-value drill: the success message, or a Mistake carrying the hint."""
    if not ok:
        raise Mistake(hint)
    return success


def call(fn, *args, **kwargs):
    """Run the learner's function: the stub (None returned, NotImplementedError, Ellipsis) is
    'not answered'; any other error is reported as what it is, not as a crash of the check."""
    if fn is None or fn is Ellipsis:
        raise NotAnswered
    if not callable(fn):
        raise Mistake(f"expected a function, got {type(fn).__name__}")
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:
        raise NotAnswered from None
    except (Mistake, NotAnswered):
        raise
    except Exception as err:  # a learner's code can fail in any way: say how, do not crash
        raise Mistake(f"your function raised {type(err).__name__}: {err}") from None
    if out is None or out is Ellipsis:
        raise NotAnswered
    return out


def as_array(value, what: str) -> np.ndarray:
    """A learner's result (NumPy, tf.Tensor, list) as a float64 array, or a Mistake saying why not."""
    try:
        return np.asarray(value, dtype=np.float64)
    except Exception:  # a dict, a model, a list of odd shapes ...
        raise Mistake(f"your {what} is a {type(value).__name__}, not an array of numbers") from None


def compare(got, want, what: str = "output", atol: float = 1e-5, rtol: float = 1e-4, variants=(),
            scalar: bool = False) -> None:
    """Raise a Mistake saying how `got` differs from the reference `want`: shape, a known mistake
    (`variants`: pairs of message and the value that mistake gives), scale, sign or size of the gap."""
    got, want = as_array(got, what), np.asarray(want, dtype=np.float64)
    if scalar:
        if got.size != 1:
            raise Mistake(f"your {what} has shape {got.shape}: expected one number (average over the "
                          "batch)")
        got, want = got.reshape(()), want.reshape(())
    if got.shape != want.shape:
        raise Mistake(f"your {what} has shape {got.shape}, expected {want.shape}")
    if not np.all(np.isfinite(got)):
        raise Mistake(f"your {what} holds NaN or infinite values")
    if np.allclose(got, want, atol=atol, rtol=rtol):
        return
    for message, variant in variants:
        variant = np.asarray(variant, dtype=np.float64)
        if variant.shape == got.shape and np.allclose(got, variant, atol=atol, rtol=rtol):
            raise Mistake(message)
    if np.allclose(got, -want, atol=atol, rtol=rtol):
        raise Mistake(f"your {what} has the opposite sign of the reference's")
    nonzero = np.abs(want) > 1e-8
    if nonzero.any():
        ratio = got[nonzero] / want[nonzero]
        if np.allclose(ratio, ratio.flat[0], rtol=1e-3) and np.allclose(got[~nonzero], 0, atol=atol):
            raise Mistake(f"your {what} is {ratio.flat[0]:.4g} times the reference's: a factor is "
                          "missing or extra")
    gap = float(np.max(np.abs(got - want)))
    raise Mistake(f"your {what} differs from the reference by up to {gap:.3g} (its values are of size "
                  f"{float(np.max(np.abs(want))):.3g})")


def progress(chapter: str | None = None):
    """A table of one chapter's checked exercises, done or not yet, from the checks run in this kernel
    (default: the chapter of the last check run). Returns a Markdown table for the notebook."""
    from ..tables import show_table

    chapter = chapter or (_last_chapter[0] if _last_chapter else None)
    if chapter is None:
        print("No exercise checked in this kernel yet: run an exercise cell first.")
        return None
    chapter = str(chapter).zfill(2)
    rows = [{"exercise": ex.title, "kind": ex.kind,
             "status": "done" if VERDICTS.get(name) else ("tried, not yet" if name in VERDICTS
                                                          else "not yet")}
            for name, ex in EXERCISES.items() if ex.chapter == chapter]
    if not rows:
        print(f"Chapter {chapter} has no checked exercises.")
        return None
    done = sum(r["status"] == "done" for r in rows)
    print(f"Chapter {chapter}: {done} of {len(rows)} exercises done.")
    return show_table(rows)
