"""Point-to-point moves for ``~/move_to_pose`` (ROS-free): jerk-, acceleration- and velocity-limited (ruckig).

A move starts where the robot is (the measured pose at rest, or the command state while moving) and
ends at rest at the target. The time-optimal profile under the limits comes from ``ruckig``
(synchronised: every joint arrives at the same time). Named targets are the robot profile's
``poses:`` (``home`` falls back to ``joints.home``).
"""
from __future__ import annotations

import numpy as np
import yaml


def profile_poses(profile) -> dict[str, np.ndarray]:
    """name -> positions (canonical order) of the profile's ``poses:`` block; ``home`` defaults to ``joints.home``."""
    poses: dict[str, np.ndarray] = {"home": np.asarray(profile.home, dtype=np.float64)}
    raw = {}
    if getattr(profile, "source_path", ""):
        with open(profile.source_path) as f:
            raw = (yaml.safe_load(f) or {}).get("poses") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"profile {profile.name!r}: poses must be a mapping name -> {profile.dof} positions")
    for name, values in raw.items():
        q = np.asarray(values, dtype=np.float64)
        if q.shape != (profile.dof,) or not np.all(np.isfinite(q)):
            raise ValueError(f"profile {profile.name!r}: pose {name!r} needs {profile.dof} finite positions, got {values!r}")
        poses[str(name)] = q
    return poses


def resolve_target(poses: dict[str, np.ndarray], limits, pose: str, positions) -> tuple[np.ndarray, str]:
    """The target of a MoveToPose request (a pose name, or explicit positions): (positions, label). Raises ValueError."""
    if pose:
        if pose not in poses:
            raise ValueError(f"unknown pose {pose!r}; the profile has {sorted(poses)}")
        q, label = poses[pose], f"pose {pose!r}"
    else:
        q = np.asarray(list(positions), dtype=np.float64)
        if q.shape != (limits.dof,):
            raise ValueError(f"positions need {limits.dof} values (canonical joint order), got {q.shape[0]}")
        label = "the requested positions"
    if not np.all(np.isfinite(q)):
        raise ValueError("positions must be finite")
    out = (q < limits.lower - 1e-9) | (q > limits.upper + 1e-9)
    if out.any():
        j = int(np.nonzero(out)[0][0])
        raise ValueError(f"{label}: joint {limits.names[j]} = {q[j]:.4f} is outside its limits [{limits.lower[j]:.4f}, {limits.upper[j]:.4f}]")
    return q.copy(), label


class PoseMove:
    """A ruckig trajectory from (p0, v0, a0) at ``t0`` to rest at ``target``; ``evaluate(t)`` -> (p, v, a)."""

    def __init__(self, t0: float, p0: np.ndarray, v0: np.ndarray, a0: np.ndarray, target: np.ndarray,
                 v_max: np.ndarray, a_max: np.ndarray, j_max: np.ndarray, label: str = ""):
        from ruckig import InputParameter, Result, Ruckig, Trajectory

        dof = int(np.asarray(target).shape[0])
        inp = InputParameter(dof)
        inp.current_position = [float(x) for x in p0]
        inp.current_velocity = [float(x) for x in v0]
        inp.current_acceleration = [float(x) for x in a0]
        inp.target_position = [float(x) for x in target]
        inp.target_velocity = [0.0] * dof
        inp.target_acceleration = [0.0] * dof
        # a command state slightly above the budget (guard slack) must not make the problem infeasible
        inp.max_velocity = [float(x) for x in np.maximum(v_max, np.abs(v0) * 1.001)]
        inp.max_acceleration = [float(x) for x in np.maximum(a_max, np.abs(a0) * 1.001)]
        inp.max_jerk = [float(x) for x in j_max]
        self._traj = Trajectory(dof)
        result = Ruckig(dof).calculate(inp, self._traj)
        if result not in (Result.Working, Result.Finished):
            raise ValueError(f"ruckig could not plan the move: {result}")
        self.start_time = float(t0)
        self.duration = float(self._traj.duration)
        self.end_time = self.start_time + self.duration
        self.target = np.asarray(target, dtype=np.float64).copy()
        self.label = label

    def evaluate(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if t >= self.end_time:
            z = np.zeros_like(self.target)
            return self.target.copy(), z, z.copy()
        p, v, a = self._traj.at_time(max(0.0, float(t) - self.start_time))
        return np.asarray(p), np.asarray(v), np.asarray(a)
