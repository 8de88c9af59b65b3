"""Joint trajectory following with joint_trajectory_controller semantics (ROS-free).

A trajectory is a list of points (time from its start, positions, optional velocities and
accelerations) for a set of joints. The follower turns trajectories into a position setpoint for
every joint at any time, as ros2_control's ``joint_trajectory_controller`` (JTC) does:

* between points the setpoint is interpolated: quintic when the points carry velocities and
  accelerations, cubic (Hermite) with velocities only, linear with positions only;
* a trajectory starts at its start time (``header.stamp``; 0 means "now") from the setpoint the
  robot has at that moment, so the first segment leads smoothly from wherever the robot is;
* a new trajectory replaces the running one *from its start time*: until then the old one keeps
  running (ROS 1 JTC's documented "trajectory replacement"); pending trajectories that would start
  later than the new one are dropped;
* points whose time is already in the past when the trajectory arrives are skipped (the part of the
  trajectory in the past is not executed); if every point is in the past the trajectory is rejected;
* after the last point the setpoint holds the last position;
* an empty trajectory cancels motion: the setpoint holds where it is;
* joints a (partial) trajectory does not name hold the setpoint they had when it started;
* a direct position command (:meth:`JointTrajectoryFollower.set_positions`) overrides everything:
  running and pending trajectories are cancelled, the named joints jump to the new targets and the
  others hold.

Times are seconds on the robot's clock (sim time in the simulator). Validation of the *content* of
a command (names, sizes, NaN, limits, time ordering) is in :mod:`motus_core.sim.commands`.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


class CommandRejected(ValueError):
    """A command the robot refuses; the message says why (the node logs and counts it)."""


@dataclass
class TrajectoryGoal:
    """A validated trajectory in the robot's joint vector (indices into it), ready to follow."""

    indices: np.ndarray  # (J,) positions in the joint vector
    start: float  # absolute start time (s)
    times: np.ndarray  # (P,) time from start of each point, strictly increasing, >= 0
    positions: np.ndarray  # (P, J)
    velocities: np.ndarray | None = None  # (P, J) or None
    accelerations: np.ndarray | None = None  # (P, J) or None (only with velocities)
    clamped: int = 0  # position values clamped to the joint limits during validation

    @property
    def kind(self) -> str:
        if self.accelerations is not None:
            return "quintic"
        return "cubic" if self.velocities is not None else "linear"


class _Piecewise:
    """Knots (times, positions, velocities, accelerations) over the full joint vector."""

    def __init__(self, times: np.ndarray, pos: np.ndarray, vel: np.ndarray, acc: np.ndarray, kind: str):
        self.t = times
        self.p = pos
        self.v = vel
        self.a = acc
        self.kind = kind
        self._tlist = times.tolist()

    @classmethod
    def hold(cls, t: float, q: np.ndarray) -> "_Piecewise":
        n = len(q)
        return cls(np.array([t]), q[None, :].copy(), np.zeros((1, n)), np.zeros((1, n)), "linear")

    @property
    def end(self) -> float:
        return self._tlist[-1]

    def evaluate(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        i = bisect.bisect_right(self._tlist, t) - 1
        if i < 0:
            return self.p[0].copy(), np.zeros_like(self.p[0])
        if i >= len(self._tlist) - 1:
            return self.p[-1].copy(), np.zeros_like(self.p[-1])
        t0, t1 = self._tlist[i], self._tlist[i + 1]
        T = t1 - t0
        s = t - t0
        p0, p1 = self.p[i], self.p[i + 1]
        if self.kind == "linear":
            d = (p1 - p0) / T
            return p0 + d * s, d
        v0, v1 = self.v[i], self.v[i + 1]
        if self.kind == "cubic":
            dp = p1 - p0
            c2 = (3 * dp - (2 * v0 + v1) * T) / T**2
            c3 = (-2 * dp + (v0 + v1) * T) / T**3
            return p0 + v0 * s + c2 * s**2 + c3 * s**3, v0 + 2 * c2 * s + 3 * c3 * s**2
        a0, a1 = self.a[i], self.a[i + 1]
        # Quintic with position, velocity and acceleration given at both ends.
        c0, c1, c2 = p0, v0, 0.5 * a0
        h = p1 - p0 - v0 * T - 0.5 * a0 * T**2
        hv = v1 - v0 - a0 * T
        ha = a1 - a0
        c3 = (20 * h - 8 * hv * T + ha * T**2) / (2 * T**3)
        c4 = (-30 * h + 14 * hv * T - 2 * ha * T**2) / (2 * T**4)
        c5 = (12 * h - 6 * hv * T + ha * T**2) / (2 * T**5)
        pos = c0 + s * (c1 + s * (c2 + s * (c3 + s * (c4 + s * c5))))
        vel = c1 + s * (2 * c2 + s * (3 * c3 + s * (4 * c4 + s * 5 * c5)))
        return pos, vel


class JointTrajectoryFollower:
    """Position setpoints of an ``n``-joint robot from trajectories and direct commands (see module doc)."""

    def __init__(self, initial: np.ndarray, t: float = 0.0):
        self.n = len(initial)
        self._current = _Piecewise.hold(t, np.asarray(initial, float))
        self._pending: list[TrajectoryGoal] = []

    def reset(self, positions: np.ndarray, t: float) -> None:
        self._current = _Piecewise.hold(t, np.asarray(positions, float))
        self._pending.clear()

    def active(self, t: float) -> bool:
        """True while a trajectory is moving (or waiting to start)."""
        return bool(self._pending) or t < self._current.end

    def submit(self, goal: TrajectoryGoal, now: float) -> int:
        """Queue ``goal``; returns how many of its points were skipped as already in the past."""
        start = goal.start
        abs_times = start + goal.times
        skipped = 0
        if start < now:
            future = abs_times > now
            skipped = int((~future).sum())
            if skipped == len(abs_times):
                raise CommandRejected(
                    f"every point of the trajectory is in the past (it started at {start:.3f} s and ended at "
                    f"{abs_times[-1]:.3f} s; now is {now:.3f} s)"
                )
            keep = np.flatnonzero(future)
            goal = TrajectoryGoal(
                indices=goal.indices, start=now, times=abs_times[keep] - now, positions=goal.positions[keep],
                velocities=None if goal.velocities is None else goal.velocities[keep],
                accelerations=None if goal.accelerations is None else goal.accelerations[keep],
                clamped=goal.clamped,
            )
        # ROS 1 JTC replacement: the new goal replaces everything from its start time on.
        self._pending = [g for g in self._pending if g.start < goal.start]
        self._pending.append(goal)
        return skipped

    def cancel(self, now: float) -> None:
        """Stop following: hold the current setpoint (an empty trajectory does this)."""
        pos, _ = self.sample(now)
        self._current = _Piecewise.hold(now, pos)
        self._pending.clear()

    def set_positions(self, indices: np.ndarray, values: np.ndarray, now: float) -> None:
        """Direct position command: cancel trajectories, jump the named joints, hold the others."""
        pos, _ = self.sample(now)
        pos[np.asarray(indices, int)] = values
        self._current = _Piecewise.hold(now, pos)
        self._pending.clear()

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Setpoint (positions, velocities) of every joint at time ``t``."""
        while self._pending and self._pending[0].start <= t:
            self._activate(self._pending.pop(0))
        return self._current.evaluate(t)

    def _activate(self, goal: TrajectoryGoal) -> None:
        t0 = goal.start
        p0, v0 = self._current.evaluate(t0)
        idx = goal.indices
        n_pts = len(goal.times)
        times = np.empty(n_pts + 1)
        times[0] = t0
        times[1:] = t0 + goal.times
        pos = np.repeat(p0[None, :], n_pts + 1, axis=0)
        pos[1:, idx] = goal.positions
        vel = np.zeros((n_pts + 1, self.n))
        acc = np.zeros((n_pts + 1, self.n))
        if goal.kind == "linear":
            vel[0] = 0.0
        else:
            vel[0] = v0  # continue smoothly from the motion in progress
            vel[1:, idx] = goal.velocities
            if goal.accelerations is not None:
                acc[1:, idx] = goal.accelerations
        if n_pts and goal.times[0] <= 1e-12:  # first point at the start time: the setpoint jumps to it
            times, pos, vel, acc = times[1:], pos[1:], vel[1:], acc[1:]
        self._current = _Piecewise(times, pos, vel, acc, goal.kind)
