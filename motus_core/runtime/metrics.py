"""Smoothness metrics of a command stream (benchmarks, the demo summary, tests).

All are computed from what a position-only driver would receive: the commanded positions ``P``
(N, dof) at times ``t`` (N,), differentiated with finite differences.

* ``switch_velocity_jumps``: for each chunk switch at ``b`` with hand-over window ``T``, the largest
  deviation of the commanded velocity (any joint, during ``[b, b + max(T, window)]``) from the
  velocity of the trajectory that was executing before the switch, i.e. how much the new chunk
  changed the motion. A consistent continuation (RTC) scores ~0; a synchronous restart from rest
  scores the full speed of the new motion; a naive executor that jumps to the new chunk scores the
  velocity step itself.
* ``boundary_velocity_jumps``: the velocity range (max - min, any joint) inside ``[b - w, b + w]``.
* ``rms_jerk``: root mean square of the third finite difference over the whole stream.
* ``step_discontinuities``: the per-tick jumps of position / velocity / acceleration right at the
  boundaries, relative to the motion's own local trend (second-order extrapolation of the previous
  tick), scaled to a 5 ms tick. A C2 stream has residuals of the order of jerk * dt^3, jerk * dt^2
  and jerk * dt; a discontinuous hand-over leaves the jump itself.
"""
from __future__ import annotations

import numpy as np


def finite_differences(t: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t_mid, v, a, j): velocity, acceleration, jerk of positions P(t) (non-uniform steps allowed)."""
    t = np.asarray(t, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    keep = np.concatenate([[True], np.diff(t) > 1e-9])
    t, P = t[keep], P[keep]
    dt = np.diff(t)[:, None]
    v = np.diff(P, axis=0) / dt
    tv = 0.5 * (t[1:] + t[:-1])
    a = np.diff(v, axis=0) / np.diff(tv)[:, None]
    ta = 0.5 * (tv[1:] + tv[:-1])
    j = np.diff(a, axis=0) / np.diff(ta)[:, None]
    return tv, v, a, j


def boundary_velocity_jumps(t: np.ndarray, P: np.ndarray, boundaries, window: float = 0.1) -> np.ndarray:
    tv, v, _, _ = finite_differences(t, P)
    out = []
    for b in boundaries:
        m = (tv >= b - window) & (tv <= b + window)
        if np.count_nonzero(m) < 2:
            continue
        w = v[m]
        out.append(float(np.max(w.max(axis=0) - w.min(axis=0))))
    return np.asarray(out)


def switch_velocity_jumps(t: np.ndarray, V: np.ndarray, switches, window: float = 1.0 / 30.0) -> np.ndarray:
    """Per switch (time, trajectory before it, blend window): max |v_cmd - v_before| over the hand-over."""
    t = np.asarray(t)
    V = np.asarray(V)
    out = []
    for b, old, T in switches:
        m = (t >= b) & (t <= b + max(T, window))
        if not m.any():
            continue
        dev = max(float(np.max(np.abs(V[i] - old.evaluate(float(t[i]))[1]))) for i in np.nonzero(m)[0])
        out.append(dev)
    return np.asarray(out)


def rms_jerk(t: np.ndarray, P: np.ndarray) -> float:
    _, _, _, j = finite_differences(t, P)
    return float(np.sqrt(np.mean(j**2))) if j.size else 0.0


def step_discontinuities(t: np.ndarray, P: np.ndarray, V: np.ndarray, A: np.ndarray, boundaries,
                         nominal_dt: float = 0.005, acc_scale=None) -> dict[str, float]:
    """Largest per-tick residual at the boundaries of the commanded (p, v, a) stream.

    The residuals of a C2 stream grow with the tick length h like jerk * h^3 / 6, jerk * h^2 / 2 and
    jerk * h, so they are scaled to a tick of ``nominal_dt`` (a stalled loop or a sim clock that
    advanced in a burst does not look like a discontinuity; a real jump does at any h).
    ``acc_scale`` (per joint, e.g. the acceleration limits) makes the acceleration step relative.
    """
    scale = 1.0 if acc_scale is None else np.asarray(acc_scale, dtype=np.float64)
    t = np.asarray(t)
    worst = {"position": 0.0, "velocity": 0.0, "acceleration": 0.0}
    for b in boundaries:
        i = int(np.searchsorted(t, b, side="left"))
        if i < 1 or i >= t.shape[0]:
            continue
        h = t[i] - t[i - 1]
        if h <= 0:
            continue
        r = max(nominal_dt / h, 0.0) if nominal_dt else 1.0
        r = min(r, 1.0)  # shorter ticks are not given extra room
        p_pred = P[i - 1] + V[i - 1] * h + 0.5 * A[i - 1] * h * h
        v_pred = V[i - 1] + A[i - 1] * h
        worst["position"] = max(worst["position"], float(np.max(np.abs(P[i] - p_pred))) * r**3)
        worst["velocity"] = max(worst["velocity"], float(np.max(np.abs(V[i] - v_pred))) * r**2)
        worst["acceleration"] = max(worst["acceleration"], float(np.max(np.abs(A[i] - A[i - 1]) / scale)) * r)
    return worst


def limit_violations(t: np.ndarray, P: np.ndarray, lower, upper, v_max, a_max, slack: float = 1.05) -> dict[str, float]:
    """Worst ratio of the stream's position excursion / velocity / acceleration to the limits (<= 1 is fine)."""
    P = np.asarray(P)
    _, v, a, _ = finite_differences(t, P)
    lower = np.asarray(lower)
    upper = np.asarray(upper)
    out_pos = float(np.max(np.maximum(lower - P, P - upper), initial=-np.inf))
    return {
        "position_excess": max(out_pos, 0.0),
        "velocity_ratio": float(np.max(np.abs(v) / np.asarray(v_max), initial=0.0)),
        "acceleration_ratio": float(np.max(np.abs(a) / np.asarray(a_max), initial=0.0)),
    }
