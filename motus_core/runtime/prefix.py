"""The RTC prefix of a policy request: the executor's plan, resampled on the new chunk's time grid."""
from __future__ import annotations

import numpy as np


def prefix_for_observation(plan_stamp: float, plan_step: float, plan_positions: np.ndarray, obs_stamp: float,
                           step_period: float, chunk_length: int) -> np.ndarray | None:
    """Committed positions at ``obs_stamp + (k + 1) * step_period`` for k = 0, 1, ... (joint units).

    ``plan_positions[j]`` is the executor's commanded/planned position at
    ``plan_stamp + (j + 1) * plan_step``. The prefix covers the chunk steps that fall inside the plan
    (linear interpolation between plan samples; both grids are 30 Hz in practice, so this is a
    sub-step shift), at most ``chunk_length`` of them. Returns None when the plan is empty or starts
    after the chunk's first step (the observation is older than the plan's history), an empty
    (0, dof) array when the plan ends before it.
    """
    plan = np.asarray(plan_positions, dtype=np.float64)
    if plan.ndim != 2 or plan.shape[0] == 0:
        return None
    tau = plan_stamp + plan_step * np.arange(1, plan.shape[0] + 1)
    t = obs_stamp + step_period * np.arange(1, chunk_length + 1)
    eps = 1e-6 * step_period
    if t[0] < tau[0] - eps:
        return None
    inside = t <= tau[-1] + eps
    m = int(np.argmin(inside)) if not inside.all() else chunk_length
    if m == 0:
        return np.zeros((0, plan.shape[1]))
    tt = np.clip(t[:m], tau[0], tau[-1])
    out = np.empty((m, plan.shape[1]))
    for j in range(plan.shape[1]):
        out[:, j] = np.interp(tt, tau, plan[:, j])
    return out
