"""The simulated dual-arm robot: physics, servos, tasks and resets, without ROS and without rendering.

:class:`AlohaSim` owns a MuJoCo model and data. Its joint vector is the sim's 14-dim vector (see
:mod:`motus_core.sim.model`); position targets come from a
:class:`~motus_core.sim.trajectory.JointTrajectoryFollower` that is sampled at every physics step,
so trajectories are followed at the physics rate (500 Hz) like a ros2_control controller would.

Sim time (``data.time``) never goes backwards: a reset restores the scene but keeps the clock
running, so ``/clock`` and every stamp stay monotonic across episodes; ``episode_time`` restarts at 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from .disturbance import DisturbanceConfig, TrackingDisturbance
from .model import ARM_INDICES, JointLayout, build_model
from .tasks import TaskTracker, get_task
from .trajectory import JointTrajectoryFollower, TrajectoryGoal

# ACT's start pose of the ViperX arms (joints in rad, grippers normalised).
DEFAULT_HOME = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.0, 0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.0)


class SimulationError(RuntimeError):
    """The physics diverged (non-finite state); the caller should reset."""


@dataclass(frozen=True)
class ObjectPose:
    position: np.ndarray  # (3,) m, world frame
    quaternion: np.ndarray  # (4,) w, x, y, z


class AlohaSim:
    """Physics of the bimanual ViperX scene with a task (see module doc)."""

    def __init__(self, task: str = "transfer_cube", *, seed: int = 0, timestep: float = 0.002, render_mesh_cell: float = 0.002,
                 success_hold: float = 0.5, home: np.ndarray | None = None, offscreen_size: tuple[int, int] = (640, 480),
                 speed_limit: np.ndarray | float | None = None, disturbance: DisturbanceConfig | None = None,
                 placement_margin: float = 0.0):
        self._build_kwargs = dict(timestep=timestep, render_mesh_cell=render_mesh_cell, offscreen_size=offscreen_size)
        self.success_hold = success_hold
        self.home = np.array(DEFAULT_HOME if home is None else home, dtype=float)
        if self.home.shape != (14,):
            raise ValueError(f"home must have 14 values, got {self.home.shape}")
        self.model_generation = 0  # bumps when the model is rebuilt (renderers must be recreated)
        self.episode = 0
        self.seed = 0
        self.episode_start = 0.0
        self._build(task)
        self.follower = JointTrajectoryFollower(self.home)
        self._targets_fresh = False
        self.set_speed_limit(speed_limit)
        self._disturbance_cfg: DisturbanceConfig | None = None
        self._push: TrackingDisturbance | None = None
        self.set_disturbance(disturbance)
        self.placement_margin = float(placement_margin)  # m the objects' placement boxes are widened by
        self.speed_limited_steps = 0  # physics steps in which some arm joint was slowed to its limit
        self.reset(seed=seed)  # episode 1

    # -- construction -------------------------------------------------------------------------
    def _build(self, task: str) -> None:
        self.task = get_task(task)
        self.model = build_model(task, **self._build_kwargs)
        self.data = mujoco.MjData(self.model)
        self.layout = JointLayout.of(self.model)
        self.tracker = TaskTracker(self.task, self.model, success_hold=self.success_hold)
        self._object_qpos = {}
        for obj in self.task.objects:
            jid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, obj.joint)
            self._object_qpos[obj.name] = int(self.model.jnt_qposadr[jid])
        self.model_generation += 1

    @property
    def dt(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def episode_time(self) -> float:
        return self.time - self.episode_start

    # -- episodes -----------------------------------------------------------------------------
    def reset(self, seed: int, task: str | None = None, home: np.ndarray | None = None,
              object_poses: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, ObjectPose]:
        """New episode: arms at ``home`` (default: the sim's), objects drawn from ``seed`` (or given)."""
        now = self.time
        if task is not None and task != self.task.name:
            self._build(task)
        if home is not None:
            self.home = np.array(home, dtype=float)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.time = now  # the clock keeps running across episodes
        self.layout.set_positions(d, self.home)
        poses = object_poses if object_poses is not None else self.task.sample_poses(np.random.default_rng(seed), self.placement_margin)
        for name, (pos, quat) in poses.items():
            adr = self._object_qpos[name]
            d.qpos[adr:adr + 3] = pos
            d.qpos[adr + 3:adr + 7] = quat
        self.layout.set_targets(d, self.home)
        mujoco.mj_forward(m, d)
        self.follower.reset(self.layout.targets(d), now)
        self.tracker.reset()
        self._push = TrackingDisturbance(self._disturbance_cfg, seed) if self._disturbance_cfg is not None else None
        self.seed = int(seed)
        self.episode += 1
        self.episode_start = now
        return self.object_poses()

    def set_speed_limit(self, limit: np.ndarray | float | None) -> None:
        """Saturate each arm joint's speed (rad/s; a scalar or the 14-dim sim vector, grippers ignored;
        None: no limit), as the real servo does at its no-load speed.

        Why: gym-aloha's servos are pure P controllers (no damping) with large dry friction. Such a
        servo tracking a ramp sticks, breaks free and overshoots: measured speeds reach ~1.9 x the
        commanded speed (a 3 rad/s command gave 5.6 rad/s at the waist, see docs/sim.md), and
        contacts can throw the light wrist joints far faster. The ViperX's Dynamixels cannot turn
        faster than their no-load speed (~3.1 rad/s for the XM540), which is where the profile's
        velocity limits come from; the sim enforces the same bound on the measured motion."""
        if limit is None:
            self._speed_limit = None
            return
        v = np.broadcast_to(np.asarray(limit, dtype=float), (14,)) if np.ndim(limit) else np.full(14, float(limit))
        arm = v[list(ARM_INDICES)]
        if not np.all(np.isfinite(arm)) or np.any(arm <= 0):
            raise ValueError(f"speed limits must be positive and finite, got {arm}")
        self._speed_limit = arm.copy()

    def set_disturbance(self, cfg: DisturbanceConfig | None) -> None:
        """Push the follower arms off their setpoints from the next reset on (recovery demonstrations,
        see :mod:`.disturbance`); None or amplitude 0: off."""
        if cfg is not None:
            cfg.validate()
        self._disturbance_cfg = cfg if cfg is not None and cfg.active else None
        if self._disturbance_cfg is None:
            self._push = None

    # -- commands -----------------------------------------------------------------------------
    def command_positions(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Direct position targets (sim units) for some joints; cancels trajectories (see trajectory.py)."""
        self.follower.set_positions(indices, values, self.time)
        self._targets_fresh = True

    def command_trajectory(self, goal: TrajectoryGoal, start_now: bool = False) -> int:
        """Follow ``goal`` (JTC semantics, see trajectory.py); ``start_now`` replaces its start by the
        current sim time (a zero header stamp). Returns the number of points skipped as already past;
        raises CommandRejected when every point is in the past."""
        if start_now:
            goal.start = self.time
        skipped = self.follower.submit(goal, self.time)
        self._targets_fresh = True
        return skipped

    def cancel_motion(self) -> None:
        """Stop any trajectory; the joints hold their current setpoints (an empty trajectory)."""
        self.follower.cancel(self.time)
        self._targets_fresh = True

    def set_targets(self, q: np.ndarray) -> None:
        """All 14 targets at once (the scripted demonstrator's and tests' shortcut)."""
        self.command_positions(np.arange(14), np.asarray(q, float))

    # -- stepping -----------------------------------------------------------------------------
    def step(self, n: int = 1) -> None:
        """Advance ``n`` physics steps, sampling the follower's setpoint before each."""
        m, d, follower, layout = self.model, self.data, self.follower, self.layout
        push = self._push
        for _ in range(n):
            if push is not None and push.over(d.time - self.episode_start):
                # done for this episode: back to sampling the setpoint only when it changes
                self._push = push = None
                self._targets_fresh = True
            active = follower.active(d.time)
            if active or self._targets_fresh or push is not None:
                pos, _ = follower.sample(d.time)
                if push is not None:
                    pos = pos + push.offset(d.time - self.episode_start)
                layout.set_targets(d, pos)
                self._targets_fresh = active  # sample once more after a trajectory ends: its last point
            mujoco.mj_step(m, d)
            if self._speed_limit is not None:
                v = d.qvel[layout.arm_dof]
                if np.any(np.abs(v) > self._speed_limit):
                    clipped = np.clip(v, -self._speed_limit, self._speed_limit)
                    # the step already moved the joints with the excess speed: take that back too, so
                    # positions sampled at any rate also move no faster than the limit (hinges: qpos = angle)
                    d.qpos[layout.arm_qpos] -= m.opt.timestep * (v - clipped)
                    d.qvel[layout.arm_dof] = clipped
                    self.speed_limited_steps += 1
        if not np.isfinite(d.qpos).all():
            raise SimulationError(f"the physics diverged at t={d.time:.3f} s")

    def step_until(self, t: float) -> int:
        """Step until sim time reaches ``t`` (within half a step); returns the number of steps."""
        n = int(round((t - self.time) / self.dt))
        if n > 0:
            self.step(n)
        return max(n, 0)

    def update_task(self) -> int:
        """Evaluate the task's stage on the current contacts (and latch success); returns the stage."""
        return self.tracker.update(self.data)

    # -- state --------------------------------------------------------------------------------
    def positions(self) -> np.ndarray:
        return self.layout.positions(self.data)

    def velocities(self) -> np.ndarray:
        return self.layout.velocities(self.data)

    def efforts(self) -> np.ndarray:
        return self.layout.efforts(self.data)

    def targets(self) -> np.ndarray:
        return self.layout.targets(self.data)

    def object_poses(self) -> dict[str, ObjectPose]:
        out = {}
        for name, adr in self._object_qpos.items():
            q = self.data.qpos
            out[name] = ObjectPose(q[adr:adr + 3].copy(), q[adr + 3:adr + 7].copy())
        return out

    @property
    def success(self) -> bool:
        return self.tracker.success
