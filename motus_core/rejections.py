"""Rejected input, counted per cause and logged at a bounded rate (ROS-free).

Every node that drops input (a malformed image, a joint state with missing joints, a command outside
the limits) must say so without flooding the log: the first rejection of each cause is logged at once,
later ones of the same cause at most once per ``period`` seconds with how many happened since the last
line. Everything is counted (``counts``), whether logged or not. ``log`` is any callable taking one
string (a ROS logger's ``warning``, ``print``, a list's ``append``).
"""
from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Callable

DEFAULT_PERIOD = 5.0  # s between two log lines about the same cause


class RejectionLog:
    """Counts rejections per cause; logs the first of each cause and then at most one line per period."""

    def __init__(self, log: Callable[[str], None], period: float = DEFAULT_PERIOD, clock: Callable[[], float] = time.monotonic,
                 prefix: str = "Rejected"):
        if period < 0:
            raise ValueError("period must be >= 0")
        self._log = log
        self.period = float(period)
        self._clock = clock
        self.prefix = prefix
        self.counts: Counter[str] = Counter()
        self._last: dict[str, float] = {}
        self._since: Counter[str] = Counter()
        self._lock = threading.Lock()

    def reject(self, cause: str, detail: str = "") -> bool:
        """Count one rejection of ``cause`` (a short stable key, e.g. "high: wrong size"); log it if due.

        ``detail`` is the readable explanation of this instance. Returns whether a line was logged.
        """
        now = self._clock()
        with self._lock:
            self.counts[cause] += 1
            self._since[cause] += 1
            last = self._last.get(cause)
            if last is not None and now - last < self.period:
                return False
            self._last[cause] = now
            n_since = self._since.pop(cause)
            total = self.counts[cause]
        text = f"{self.prefix} {cause}" + (f": {detail}" if detail else "")
        if last is None:
            text += " (first of this kind; further ones are counted and reported at most every " f"{self.period:g} s)"
        else:
            text += f" ({n_since} since the last report, {total} in all)"
        self._log(text)
        return True

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line: every cause with its count (empty when nothing was rejected)."""
        with self._lock:
            return ", ".join(f"{cause}: {n}" for cause, n in sorted(self.counts.items()))


_VARYING = re.compile(r"\[[^\]]*\]|\([^)]*\)|'[^']*'|-?\d+(?:\.\d+)?(?:e-?\d+)?")


def cause_of(text: str, limit: int = 80) -> str:
    """A stable cause key for an error message: numbers, quoted names and bracketed lists become '#', so
    "point 3 has 5 positions" and "point 7 has 2 positions" count as one cause."""
    return _VARYING.sub("#", str(text)).strip()[:limit]
