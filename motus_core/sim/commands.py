"""Commands in a robot profile's terms -> validated targets for the simulator (ROS-free).

The simulator is one robot (the ViperX bimanual model) but can *speak* any 14-joint dual-arm
profile: :class:`ProfileAdapter` maps the profile's canonical vector (its units: e.g. a gripper
opening in metres for ``aloha_agilex_2``) to the sim's vector (rad + normalised gripper) by index,
the gripper linearly from the profile's closed..open range to 0..1. Arm joints pass through in rad;
under a foreign profile the kinematics stay the ViperX's: the profile changes the interface, not
the robot.

:class:`CommandInterpreter` validates commands the way a real driver would have to and raises
:class:`~motus_core.sim.trajectory.CommandRejected` with a sentence saying why:

=====================================  ===========================================================
bad input                              behaviour
=====================================  ===========================================================
no joint names (trajectory)            rejected
unknown joint name                     rejected (names it)
duplicated joint name                  rejected
partial goal (not every joint of the   rejected unless ``allow_partial`` (then the other joints
topic)                                 hold their setpoint)
wrong array length                     rejected (positions != names; velocities/accelerations
                                       neither empty nor the number of names)
accelerations without velocities,      rejected
fields present in some points only
NaN / inf anywhere                     rejected
negative or not strictly increasing    rejected
time_from_start
position outside the profile's limits  ``out_of_limits="clamp"``: clamped to the limit and counted
                                       (``clamped`` on the result; the node logs it);
                                       ``"reject"``: rejected
every point in the past                rejected by the follower (partly past: the past points are
                                       skipped)
empty points list                      not an error: cancels the running trajectory (hold)
JointState without names               accepted only with exactly one position per joint of the
                                       topic, in the topic's joint order
=====================================  ===========================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..robot_profile import ProfileError, RobotProfile
from .model import GRIPPER_INDICES
from .trajectory import CommandRejected, TrajectoryGoal

OUT_OF_LIMITS = ("clamp", "reject")


class ProfileAdapter:
    """Profile canonical vector <-> the simulator's 14-dim vector (index for index; grippers rescaled)."""

    def __init__(self, profile: RobotProfile):
        if profile.dof != 14 or tuple(profile.gripper_indices) != GRIPPER_INDICES:
            raise ProfileError(
                f"the simulator plays 14-joint dual-arm robots with grippers at {GRIPPER_INDICES}; profile "
                f"{profile.name!r} has {profile.dof} joints with grippers at {profile.gripper_indices}"
            )
        g = profile.gripper
        if g.open_value == g.closed_value:
            raise ProfileError(f"profile {profile.name!r}: gripper open and closed values are equal")
        self.profile = profile
        self.names = profile.joint_names
        self.offset = np.zeros(14)
        self.scale = np.ones(14)  # sim = (profile - offset) * scale
        for i in GRIPPER_INDICES:
            self.offset[i] = g.closed_value
            self.scale[i] = 1.0 / (g.open_value - g.closed_value)
        self.lower = np.array(profile.position_lower)
        self.upper = np.array(profile.position_upper)

    def to_sim(self, x: np.ndarray, indices: np.ndarray | None = None) -> np.ndarray:
        if indices is None:
            return (np.asarray(x, float) - self.offset) * self.scale
        return (np.asarray(x, float) - self.offset[indices]) * self.scale[indices]

    def from_sim(self, s: np.ndarray, indices: np.ndarray | None = None) -> np.ndarray:
        if indices is None:
            return np.asarray(s, float) / self.scale + self.offset
        return np.asarray(s, float) / self.scale[indices] + self.offset[indices]

    def rate_to_sim(self, x: np.ndarray) -> np.ndarray:
        """Velocities (no offset) from profile units to sim units."""
        return np.asarray(x, float) * self.scale

    def rate_from_sim(self, s: np.ndarray) -> np.ndarray:
        """Velocities (no offset) from sim units to profile units."""
        return np.asarray(s, float) / self.scale


@dataclass(frozen=True)
class PositionCommand:
    """Validated joint targets in sim units."""

    indices: np.ndarray
    values: np.ndarray
    clamped: int = 0


def _finite(values: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(values)):
        raise CommandRejected(f"{what} contain NaN or inf")


class CommandInterpreter:
    """Validates commands given in a profile's joint names and units (see the module table)."""

    def __init__(self, profile: RobotProfile, allow_partial: bool = False, out_of_limits: str = "clamp"):
        if out_of_limits not in OUT_OF_LIMITS:
            raise ValueError(f"out_of_limits must be one of {OUT_OF_LIMITS}, got {out_of_limits!r}")
        self.adapter = ProfileAdapter(profile)
        self.allow_partial = allow_partial
        self.out_of_limits = out_of_limits
        self._index = {n: i for i, n in enumerate(profile.joint_names)}

    # -- shared checks ------------------------------------------------------------------------
    def _indices(self, names: Sequence[str], msg_to_canonical: Mapping[str, str]) -> np.ndarray:
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if list(names).count(n) > 1})
            raise CommandRejected(f"duplicated joint names {dup}")
        unknown = [n for n in names if n not in msg_to_canonical]
        if unknown:
            raise CommandRejected(f"unknown joint names {unknown} (this topic takes {sorted(msg_to_canonical)})")
        if not self.allow_partial and len(names) != len(msg_to_canonical):
            missing = sorted(set(msg_to_canonical) - set(names))
            raise CommandRejected(f"partial goal: joints {missing} are missing (set allow_partial_goals to accept)")
        return np.array([self._index[msg_to_canonical[n]] for n in names], dtype=int)

    def _limit(self, indices: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, int]:
        lo = self.adapter.lower[indices]
        hi = self.adapter.upper[indices]
        outside = (positions < lo) | (positions > hi)
        n = int(outside.sum())
        if n and self.out_of_limits == "reject":
            where = np.argwhere(outside)[0]
            j = indices[where[-1]]
            raise CommandRejected(
                f"{n} position(s) outside the joint limits, e.g. {self.adapter.names[j]}={positions[tuple(where)]:.4f} "
                f"not in [{self.adapter.lower[j]:.4f}, {self.adapter.upper[j]:.4f}]"
            )
        return (np.clip(positions, lo, hi) if n else positions), n

    # -- commands -----------------------------------------------------------------------------
    def positions(self, msg_to_canonical: Mapping[str, str], names: Sequence[str], positions: Sequence[float]) -> PositionCommand:
        """A JointState-style position command on a topic whose joints are ``msg_to_canonical``."""
        names = list(names)
        pos = np.asarray(positions, dtype=float).reshape(-1)
        if not names:
            if len(pos) != len(msg_to_canonical):
                raise CommandRejected(
                    f"no joint names and {len(pos)} positions; without names exactly {len(msg_to_canonical)} "
                    f"positions are expected, in the order {list(msg_to_canonical)}"
                )
            names = list(msg_to_canonical)
        elif len(pos) != len(names):
            raise CommandRejected(f"{len(names)} joint names but {len(pos)} positions")
        idx = self._indices(names, msg_to_canonical)
        _finite(pos, "positions")
        pos, clamped = self._limit(idx, pos)
        return PositionCommand(idx, self.adapter.to_sim(pos, idx), clamped)

    def trajectory(
        self,
        msg_to_canonical: Mapping[str, str],
        names: Sequence[str],
        points: Sequence[tuple[float, Sequence[float], Sequence[float], Sequence[float]]],
        start: float,
    ) -> TrajectoryGoal | None:
        """A JointTrajectory: ``points`` = (time_from_start s, positions, velocities, accelerations).

        Returns None for an empty trajectory (which cancels motion). ``start`` is the absolute start
        time (the node replaces a zero stamp by "now").
        """
        names = list(names)
        if not names:
            raise CommandRejected("trajectory has no joint names")
        idx = self._indices(names, msg_to_canonical)
        if not points:
            return None
        if not math.isfinite(start):
            raise CommandRejected("trajectory start time is not finite")
        n = len(names)
        times = np.empty(len(points))
        pos = np.empty((len(points), n))
        has_vel = [len(p[2]) > 0 for p in points]
        has_acc = [len(p[3]) > 0 for p in points]
        if len(set(has_vel)) > 1 or len(set(has_acc)) > 1:
            raise CommandRejected("velocities/accelerations must be given for every point or for none")
        if has_acc[0] and not has_vel[0]:
            raise CommandRejected("accelerations given without velocities")
        vel = np.empty((len(points), n)) if has_vel[0] else None
        acc = np.empty((len(points), n)) if has_acc[0] else None
        for k, (t, p, v, a) in enumerate(points):
            if len(p) != n:
                raise CommandRejected(f"point {k} has {len(p)} positions for {n} joint names")
            if vel is not None and len(v) != n:
                raise CommandRejected(f"point {k} has {len(v)} velocities for {n} joint names")
            if acc is not None and len(a) != n:
                raise CommandRejected(f"point {k} has {len(a)} accelerations for {n} joint names")
            times[k] = t
            pos[k] = p
            if vel is not None:
                vel[k] = v
            if acc is not None:
                acc[k] = a
        _finite(times, "time_from_start values")
        _finite(pos, "positions")
        if vel is not None:
            _finite(vel, "velocities")
        if acc is not None:
            _finite(acc, "accelerations")
        if times[0] < 0:
            raise CommandRejected(f"negative time_from_start {times[0]:.4f} s")
        if len(times) > 1 and not np.all(np.diff(times) > 0):
            k = int(np.argmin(np.diff(times) > 0)) + 1
            raise CommandRejected(
                f"time_from_start must strictly increase: point {k} at {times[k]:.4f} s after point {k - 1} at {times[k - 1]:.4f} s"
            )
        clamped = 0
        for k in range(len(points)):
            pos[k], c = self._limit(idx, pos[k])
            clamped += c
        scale = self.adapter.scale[idx]
        return TrajectoryGoal(
            indices=idx,
            start=float(start),
            times=times,
            positions=self.adapter.to_sim(pos, idx),
            velocities=None if vel is None else vel * scale,
            accelerations=None if acc is None else acc * scale,
            clamped=clamped,
        )
