"""Time-parameterised joint trajectories for the chunk executor.

A policy emits positions on a 30 Hz grid; the robot wants a command stream (200 Hz positions, or a
``JointTrajectory`` with velocities and accelerations for ``joint_trajectory_controller``). Sending
the raw waypoints makes the controller interpolate linearly (C0: velocity steps at every waypoint,
the "jerky at chunk boundaries" complaint of the field). Here every commanded motion is C2:

* :class:`WaypointSpline` - a cubic spline (scipy ``CubicSpline``, C2) through one plan's waypoints;
* :class:`TransitionTrajectory` - switches from the state being commanded to a new trajectory over
  a window ``[t0, t0 + T]``: ``q = q_new + e``, where the offset ``e`` is the quintic that starts
  with the difference in position, velocity and acceleration between the current command and
  ``q_new`` at ``t0`` and decays to zero with zero velocity and acceleration at ``t0 + T``. So
  position, velocity and acceleration are continuous at ``t0`` (the command's) and at ``t0 + T``
  (the new trajectory's). Only the new trajectory and six numbers per joint are kept, however fast
  chunks arrive (a blend of old and new trajectories would nest one level per chunk). A chunk
  switch, the fade-in from the measured pose and the recovery after a limit clamp are all
  transitions, so the command never jumps, whatever the new chunk says;
* :class:`StopTrajectory` - decelerates from any state ``(p, v, a)`` to rest within the
  acceleration limits (cubic velocity profile, so acceleration is continuous too) and holds;
* :class:`HoldTrajectory` - a constant pose.

``blend_duration`` picks the window from the velocity/acceleration budget so that the transition
itself respects the limits for the offset it has to absorb.
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from scipy.interpolate import CubicSpline

# Peak |ds/du| and |d2s/du2| of the quintic smoothstep s(u) = 10u^3 - 15u^4 + 6u^5 on [0, 1].
SMOOTHSTEP_PEAK_D1 = 1.875
SMOOTHSTEP_PEAK_D2 = 10.0 / math.sqrt(3.0)  # 5.7735


class Trajectory(Protocol):
    def evaluate(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, velocity, acceleration (each (dof,)) at time ``t``."""

    @property
    def end_time(self) -> float:
        """Time after which the trajectory is at rest (inf if it never comes to rest by itself)."""


def smoothstep(u: float) -> tuple[float, float, float]:
    """Quintic smoothstep and its first two derivatives at ``u`` (clipped to [0, 1])."""
    if u <= 0.0:
        return 0.0, 0.0, 0.0
    if u >= 1.0:
        return 1.0, 0.0, 0.0
    u2 = u * u
    s = u2 * u * (10.0 + u * (-15.0 + 6.0 * u))
    ds = 30.0 * u2 * (1.0 - u) ** 2
    dds = 60.0 * u * (1.0 - u) * (1.0 - 2.0 * u)
    return s, ds, dds


class HoldTrajectory:
    """Stay at ``position``."""

    def __init__(self, position: np.ndarray):
        self.position = np.array(position, dtype=np.float64)
        self._zero = np.zeros_like(self.position)

    def evaluate(self, t: float):
        return self.position.copy(), self._zero.copy(), self._zero.copy()

    @property
    def end_time(self) -> float:
        return -math.inf


class WaypointSpline:
    """C2 cubic spline through ``positions[k]`` at ``times[k]`` (strictly increasing).

    Before the first waypoint the spline is extrapolated linearly with its first velocity (at most
    ``max_extrapolation`` s, used when a chunk arrives less than one step after its observation;
    before that it rests): a cubic extrapolated through the curvature of a jittery chunk's first
    knots reached 25x the chunk's deviation and 5.7 rad/s within 23 ms. After the last waypoint it
    rests at the last waypoint. The executor never lets it run to its end while moving: the watchdog starts a
    :class:`StopTrajectory` early enough (see ``ChunkExecutor``).
    """

    def __init__(self, times: np.ndarray, positions: np.ndarray, max_extrapolation: float | None = None):
        t = np.asarray(times, dtype=np.float64)
        p = np.asarray(positions, dtype=np.float64)
        if p.ndim != 2 or t.ndim != 1 or t.shape[0] != p.shape[0]:
            raise ValueError(f"waypoints must be (N,) times and (N, dof) positions, got {t.shape} and {p.shape}")
        if t.shape[0] < 1:
            raise ValueError("a spline needs at least one waypoint")
        if np.any(np.diff(t) <= 0):
            raise ValueError("waypoint times must be strictly increasing")
        self.times = t
        self.positions = p
        self.max_extrapolation = max_extrapolation
        n = t.shape[0]
        if n == 1:
            self._coef = None
            self._spline = None
        else:
            bc = "not-a-knot" if n >= 4 else "natural"
            self._spline = CubicSpline(t, p, axis=0, bc_type=bc)
            self._coef = self._spline.c  # (4, N-1, dof): highest power first
        self._zero = np.zeros(p.shape[1])

    @property
    def start_time(self) -> float:
        return float(self.times[0])

    @property
    def end_time(self) -> float:
        return float(self.times[-1])

    def evaluate(self, t: float):
        times = self.times
        if self._coef is None or t >= times[-1]:
            return self.positions[-1].copy(), self._zero.copy(), self._zero.copy()
        if t < times[0]:
            v0 = self._coef[2, 0, :]
            if self.max_extrapolation is not None and t < times[0] - self.max_extrapolation:
                return self.positions[0] - v0 * self.max_extrapolation, self._zero.copy(), self._zero.copy()
            return self.positions[0] + v0 * (t - times[0]), v0.copy(), self._zero.copy()
        i = int(np.searchsorted(times, t, side="right")) - 1
        i = min(max(i, 0), times.shape[0] - 2)
        c = self._coef[:, i, :]
        x = t - times[i]
        p = ((c[0] * x + c[1]) * x + c[2]) * x + c[3]
        v = (3.0 * c[0] * x + 2.0 * c[1]) * x + c[2]
        a = 6.0 * c[0] * x + 2.0 * c[1]
        return p, v, a

    def positions_at(self, times: np.ndarray) -> np.ndarray:
        """Positions at many times at once (same semantics as ``evaluate``)."""
        t = np.asarray(times, dtype=np.float64)
        if self._spline is None:
            return np.repeat(self.positions[-1:], t.shape[0], axis=0)
        out = self._spline(np.clip(t, self.times[0], self.times[-1]))
        before = t < self.times[0]
        if np.any(before):
            lo = self.times[0] - (self.max_extrapolation if self.max_extrapolation is not None else np.inf)
            out[before] = self.positions[0] + self._coef[2, 0, :] * (np.maximum(t[before], lo) - self.times[0])[:, None]
        return out


def smooth_to_limits(times: np.ndarray, positions: np.ndarray, a_max: np.ndarray, max_iterations: int = 100) -> tuple[np.ndarray, int]:
    """Waypoints low-passed where their second differences ask for more than ``a_max`` (per joint).

    A jittery chunk (an undertrained policy: 0.02 rad of noise at 30 Hz is ~40 rad/s^2) cannot be
    followed; a plan through it has knot velocities and accelerations no command can match, and every
    hand-over onto it (fade-in, blend, recovery) starts from those values and swings out. The robot
    can only follow the chunk's slow part, so the plan is built through that: each pass moves the
    offending knots (and their neighbours) half of the way towards the mean of their neighbours, which
    removes the step-to-step alternation first and leaves a feasible chunk unchanged. The first
    and last waypoints are kept. Returns the waypoints and the number of passes (0: unchanged).
    """
    t = np.asarray(times, dtype=np.float64)
    p = np.array(positions, dtype=np.float64)
    if p.shape[0] < 3:
        return p, 0
    h = np.diff(t)
    a_max = np.broadcast_to(np.asarray(a_max, dtype=np.float64), p.shape[1:])
    for n in range(max_iterations):
        slopes = np.diff(p, axis=0) / h[:, None]
        acc = 2.0 * np.diff(slopes, axis=0) / (h[1:] + h[:-1])[:, None]  # at the interior knots
        bad = np.abs(acc) > a_max
        if not bad.any():
            return p, n
        near = bad.copy()  # the offending knots and their neighbours
        near[1:] |= bad[:-1]
        near[:-1] |= bad[1:]
        step = 0.25 * (p[:-2] - 2.0 * p[1:-1] + p[2:])
        p[1:-1] += np.where(near, step, 0.0)
    return p, max_iterations


# The quintic Hermite bases for a start value (k = 0), slope (k = 1) and curvature (k = 2) that decay
# to zero with zero slope and curvature at u = 1, as coefficients of u^0..u^5: _DECAY[k, d] is the
# d-th derivative (d/du) of the k-th basis.
_DECAY_BASES = np.array([
    [1, 0, 0, -10, 15, -6],
    [0, 1, 0, -6, 8, -3],
    [0, 0, 0.5, -1.5, 1.5, -0.5],
], dtype=np.float64)
_POWERS = np.arange(6)
_DECAY = np.stack([_DECAY_BASES,
                   np.concatenate([_DECAY_BASES[:, 1:] * _POWERS[1:], np.zeros((3, 1))], axis=1),
                   np.concatenate([_DECAY_BASES[:, 2:] * (_POWERS[2:] * _POWERS[1:-1]), np.zeros((3, 2))], axis=1)], axis=1)


class TransitionTrajectory:
    """``base(t) + e(t)``: the offset ``e`` decays from (dp, dv, da) at ``t0`` to zero at ``t0 + duration``.

    Each part of the offset decays over its own window: the position offset over ``duration``, the
    velocity offset over ``v_window`` and the acceleration offset over ``a_window`` (both at most
    ``duration``; default ``duration``). One window for all three is wrong as soon as the window is
    long: the quintic that cancels an acceleration offset ``da`` over ``T`` swings out by about
    ``0.017 da T^2`` (a chunk whose spline starts at 60 rad/s^2, faded in over 3 s: 9 rad), and a
    velocity offset ``dv`` by ``0.16 dv T``. Short windows for those parts keep the swing to what the
    limits make necessary; the sum still starts exactly at the commanded state (C2).

    A transition onto a transition (``from_state`` with a ``TransitionTrajectory`` as ``base``: a
    chunk arriving while the last hand-over still runs) keeps the offsets already decaying on their
    own schedules and adds one for what is left: ``e`` is a sum of such pieces over one base plan
    (closed-form quintics, no nesting of plans; a piece is dropped once it has decayed). Restarting a
    single offset at every switch instead never let it decay while chunks came faster than its
    window: a quintic starts flat, so each restart removed well under 1 % of a fade-in's offset, and
    with temporal ensembling (a chunk every ~35 ms) the command followed the plan's motion 0.24-0.38 rad
    away from it for over a second, into a gripper's position limit (a CI run under load;
    ``test_a_fade_in_converges_however_often_chunks_arrive``). With the pieces kept, a chunk that
    repeats the plan changes nothing, and the command is on the newest plan when the last piece ends.
    """

    def __init__(self, base: Trajectory, t0: float, duration: float, dp: np.ndarray, dv: np.ndarray, da: np.ndarray,
                 v_window: float | None = None, a_window: float | None = None, carried: "TransitionTrajectory | None" = None):
        if not duration > 0:
            raise ValueError("transition duration must be positive")
        self.base = base
        self.t0 = float(t0)
        self.duration = float(duration)
        self.v_window = self.duration if v_window is None else min(float(v_window), self.duration)
        self.a_window = self.duration if a_window is None else min(float(a_window), self.duration)
        if not (self.v_window > 0 and self.a_window > 0):
            raise ValueError("transition windows must be positive")
        self.dp = np.array(dp, dtype=np.float64)
        self.dv = np.array(dv, dtype=np.float64)
        self.da = np.array(da, dtype=np.float64)
        # every piece still decaying: start times (n,), windows (n, 3) and offsets (n, 3, dof); this one last
        piece_w = np.array([[self.duration, self.v_window, self.a_window]])
        piece_d = np.stack([self.dp, self.dv, self.da])[None]
        self._fade: tuple[float, float, np.ndarray] | None = None  # (t0, T, pose): see fade_in
        if carried is not None:
            keep = carried._starts + carried._windows[:, 0] > self.t0
            self._set_pieces(np.append(carried._starts[keep], self.t0), np.concatenate([carried._windows[keep], piece_w]),
                             np.concatenate([carried._offsets[keep], piece_d]))
            if carried._fade is not None and carried._fade[0] + carried._fade[1] > self.t0:
                self._fade = carried._fade
        else:
            self._set_pieces(np.array([self.t0]), piece_w, piece_d)

    @classmethod
    def from_state(cls, base: Trajectory, t0: float, duration: float, p: np.ndarray, v: np.ndarray, a: np.ndarray,
                   v_window: float | None = None, a_window: float | None = None) -> "TransitionTrajectory":
        """The transition that starts exactly at the commanded state (p, v, a) at ``t0``.

        ``base`` may itself be a transition (the new plan with the offsets still decaying, see the
        class): the new piece is what is left between the commanded state and it.
        """
        pb, vb, ab = base.evaluate(t0)
        carried = base if isinstance(base, TransitionTrajectory) else None
        plan = carried.base if carried is not None else base
        return cls(plan, t0, duration, np.asarray(p) - pb, np.asarray(v) - vb, np.asarray(a) - ab, v_window, a_window, carried)

    @classmethod
    def fade_in(cls, base: Trajectory, t0: float, duration: float, p: np.ndarray, v: np.ndarray, a: np.ndarray,
                v_window: float | None = None, a_window: float | None = None) -> "TransitionTrajectory":
        """From (nearly) rest at ``p`` onto ``base``: ``s(u) base(t) + (1 - s(u)) p`` with the quintic
        smoothstep ``s`` over ``duration``, plus a decaying offset for whatever velocity and
        acceleration the command still has at ``t0`` (a stop just ending).

        The blend is taken against whichever plan is the base at the time (a chunk arriving during the
        fade-in re-targets it; ``from_state`` adds an offset for the step that makes): the command is
        a convex combination of the start pose and the plan, so it stays within any position limits
        both are within. An offset that decays while the plan moves does not: fading in over 1-3 s
        from a gripper's closed limit onto a plan that closes it from half open, the command ran
        through the plan's motion past the closed limit (the guard's position-limit hits; ``test_a_fade_in_stays_between_the_start_pose_and_the_plan``).
        """
        out = cls(base, t0, duration, np.zeros_like(np.asarray(p, dtype=np.float64)), v, a, v_window, a_window)
        out._fade = (float(t0), float(duration), np.array(p, dtype=np.float64))
        return out

    def carrying(self, plan: Trajectory, t0: float) -> Trajectory:
        """``plan`` with this transition's offsets that still decay after ``t0`` (``plan`` if none do)."""
        keep = self._starts + self._windows[:, 0] > t0
        if not keep.any() and not (self._fade is not None and self._fade[0] + self._fade[1] > t0):
            return plan
        out = TransitionTrajectory.__new__(TransitionTrajectory)
        out.__dict__.update(self.__dict__)
        out.base = plan
        out._set_pieces(self._starts[keep], self._windows[keep], self._offsets[keep])
        return out

    def _set_pieces(self, starts: np.ndarray, windows: np.ndarray, offsets: np.ndarray) -> None:
        self._starts, self._windows, self._offsets = starts, windows, offsets
        # T^(k - d) per (derivative d, piece, part k): the k-th basis is scaled by T^k, each d/dt is 1/T
        self._scales = windows[None, :, :] ** (np.arange(3)[None, None, :] - np.arange(3)[:, None, None])

    def carries(self, other: "TransitionTrajectory") -> bool:
        """Whether ``other``'s newest offset is still one of this transition's pieces (it was carried on)."""
        same = (self._starts == other.t0) & np.all(self._offsets == np.stack([other.dp, other.dv, other.da])[None], axis=(1, 2))
        return bool(np.any(same & (self._starts + self._windows[:, 0] > self.t0)))

    @property
    def pieces(self) -> int:
        return int(self._starts.shape[0])

    @property
    def t1(self) -> float:
        """When the last piece has decayed: from then on the trajectory is its base."""
        end = float(np.max(self._starts + self._windows[:, 0], initial=-np.inf))
        return end if self._fade is None else max(end, self._fade[0] + self._fade[1])

    @property
    def end_time(self) -> float:
        return max(self.base.end_time, self.t1)

    def evaluate(self, t: float):
        p, v, a = self.base.evaluate(t)
        if self._fade is not None and t < self._fade[0] + self._fade[1]:
            f0, T, pose = self._fade
            w, w1, w2 = smoothstep((t - f0) / T)
            d = p - pose
            p, v, a = pose + w * d, w * v + (w1 / T) * d, w * a + (2.0 * w1 / T) * v + (w2 / (T * T)) * d
        # every part of every piece at once: a basis is exactly zero (with its derivatives) from u = 1 on
        u = np.clip((t - self._starts)[:, None] / self._windows, 0.0, 1.0)  # (n, 3 parts)
        basis = np.einsum("nkp,kdp->dnk", u[:, :, None] ** _POWERS, _DECAY)  # (p/v/a, piece, part), in u = s / T
        off = (basis * self._scales).reshape(3, -1) @ self._offsets.reshape(-1, self._offsets.shape[-1])  # (3, dof)
        return p + off[0], v + off[1], a + off[2]

    def settled(self, t: float) -> Trajectory:
        """The equivalent trajectory from ``t`` on (the base, once every piece has decayed; decayed
        pieces are dropped at the next switch: the executor tells its transitions apart by identity)."""
        return self.base if t >= self.t1 else self


def offset_windows(dv: np.ndarray, a_max: np.ndarray, duration: float, a_window: float,
                   budget: float = 0.8) -> tuple[float, float]:
    """Windows for the velocity and acceleration parts of a transition's offset (see TransitionTrajectory).

    The velocity offset decays as fast as the acceleration budget allows (its quintic peaks at
    ``3.75 |dv| / T_v``), never faster than ``a_window``; the acceleration offset over ``a_window``.
    """
    dv = np.abs(np.asarray(dv, dtype=np.float64))
    a_room = budget * np.asarray(a_max, dtype=np.float64)
    t_v = float(np.max(2.0 * SMOOTHSTEP_PEAK_D1 * dv / a_room, initial=0.0))
    a_win = min(float(a_window), float(duration))
    return min(max(t_v, a_win), float(duration)), a_win


def stop_profile_duration(v0: np.ndarray, a0: np.ndarray, a_max: np.ndarray, min_duration: float = 1e-3) -> float:
    """Shortest common duration T for which the cubic-velocity stop keeps |a| <= a_max on every joint.

    A joint already accelerating harder than ``a_max`` (a limit clamp just happened) is allowed its
    current |a0| (the stop then never asks for more than the present), otherwise no T would do.
    """
    v0 = np.asarray(v0, dtype=np.float64)
    a0 = np.asarray(a0, dtype=np.float64)
    a_lim = np.maximum(np.asarray(a_max, dtype=np.float64), np.abs(a0)) * (1.0 + 1e-9)
    # a0 = 0 closed form (peak |a| = 1.5 |v0| / T) as the first candidate, then a geometric ladder.
    T0 = max(min_duration, float(np.max(1.5 * np.abs(v0) / a_lim)))
    u = np.linspace(0.0, 1.0, 25)[:, None]
    if np.all(np.abs(_stop_acc(v0, a0, T0, u * T0)) <= a_lim):
        return T0
    Ts = T0 * 1.1 ** np.arange(1, 48)
    tau = Ts[:, None, None] * u[None, :, :]  # (nT, nu, 1)
    acc = _stop_acc(v0[None, None, :], a0[None, None, :], Ts[:, None, None], tau)  # (nT, nu, dof)
    ok = np.all(np.abs(acc) <= a_lim, axis=(1, 2))
    return float(Ts[int(np.argmax(ok))]) if ok.any() else float(Ts[-1])


def _stop_coeffs(v0, a0, T):
    # v(tau) = v0 + a0 tau + c2 tau^2 + c3 tau^3 with v(T) = 0, v'(T) = 0.
    c2 = (-3.0 * v0 - 2.0 * a0 * T) / T**2
    c3 = (2.0 * v0 + a0 * T) / T**3
    return c2, c3


def _stop_acc(v0, a0, T, tau):
    c2, c3 = _stop_coeffs(v0, a0, T)
    return a0 + 2.0 * c2 * tau + 3.0 * c3 * tau**2


class StopTrajectory:
    """Come to rest from ``(p0, v0, a0)`` at ``t0`` within ``a_max``, then hold.

    Velocity follows the cubic with v(0)=v0, v'(0)=a0, v(T)=v'(T)=0, so acceleration is continuous
    at the start and at rest; all joints share T (the arms stop together, roughly along their path).
    """

    def __init__(self, t0: float, p0: np.ndarray, v0: np.ndarray, a0: np.ndarray, a_max: np.ndarray, min_duration: float = 1e-3):
        self.t0 = float(t0)
        self.p0 = np.array(p0, dtype=np.float64)
        self.v0 = np.array(v0, dtype=np.float64)
        self.a0 = np.array(a0, dtype=np.float64)
        self.duration = stop_profile_duration(self.v0, self.a0, a_max, min_duration)
        self._c2, self._c3 = _stop_coeffs(self.v0, self.a0, self.duration)
        T = self.duration
        self.final_position = self.p0 + self.v0 * T + self.a0 * T**2 / 2 + self._c2 * T**3 / 3 + self._c3 * T**4 / 4
        self._zero = np.zeros_like(self.p0)

    @property
    def end_time(self) -> float:
        return self.t0 + self.duration

    def evaluate(self, t: float):
        tau = t - self.t0
        if tau >= self.duration - 1e-12:
            return self.final_position.copy(), self._zero.copy(), self._zero.copy()
        tau = max(tau, 0.0)
        c2, c3 = self._c2, self._c3
        p = self.p0 + tau * (self.v0 + tau * (self.a0 / 2 + tau * (c2 / 3 + tau * c3 / 4)))
        v = self.v0 + tau * (self.a0 + tau * (c2 + tau * c3))
        a = self.a0 + tau * (2.0 * c2 + 3.0 * c3 * tau)
        return p, v, a


def blend_duration(
    dp: np.ndarray,
    dv: np.ndarray,
    v_now: np.ndarray,
    a_now: np.ndarray,
    v_max: np.ndarray,
    a_max: np.ndarray,
    t_min: float,
    t_max: float,
    budget: float = 0.8,
) -> float:
    """Transition window long enough for the offset ``dp`` (and velocity offset ``dv``) to fit the limits.

    The blend adds at most ``1.875 |dp| / T + |dv|`` to the velocity and
    ``5.77 |dp| / T^2 + 3.75 |dv| / T`` to the acceleration; ``budget`` is the fraction of each limit
    the blend may use on top of the motion already there. Clamped to ``[t_min, t_max]`` (the
    per-tick safety guard catches whatever a capped window cannot absorb).
    """
    dp = np.abs(np.asarray(dp, dtype=np.float64))
    dv = np.abs(np.asarray(dv, dtype=np.float64))
    v_room = np.maximum(budget * np.asarray(v_max) - np.abs(v_now) - dv, 0.05 * np.asarray(v_max))
    a_room = np.maximum(budget * np.asarray(a_max) - np.abs(a_now), 0.05 * np.asarray(a_max))
    t_v = SMOOTHSTEP_PEAK_D1 * dp / v_room
    # a_room T^2 - 3.75 dv T - 5.77 dp >= 0  ->  T >= positive root
    b = 2.0 * SMOOTHSTEP_PEAK_D1 * dv
    c = SMOOTHSTEP_PEAK_D2 * dp
    t_a = (b + np.sqrt(b * b + 4.0 * a_room * c)) / (2.0 * a_room)
    T = max(float(t_min), float(np.max(t_v, initial=0.0)), float(np.max(t_a, initial=0.0)))
    return min(T, float(t_max))


def sample(traj: Trajectory, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate ``traj`` at each of ``times``: three (N, dof) arrays."""
    out = [traj.evaluate(float(t)) for t in times]
    return tuple(np.stack(x) for x in zip(*out))  # type: ignore[return-value]
