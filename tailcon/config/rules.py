"""Value rules: small functions that say what a config value must be, and the did-you-mean helper.

A :data:`Rule` takes a value and returns ``None`` when it is fine, else the words for what was
expected ("an integer >= 1", "one of cosine, step (did you mean 'cosine'?)"); the caller adds the
key and the value to make the message. Methods use the same rules for their own keys.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Iterable, Optional

from ..errors import TailconError

Rule = Callable[[Any], Optional[str]]


class ConfigError(TailconError, ValueError):
    """A config file, key or value is wrong; the message names it."""


def suggest(key: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``valid`` to ``key``, or "" (a right leaf under a
    wrong section, ``lr`` for ``optim.lr``, is found too). Shared by every did-you-mean message."""
    valid = list(valid)
    leaf = key.rsplit(".", 1)[-1]
    # a right leaf under a wrong section first ("train.lr" -> "optim.lr"), then the closest spelling
    close = [v for v in valid if v != key and v.rsplit(".", 1)[-1] == leaf][:1] if "." in key else []
    close = close or difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:
        close = [v for v in valid if v.rsplit(".", 1)[-1] == leaf][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def integer(lo: Optional[int] = None, hi: Optional[int] = None) -> Rule:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = [f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else ""]
            return "an integer " + " and ".join(b for b in bounds if b) if any(bounds) else "an integer"
        return None
    return check


def number(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
           hi_open: bool = False) -> Rule:
    def check(v):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
        if ok:
            return None
        bounds = [f"{'>' if lo_open else '>='} {lo}" if lo is not None else "",
                  f"{'<' if hi_open else '<='} {hi}" if hi is not None else ""]
        return "a number " + " and ".join(b for b in bounds if b) if any(bounds) else "a number"
    return check


def one_of(choices: Iterable[str] | Callable[[], Iterable[str]]) -> Rule:
    """``choices``: the values, or a function returning them (looked up when checked, so that a
    registry filled by plugins is read as it is then)."""
    def check(v):
        valid = list(choices() if callable(choices) else choices)
        return None if v in valid else f"one of {', '.join(map(str, valid))}{suggest(str(v), valid)}"
    return check


def list_of(rule: Rule) -> Rule:
    def check(v):
        if not isinstance(v, (list, tuple)):
            return "a list"
        bad = [x for x in v if rule(x)]
        return f"a list of {rule(bad[0])}" if bad else None
    return check


# Every number in a config, whatever its key, is finite and of a magnitude some computation can
# take: 1e300 passes as a float but overflows float32 in the optimiser, far from the config.
MAX_MAGNITUDE = {float: 1e6, int: 2**53}


def number_in_bounds(v: Any) -> Optional[str]:
    """The check every number passes, whatever its key (None for a value that is not a number)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return "a finite number"
    bound = MAX_MAGNITUDE[float if isinstance(v, float) else int]
    return None if abs(v) <= bound else f"a number between -{bound:g} and {bound:g}"
