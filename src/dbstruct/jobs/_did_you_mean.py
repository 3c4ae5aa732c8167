"""The hint a job file's error ends with when a name is close to a valid one."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = ["did_you_mean"]


def did_you_mean(name: str, choices: Sequence[str], *, prefix: str = "", suffix: str = "") -> str:
    """``"; did you mean 'x'?"``, or ``""`` when no choice is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{prefix}{close[0]}{suffix}'?" if close else ""
