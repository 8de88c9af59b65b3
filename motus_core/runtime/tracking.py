"""Tracking monitor: the measured pose must follow the commanded one (ROS-free).

A collision, a joint that the driver silently stopped driving (e-stop button, teach mode, motors
off), a wrong joint map or a driver in read mode all show the same symptom: the measured position
parts from the command. Every joint state is compared with the commands sent over the last ``lag``
seconds (a servo follows with some delay: the smallest difference over that window counts); when a
joint is further away than its tolerance for ``grace`` seconds in a row while the executor moves
the robot, the monitor returns a message and the executor latches a stop (reset with
``~/reset_estop``). While the robot holds nothing is latched (an operator may move an arm by hand;
the executor resumes from the measured pose) but the error is still reported.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def tracking_tolerances(names: Sequence[str], lower: np.ndarray, upper: np.ndarray, gripper_indices: Sequence[int],
                        arm_tolerance: float, gripper_fraction: float, overrides: Sequence[float] | None = None) -> np.ndarray:
    """Per-joint tolerances: ``arm_tolerance`` (joint units) for arm joints, ``gripper_fraction`` of the range for
    grippers (a closed gripper on an object never reaches its command); ``overrides`` (the profile's
    ``extra.tracking_tolerance``, one value per joint) replace both."""
    if overrides is not None and len(overrides) > 0:
        tol = np.asarray(overrides, dtype=np.float64)
        if tol.shape != (len(names),) or not np.all(tol > 0):
            raise ValueError(f"tracking_tolerance needs {len(names)} positive values, got {list(overrides)}")
        return tol
    tol = np.full(len(names), float(arm_tolerance))
    for g in gripper_indices:
        tol[g] = float(gripper_fraction) * float(upper[g] - lower[g])
    return tol


class TrackingMonitor:
    def __init__(self, names: Sequence[str], tolerance: np.ndarray, grace: float = 0.1, lag: float = 0.1,
                 grasp_sign: Sequence[float] | None = None):
        """``grasp_sign``: per joint, +1 for a gripper whose opening grows with its value, -1 for the reverse,
        0 for arm joints. A gripper that stays MORE OPEN than its command is blocked by what it grasps
        (the normal end of every grasp), not a fault: only the part of its error in the closing
        direction (pinched past the command, a wrong unit or joint map) counts towards a stop."""
        self.names = tuple(names)
        self.grasp_sign = np.zeros(len(self.names)) if grasp_sign is None else np.asarray(grasp_sign, dtype=np.float64)
        self.tolerance = np.asarray(tolerance, dtype=np.float64)
        self.grace = float(grace)
        self.lag = float(lag)
        self.error = np.zeros(len(self.names))  # last per-joint error
        self.error_max = 0.0
        self.error_joint = ""
        self._over_since: float | None = None
        self.trips = 0

    def update(self, stamp: float, measured: np.ndarray, history: Sequence[tuple[float, np.ndarray]], active: bool) -> str | None:
        """Compare a joint state with the commands of ``history`` ((time, position), oldest first).

        Returns the reason to stop (once per excursion) or None.
        """
        best = None
        g = self.grasp_sign != 0
        for t, p in reversed(history):  # newest first; only the last ``lag`` seconds up to the measurement
            if t > stamp + 1e-9:
                continue
            if t < stamp - self.lag:
                break
            d = np.abs(measured - p)
            if g.any():  # grippers: only the error in the closing direction (see __init__)
                d[g] = np.maximum(0.0, (p[g] - measured[g]) * self.grasp_sign[g])
            best = d if best is None else np.minimum(best, d)
        if best is None:
            self._over_since = None
            return None
        self.error = best
        j = int(np.argmax(best / self.tolerance))
        k = int(np.argmax(best))
        self.error_max, self.error_joint = float(best[k]), self.names[k]
        over = best[j] > self.tolerance[j]
        if not (active and over):
            self._over_since = None
            return None
        if self._over_since is None:
            self._over_since = stamp
        if stamp - self._over_since + 1e-9 < self.grace:
            return None
        self._over_since = None
        self.trips += 1
        return (f"tracking error: joint {self.names[j]} is {best[j]:.3f} from its command for {self.grace:.2f} s "
                f"(tolerance {self.tolerance[j]:.3f}); collision, a driver that stopped following, or a wrong joint map?")
