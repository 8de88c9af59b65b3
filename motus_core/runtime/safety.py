"""The always-on safety layer of the chunk executor (ROS-free).

Neither the vendor drivers (Piper, ARX: no command timeout, no rate limit) nor
``joint_trajectory_controller`` (it does not enforce velocity/acceleration limits) protect the robot
from a policy, so the executor does it itself:

* :class:`JointLimits` - position, velocity, acceleration and per-step limits, the tighter of the
  robot profile and the URDF (``<limit lower upper velocity>``; URDF has no acceleration limits);
* :class:`ChunkValidator` - rejects chunks with NaN/inf, wrong shape, values outside the position
  limits (beyond a small tolerance) or steps between consecutive actions above ``max_step``;
* :class:`CommandGuard` - the last line, applied to every command tick: clamps position to the
  limits and the change per tick to the velocity, acceleration and per-step limits, and counts
  every tick where it had to act ("limit hits");
* :class:`EStopLatch` - a latched e-stop that only an explicit reset clears;
* :class:`SafetyMonitorConfig` - the parameters of the monitors around the executor: joint-state
  freshness (``state_timeout``), the tracking monitor (``motus_core/runtime/tracking.py``), the
  resynchronisation of the command with the measured pose before a resume, and ``~/move_to_pose``
  (``motus_core/runtime/motion.py``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from motus_core.policy.base import ActionChunk, check_chunk

log = logging.getLogger(__name__)


@dataclass
class JointLimits:
    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    max_step: np.ndarray  # per action step (1 / action_rate)
    step_period: float
    sources: dict[str, str]  # joint -> "profile" | "urdf" | "profile+urdf" (where the tightest limit came from)

    @property
    def dof(self) -> int:
        return len(self.names)

    @classmethod
    def from_profile(cls, profile, urdf_path: str | Path | None = None, use_urdf: bool = True) -> "JointLimits":
        """Profile limits, tightened by the URDF's where a URDF joint has the same name.

        Only joints with the canonical name are matched; a gripper modelled differently in the
        URDF (e.g. prismatic fingers in metres vs. a normalised gripper) keeps the profile's limits.
        """
        lower = np.array(profile.position_lower, dtype=np.float64)
        upper = np.array(profile.position_upper, dtype=np.float64)
        vel = np.array(profile.velocity_limit, dtype=np.float64)
        acc = np.array(profile.acceleration_limit, dtype=np.float64)
        step = np.array(profile.max_step, dtype=np.float64)
        sources = {n: "profile" for n in profile.joint_names}
        path = None
        if use_urdf:
            path = Path(urdf_path) if urdf_path else (profile.resolve(profile.urdf) if profile.urdf else None)
        if path is not None:
            if not path.is_file():
                log.warning("URDF %s not found: using the robot profile's joint limits only", path)
            else:
                for i, name in enumerate(profile.joint_names):
                    lim = urdf_joint_limits(path).get(name)
                    if lim is None:
                        continue
                    lo, hi, v = lim
                    tighter = False
                    if lo is not None and hi is not None and hi > lo:
                        if lo > lower[i]:
                            lower[i], tighter = lo, True
                        if hi < upper[i]:
                            upper[i], tighter = hi, True
                    if v is not None and v > 0 and v < vel[i]:
                        vel[i], tighter = v, True
                    sources[name] = "urdf" if tighter else "profile+urdf"
        if np.any(upper <= lower):
            bad = [profile.joint_names[i] for i in np.nonzero(upper <= lower)[0]]
            raise ValueError(f"profile and URDF limits leave no range for joints {bad}")
        return cls(
            names=tuple(profile.joint_names), lower=lower, upper=upper, velocity=vel, acceleration=acc,
            max_step=step, step_period=1.0 / float(profile.action_rate_hz), sources=sources,
        )


_URDF_CACHE: dict[str, dict] = {}


def urdf_joint_limits(path: str | Path) -> dict[str, tuple[float | None, float | None, float | None]]:
    """joint name -> (lower, upper, velocity) of the URDF's revolute/prismatic joints (yourdfpy)."""
    key = str(Path(path).resolve())
    if key not in _URDF_CACHE:
        import yourdfpy

        urdf = yourdfpy.URDF.load(key, load_meshes=False, build_scene_graph=False, build_collision_scene_graph=False)
        out = {}
        for name, joint in urdf.joint_map.items():
            if joint.type not in ("revolute", "prismatic", "continuous") or joint.limit is None:
                continue
            lo = joint.limit.lower if joint.type != "continuous" else None
            hi = joint.limit.upper if joint.type != "continuous" else None
            out[name] = (
                None if lo is None else float(lo),
                None if hi is None else float(hi),
                None if joint.limit.velocity is None else float(joint.limit.velocity),
            )
        _URDF_CACHE[key] = out
    return _URDF_CACHE[key]


class ChunkValidator:
    """Decides whether a chunk may be executed; returns the reason when not."""

    def __init__(self, limits: JointLimits, range_tolerance: float | np.ndarray = 0.05, step_tolerance: float = 1.5):
        self.limits = limits
        self.range_tolerance = np.broadcast_to(np.asarray(range_tolerance, dtype=np.float64), (limits.dof,)).copy()  # per joint
        self.step_tolerance = float(step_tolerance)
        self.step_checked = np.ones(limits.dof, dtype=bool)  # joints whose steps the discontinuity check covers

    def check(self, chunk: ActionChunk, frozen: int = 0) -> str | None:
        """``frozen``: leading actions that are the executor's own committed plan, not the model's (an
        RTC prefix returned verbatim). The steps among them and the step from the last of them to the
        model's first action are not a discontinuity of the chunk: the seam is where two plans meet, which
        the executor's transition blends within the limits as it does at every chunk switch. The model's
        own steps are all checked."""
        lim = self.limits
        why = check_chunk(chunk, lim.dof, lim.lower - self.range_tolerance, lim.upper + self.range_tolerance)
        if why:
            return why
        a = np.asarray(chunk.actions, dtype=np.float64)
        if a.shape[0] > 1:
            # max_step is per action step of the profile's rate; scale if the chunk uses another period.
            allowed = lim.max_step * (chunk.step_period / lim.step_period) * self.step_tolerance
            steps = np.abs(np.diff(a, axis=0))
            steps[:max(0, min(int(frozen), steps.shape[0]))] = 0.0
            over = (steps > allowed) & self.step_checked
            if over.any():
                k, j = np.argwhere(over)[0]
                return (f"step {k}->{k + 1} of joint {lim.names[j]} is {steps[k, j]:.4f}, above the per-step limit "
                        f"{allowed[j]:.4f} (a discontinuous chunk)")
        return None

    def clip(self, actions: np.ndarray) -> tuple[np.ndarray, int]:
        """Clamp a validated chunk into the position limits; returns (actions, number of clamped values)."""
        a = np.asarray(actions, dtype=np.float64)
        clipped = np.clip(a, self.limits.lower, self.limits.upper)
        return clipped, int(np.count_nonzero(clipped != a))


class CommandGuard:
    """Per-tick limits on the command stream (the last line of defence).

    Given the trajectory's target for this tick, returns the command actually sent: position within
    the limits, and a change since the last command that respects the velocity, per-step and
    acceleration limits (``slack`` > 1 tolerates numerical noise of a trajectory that is feasible
    by construction). ``hit`` tells the executor to re-plan from the command it really sent.
    """

    def __init__(self, limits: JointLimits, slack: float = 1.02):
        self.limits = limits
        self.slack = float(slack)
        per_step_velocity = limits.max_step / limits.step_period
        self.v_max = np.minimum(limits.velocity, per_step_velocity) * self.slack
        self.a_max = limits.acceleration * self.slack
        self.p: np.ndarray | None = None
        self.v: np.ndarray | None = None  # finite-difference velocity of the last tick
        self.t: float | None = None
        self.dt: float | None = None  # length of the last tick (the velocities are averages over ticks)
        # what the last tick sent, repeated verbatim while the clock stands still
        self.v_sent: np.ndarray | None = None
        self.a_sent: np.ndarray | None = None
        self.hits = 0
        self.hits_by_kind = {"position": 0, "velocity": 0, "acceleration": 0}

    def reset(self, t: float, p: np.ndarray, v: np.ndarray | None = None) -> None:
        self.t = float(t)
        self.p = np.array(p, dtype=np.float64)
        self.v = np.zeros_like(self.p) if v is None else np.array(v, dtype=np.float64)
        self.dt = None
        self.v_sent = self.v.copy()
        self.a_sent = np.zeros_like(self.p)

    def copy(self) -> "CommandGuard":
        """An independent guard in the same state (``apply`` on it leaves this one as it was)."""
        other = CommandGuard.__new__(CommandGuard)
        other.__dict__.update(self.__dict__)
        other.hits_by_kind = dict(self.hits_by_kind)
        return other

    def forget(self) -> None:
        """Drop the last command (after a clock jump): the next ``apply`` starts afresh."""
        self.p = self.v = self.t = self.dt = self.v_sent = self.a_sent = None

    def _braking_speed(self, distance: np.ndarray, dt: float) -> np.ndarray:
        """Fastest speed from which ticks of ``dt`` at deceleration ``a_max`` stop within ``distance``.

        Discrete-time version of sqrt(2 a d): with v_k = v - k a dt the distance covered until rest is
        at most dt * v (v / (a dt) + 1) / 2 + a dt^2 / 8 (the last term covers a speed that is not a
        whole number of decrements), solved for v.
        """
        adt = self.a_max * dt
        d = np.maximum(distance - adt * dt / 8.0, 0.0)
        return adt * (np.sqrt(0.25 + 2.0 * d / (adt * dt)) - 0.5)

    def _wall_speed(self, distance: np.ndarray, h: float) -> np.ndarray:
        """Fastest speed towards a position limit ``distance`` away such that, after a tick of ``h`` s
        at that speed, braking at ``a_max`` still stops at the limit: v h + v^2 / (2 a) = distance.

        The discrete curve of ``_braking_speed`` assumes every later tick is as long as this one; with
        uneven ticks it let the command reach a limit at a speed only an acceleration of up to 24x the
        limit could stop (test_the_guard_stops_at_a_position_limit_under_uneven_ticks)."""
        return self.a_max * (np.sqrt(h * h + 2.0 * distance / self.a_max) - h)

    def apply(self, t: float, p: np.ndarray, v: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        lim = self.limits
        if self.p is None or self.t is None:
            self.reset(t, np.clip(p, lim.lower, lim.upper))
        dt = float(t) - self.t
        if dt <= 0.0:
            # The clock did not advance (e.g. sim time slower than the command loop): repeat the last
            # command exactly (not the tick's finite-difference velocity: a held pose must read v = 0).
            return self.p.copy(), self.v_sent.copy(), self.a_sent.copy(), False
        p = np.array(p, dtype=np.float64)
        v = np.array(v, dtype=np.float64)
        a = np.array(a, dtype=np.float64)
        # Velocities are averages over ticks, so two of them are (dt_prev + dt) / 2 apart in time: with
        # uneven ticks (sim time advancing in 4 ms steps, a jittery clock) dividing by dt alone would
        # see accelerations that are not there.
        dv_max = self.a_max * (0.5 * (self.dt + dt) if self.dt is not None else dt)
        # braking curve to each position limit: at most the speed from which the robot can still
        # stop at the limit (landing on it is fine when the next tick can stop there)
        d_up = np.maximum(lim.upper - self.p, 0.0)
        d_lo = np.maximum(self.p - lim.lower, 0.0)
        # The next tick may be much shorter or longer than this one (a starved loop alternated 4-ms and
        # 30-ms ticks): leave room to brake continuously after a tick as long as this or the last one,
        # and land on a limit only at a speed that a next tick of any length can take to zero.
        h = max(dt, self.dt) if self.dt is not None else dt
        land = 0.5 * self.a_max * dt
        v_up = np.maximum(self._wall_speed(d_up, h), np.where(d_up / dt <= land, d_up / dt, 0.0))
        v_lo = -np.maximum(self._wall_speed(d_lo, h), np.where(d_lo / dt <= land, d_lo / dt, 0.0))
        # velocity over this tick, as a position-only driver will see it
        v_tick = (p - self.p) / dt
        inside = np.all(p >= lim.lower) and np.all(p <= lim.upper) and np.all(v_tick <= v_up) and np.all(v_tick >= v_lo)
        if inside and np.all(np.abs(v_tick) <= self.v_max) and np.all(np.abs(v_tick - self.v) <= dv_max):
            self.t, self.p, self.v, self.dt = float(t), p, v_tick, dt
            self.v_sent, self.a_sent = np.clip(v, -self.v_max, self.v_max), np.clip(a, -self.a_max, self.a_max)
            return p.copy(), self.v_sent.copy(), self.a_sent.copy(), False
        # Binding: move towards the target as fast as the limits allow without overshooting it,
        # i.e. along the braking curve |v - v_target| <= sqrt(2 a |e|) (and towards the position limits
        # along the curve that stops at them).
        kinds = []
        if not np.all(np.abs(v_tick) <= self.v_max):
            kinds.append("velocity")
        if not np.all(np.abs(v_tick - self.v) <= dv_max):
            kinds.append("acceleration")
        if not inside:
            kinds.append("position")
        target = np.clip(p, lim.lower, lim.upper)
        v_target = np.where(p == target, np.clip(v, -self.v_max, self.v_max), 0.0)
        e = target - self.p
        v_des = v_target + np.sign(e) * self._braking_speed(np.abs(e), dt)
        # land on the target this tick when that is reachable and leaves a velocity we can match next tick
        land = (np.abs(e / dt - self.v) <= dv_max) & (np.abs(e / dt - v_target) <= dv_max)
        v_des = np.where(land, e / dt, v_des)
        v_cmd = np.clip(v_des, np.maximum(-self.v_max, v_lo), np.minimum(self.v_max, v_up))
        v_cmd = np.clip(v_cmd, self.v - dv_max, self.v + dv_max)
        p_out = np.clip(self.p + v_cmd * dt, lim.lower, lim.upper)
        v_out = (p_out - self.p) / dt
        a_out = (v_out - self.v) / dt
        self.hits += 1
        for k in kinds:
            self.hits_by_kind[k] += 1
        self.t, self.p, self.v, self.dt = float(t), p_out, v_out, dt
        self.v_sent, self.a_sent = v_out.copy(), np.clip(a_out, -self.a_max, self.a_max)
        return p_out.copy(), self.v_sent.copy(), self.a_sent.copy(), True


class EStopLatch:
    """Latched emergency stop: ``trigger`` sets it, only ``reset`` clears it."""

    def __init__(self):
        self.active = False
        self.reason = ""
        self.count = 0

    def trigger(self, reason: str = "e-stop requested") -> bool:
        """Latch; returns True if it was not latched before."""
        was = self.active
        self.active = True
        self.reason = reason
        if not was:
            self.count += 1
        return not was

    def reset(self) -> bool:
        was = self.active
        self.active = False
        self.reason = ""
        return was



@dataclass
class SafetyMonitorConfig:
    """Monitors around the executor (the executor's config inherits these fields; see docs/runtime.md "Safety")."""

    state_timeout: float = field(default=0.5, metadata={"help": "s (robot clock): no motion unless the newest complete joint state is younger; a moving robot stops when they get older"})
    resync_tolerance: float = field(default=0.05, metadata={"help": "rad: before a fade-in or resume at rest, the command restarts at the measured pose when an arm joint is further than this from it (above a servo's steady-state error; grippers keep their command)"})
    tracking_tolerance: float = field(default=0.3, metadata={"help": "tracking monitor: |measured - commanded| above this (rad, arm joints) while moving latches a stop; profile extra.tracking_tolerance (per joint) overrides"})
    tracking_gripper_fraction: float = field(default=0.6, metadata={"help": "tracking monitor: tolerance of a gripper as a fraction of its range (a gripper closed on an object stays open)"})
    tracking_grace: float = field(default=0.1, metadata={"help": "s the tracking error must stay above the tolerance before the stop latches"})
    tracking_lag: float = field(default=0.1, metadata={"help": "s of commands a joint state is compared with (servo delay)"})
    watchdog_late_tick: float = field(default=0.1, metadata={"help": "s: the watchdog starts the stop this much earlier at most, by the largest recent tick gap (a loaded machine, sim time in bursts)"})
    move_velocity_scale: float = field(default=0.3, metadata={"help": "~/move_to_pose: fraction of the velocity limits when the request gives none"})
    move_jerk_factor: float = field(default=10.0, metadata={"help": "~/move_to_pose: jerk limit = this x the acceleration limit (1/s)"})

    def validate_safety(self) -> None:
        if self.state_timeout <= 0 or self.tracking_tolerance <= 0 or not (0 < self.tracking_gripper_fraction <= 1):
            raise ValueError("state_timeout and tracking_tolerance must be > 0, tracking_gripper_fraction in (0, 1]")
        if self.tracking_grace < 0 or self.tracking_lag < 0 or self.resync_tolerance < 0 or self.watchdog_late_tick < 0:
            raise ValueError("tracking_grace, tracking_lag and resync_tolerance must be >= 0")
        if not (0 < self.move_velocity_scale <= 1) or self.move_jerk_factor <= 0:
            raise ValueError("move_velocity_scale must be in (0, 1] and move_jerk_factor > 0")
