"""RTC's soft prefix mask, numpy only (the executor process must not load torch).

One definition, used by flow-policy guidance (``motus_core.flow.guidance``, as a tensor) and by the
executor's fallback blend for policies that cannot inpaint (``motus_core.runtime.strategies``).
"""
from __future__ import annotations

import math

import numpy as np

SCHEDULES = ("exp", "linear", "hard")


def prefix_weights(chunk_length: int, delay: int, prefix_length: int, schedule: str = "exp") -> np.ndarray:
    """Soft mask W (chunk_length,) float64 of RTC (Black, Galliker, Levine 2025).

    ``delay`` (d): actions that execute before the new chunk takes over (weight 1).
    ``prefix_length``: how many actions of the previous plan overlap the new chunk (``H - s`` in the
    paper); beyond it the weight is 0. Between the two the weight decays ("exp": the paper's
    ``c (e^c - 1) / (e - 1)``, "linear": ``c``, "hard": 0).
    """
    if chunk_length <= 0:
        raise ValueError("chunk_length must be positive")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown prefix weight schedule {schedule!r}; choose one of {SCHEDULES}")
    p = max(0, min(int(prefix_length), chunk_length))
    # Only actions that have a target can be frozen: a delay longer than the prefix would pull the
    # unknown (zero-padded) tail of the target with weight 1 towards zero.
    d = max(0, min(int(delay), p))
    w = np.zeros(chunk_length, dtype=np.float64)
    w[:d] = 1.0
    if p > d and schedule != "hard":
        i = np.arange(d, p, dtype=np.float64)
        c = (p - i) / (p - d + 1)
        w[d:p] = c * np.expm1(c) / math.expm1(1.0) if schedule == "exp" else c
    return w
