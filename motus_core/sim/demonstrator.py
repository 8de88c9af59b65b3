"""Scripted demonstrations in joint space: task waypoints in the world frame + closed-loop IK.

The demonstrator plays the teleoperator. Every control tick it receives what a teleoperator sees
(the follower arms' measured joints and the objects' poses) and returns the 14 joint targets a pair
of leader arms would send (sim units: rad + normalised gripper). The targets go to the robot
exactly as a policy's actions do, so recorded demonstrations match what replay and policies see.

How a target is made:

1. Each arm follows a list of waypoints in the world frame: a TCP position, a TCP orientation and a
   gripper opening at an episode time. Waypoints may depend on the *current* object poses (the left
   gripper goes to where the cube actually is in the right gripper, the peg is aligned with where
   the socket actually is), so the plan closes the loop on the scene, not only on the arms.
2. Between waypoints the TCP moves on a minimum-jerk profile (position interpolated, orientation
   slerped); each segment starts from where the previous one ended.
3. Damped-least-squares IK (:meth:`Kinematics.solve_ik`, MuJoCo Jacobians) turns the TCP pose into
   arm joints (warm-started from the previous tick; a weak pull of the roll joints keeps it off the
   wrist singularity's flipped branch). Grasp orientations are "natural" ones (see
   :func:`natural_rot`): reachable with the roll joints at 0.
4. An integral term adds the servos' steady tracking error back onto the command (the ViperX wrist
   servos of this model are weak: kp 10-50 against friction losses of 30 N m and gravity), which is
   what a human at the leader arm does without thinking. Only errors below ``integral_band`` count:
   larger ones are motion in progress or a late command stream, and would wind it up.
5. The command's joint speed and acceleration are limited (``max_speed``, ``max_accel``, by the
   executor's per-tick guard, which cannot overshoot): a leader arm in a hand cannot jump, a starved
   control loop must not make the follower lunge when it catches up, and the demonstrations stay
   within what the robot profiles allow (a replayed or learned chunk is then feasible as it is).

Why not ACT's replay of an end-effector (mocap) rollout: the weak wrist servos lag the replayed
joints by up to 0.06 rad, the left gripper bumps the cube out of the right one during the handover,
and the cube is still held at the end in 0/10 episodes. Here the handover is orthogonal (the left
fingers close on the cube's top and bottom faces while the right fingers hold its sides) and the
left gripper targets the measured cube pose, the last 5 cm slowly. docs/sim.md has the measured
success rates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from motus_core.runtime.safety import CommandGuard, JointLimits

from .kinematics import Kinematics
from .simulator import ObjectPose

Vec = np.ndarray
Pose = tuple[Vec, Vec]  # (position (3,), rotation (3, 3)) of a TCP in the world frame
PoseFn = Callable[["DemoObservation", Pose], Pose]  # (obs, pose where the previous segment ended) -> pose


@dataclass
class DemoObservation:
    """What the demonstrator sees at one tick."""

    t: float  # episode time (s)
    q: np.ndarray  # (14,) measured joints, sim units
    objects: Mapping[str, ObjectPose]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def frame(x_axis, y_hint) -> np.ndarray:
    """Rotation whose x axis is ``x_axis`` and whose y axis is ``y_hint`` made orthogonal to it."""
    x = _unit(x_axis)
    y = np.asarray(y_hint, float) - np.dot(y_hint, x) * x
    y = _unit(y)
    return np.column_stack([x, y, np.cross(x, y)])


def _min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return min(max(s * s * s * (10.0 - 15.0 * s + 6.0 * s * s), 0.0), 1.0)  # rounding can leave [0, 1]


@dataclass
class Waypoint:
    """Reach ``pose`` and gripper opening ``grip`` at episode time ``t``.

    ``pose``: None = stay where the previous segment ended; a (position, rotation) tuple; or a
    function (obs, previous end pose) -> pose, evaluated at every tick of its segment (so it can
    follow the objects) and frozen when the segment ends.
    """

    t: float
    pose: Pose | PoseFn | None
    grip: float
    roll_ref: tuple[float, float] = (0.0, 0.0)  # IK preference for (forearm_roll, wrist_rotate)

    def resolve(self, obs: DemoObservation, prev: Pose) -> Pose:
        if self.pose is None:
            return prev
        return self.pose(obs, prev) if callable(self.pose) else self.pose


def offset(dx: float = 0.0, dy: float = 0.0, dz: float = 0.0, rot: Vec | None = None) -> PoseFn:
    """Pose function: the previous end pose moved by (dx, dy, dz) in the world (optionally re-oriented)."""
    d = np.array([dx, dy, dz])
    return lambda obs, prev: (prev[0] + d, prev[1] if rot is None else rot)


@dataclass
class ArmScript:
    """Minimum-jerk interpolation through an arm's waypoints (see module doc)."""

    waypoints: list[Waypoint]
    _seg: int = -1
    _start: tuple[Vec, Vec, float] | None = None
    _last: tuple[Vec, Vec, float] | None = None
    _t0: float = 0.0

    def ik_options(self, t: float) -> Waypoint:
        """The waypoint whose segment is running at ``t`` (it carries the IK options)."""
        for wp in self.waypoints:
            if wp.t > t:
                return wp
        return self.waypoints[-1]

    def sample(self, obs: DemoObservation) -> tuple[Vec, Vec, float]:
        wps = self.waypoints
        i = 0
        while i < len(wps) and wps[i].t <= obs.t:
            i += 1
        if i != self._seg:  # a new segment starts where the previous one ended (frozen)
            self._seg = i
            self._start = self._last
        p0, r0, g0 = self._start
        if i >= len(wps):  # the script is over: hold
            return self._start
        target_pos, target_rot = wps[i].resolve(obs, (p0, r0))
        t0 = wps[i - 1].t if i > 0 else self._t0
        s = _min_jerk((obs.t - t0) / max(wps[i].t - t0, 1e-6))
        pos = (1 - s) * p0 + s * target_pos
        rots = Rotation.from_matrix(np.stack([r0, target_rot]))
        rot = Slerp([0.0, 1.0], rots)(s).as_matrix()
        grip = (1 - s) * g0 + s * wps[i].grip
        self._last = (pos, rot, grip)
        return self._last

    def start_from(self, pos: Vec, rot: Vec, grip: float, t0: float = 0.0) -> None:
        self._seg = -1
        self._t0 = t0
        self._last = (np.asarray(pos, float), np.asarray(rot, float), float(grip))
        self._start = self._last


# -- task plans -------------------------------------------------------------------------------------

FINGER_REACH = 0.036  # m the fingertips extend beyond the TCP along the approach axis
TIP_CLEARANCE = 0.004  # m between the fingertips and the table when grasping
ARM_BASES = {"left": np.array([-0.469, 0.5]), "right": np.array([0.469, 0.5])}  # waist axes (x, y)


def natural_rot(side: str, position: Vec, pitch_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """TCP orientation the arm reaches with its roll joints at 0 (plus ``roll_deg`` about the approach).

    The ViperX is planar apart from its waist and roll joints: with forearm_roll = wrist_rotate = 0
    the approach axis lies in the vertical plane through the waist axis and the TCP, pitched
    ``pitch_deg`` below horizontal, and the fingers close horizontally across that plane. Targets
    in this family are reachable without wrist gymnastics (and far from the wrist singularity).
    """
    d = np.asarray(position[:2], float) - ARM_BASES[side]
    psi = np.arctan2(d[1], d[0])
    a = np.radians(pitch_deg)
    approach = np.array([np.cos(a) * np.cos(psi), np.cos(a) * np.sin(psi), -np.sin(a)])
    fingers = np.array([-np.sin(psi), np.cos(psi), 0.0])
    rot = np.column_stack([approach, fingers, np.cross(approach, fingers)])
    if roll_deg:
        rot = rot @ Rotation.from_euler("x", roll_deg, degrees=True).as_matrix()
    return rot


def _pick(side: str, obj: str, pitch_deg: float, along_x: float = 0.0, back: float = 0.0) -> PoseFn:
    """TCP pose grasping ``obj`` (``along_x`` m from its centre) with the fingertips just above the
    table; ``back`` > 0 stays that far behind along the approach axis (the pre-grasp pose)."""
    z = TIP_CLEARANCE + FINGER_REACH * np.sin(np.radians(pitch_deg))

    def pose(obs, prev):
        p = obs.objects[obj].position
        grasp = np.array([p[0] + along_x, p[1], z])
        rot = natural_rot(side, grasp, pitch_deg)
        return grasp - back * rot[:, 0], rot
    return pose


def transfer_cube_scripts(obs0: DemoObservation, kin: Kinematics) -> dict[str, ArmScript]:
    """Right arm picks the cube and lifts it to the meeting point; the left arm takes it over.

    The handover is orthogonal: the right fingers hold the cube's sides (closing along y), the left
    fingers close on its top and bottom faces (wrist rotated 90 deg), so the grippers never collide.

    The handover leaves no wait that a camera cannot see: the left gripper closes in 0.3 s and the right
    one opens right after, in 0.2 s. Once a gripper's fingers rest on the cube, the rest of its command
    ramp changes nothing a policy observes (measured joints, images), so a wait there is a phase the
    policy cannot tell apart: with the former 0.6 s close, 0.2 s wait and 0.6 s release (25 frames
    unobservable), the sixth proof run's model predicted the release (command past 0.5) 13-17 actions
    ahead at every frame of it; of the 16 actions RTC executes per chunk, at most the start of the ramp
    ran, never past the cube's width where the fingers move, and it held the cube with both grippers
    until the time limit (docs/proof.md).
    """
    meet = np.array([0.0, 0.5, 0.25])
    pitch = 50.0
    right_meet = natural_rot("right", meet, 0.0)
    left_meet = natural_rot("left", meet, 0.0, roll_deg=90.0)
    left_roll = (0.0, np.pi / 2)

    def cube_for_left(dx: float) -> PoseFn:
        return lambda obs, prev: (obs.objects["box"].position + np.array([dx, 0.0, 0.0]), left_meet)

    right = ArmScript([
        Waypoint(1.4, _pick("right", "box", pitch, back=0.08), 1.0),
        Waypoint(2.2, _pick("right", "box", pitch), 1.0),
        Waypoint(2.8, None, 0.0),  # close
        Waypoint(3.6, offset(dz=0.10), 0.0),  # lift
        Waypoint(4.6, (meet, right_meet), 0.0),
        Waypoint(6.3, None, 0.0),  # hold while the left arm comes and closes
        Waypoint(6.5, None, 1.0),  # release as soon as the left gripper is shut (see below)
        Waypoint(7.3, offset(dx=0.12), 1.0),  # move away
    ])
    left = ArmScript([
        Waypoint(3.0, (meet + np.array([-0.16, 0.0, 0.0]), left_meet), 1.0, left_roll),
        Waypoint(4.6, None, 1.0, left_roll),
        Waypoint(5.4, cube_for_left(-0.06), 1.0, left_roll),  # close to the cube where it actually is
        Waypoint(6.0, cube_for_left(-0.005), 1.0, left_roll),  # the last centimetres slowly
        Waypoint(6.3, None, 0.0, left_roll),  # close
        Waypoint(7.0, None, 0.0, left_roll),  # hold while the right gripper opens
        Waypoint(7.8, offset(dx=-0.06), 0.0, left_roll),  # move away with the cube
    ])
    return {"left": left, "right": right}


def insertion_scripts(obs0: DemoObservation, kin: Kinematics) -> dict[str, ArmScript]:
    """Left arm picks the socket, right arm the peg (top-down: they are low); both lift, the socket
    is held still in front of the left arm and the peg is aligned with the socket's measured axis,
    then pushed in until it touches the pin."""
    pitch = 88.0
    peg_offset, socket_offset = 0.015, 0.03  # grasp this far from the object's centre, on the arm's side
    socket_meet = np.array([-0.06, 0.5, 0.22])
    hold = _HandHold(kin, freeze_at=4.0)

    def left_meet(obs, prev):
        rot = natural_rot("left", socket_meet, pitch)
        return hold.tcp_for("left", "socket", socket_meet, rot, obs), rot

    right = ArmScript([
        Waypoint(1.4, _pick("right", "peg", pitch, along_x=peg_offset, back=0.06), 1.0),
        Waypoint(2.2, _pick("right", "peg", pitch, along_x=peg_offset), 1.0),
        Waypoint(2.8, None, 0.0),
        Waypoint(3.6, offset(dz=0.12), 0.0),
        Waypoint(5.0, lambda obs, prev: hold.peg_target(obs, gap=0.05), 0.0),
        Waypoint(6.0, lambda obs, prev: hold.peg_target(obs, gap=0.05), 0.0),
        Waypoint(7.6, lambda obs, prev: hold.peg_target(obs, gap=-0.004), 0.0),
        Waypoint(9.0, lambda obs, prev: hold.peg_target(obs, gap=-0.004), 0.0),
    ])
    left = ArmScript([
        Waypoint(1.4, _pick("left", "socket", pitch, along_x=-socket_offset, back=0.06), 1.0),
        Waypoint(2.2, _pick("left", "socket", pitch, along_x=-socket_offset), 1.0),
        Waypoint(2.8, None, 0.0),
        Waypoint(3.6, offset(dz=0.12), 0.0),
        Waypoint(5.0, left_meet, 0.0),
        Waypoint(9.0, None, 0.0),
    ])
    return {"left": left, "right": right}


@dataclass
class _HandHold:
    """Object-in-hand transforms measured from the scene: where a held object is relative to the TCP.

    Orientations and positions across the object's long axis are measured live. The position
    *along* that axis is measured live until ``freeze_at`` (episode time), then kept: once the peg
    touches the socket, contact forces make the objects slide in the fingers along their axes, and
    re-measuring would turn each slide into a deeper push (a positive feedback that ends with the
    peg pushed out of the gripper)."""

    kin: Kinematics
    freeze_at: float = float("inf")
    _frozen: dict = field(default_factory=dict)  # (side, object) -> position along the axis

    def _in_hand(self, side: str, obj: str, obs: DemoObservation) -> tuple[Vec, Vec]:
        self.kin.set(obs.q)
        p_tcp, r_tcp = self.kin.pose(side, "tcp")
        o = obs.objects[obj]
        r_rel = r_tcp.T @ Rotation.from_quat(o.quaternion, scalar_first=True).as_matrix()
        p_rel = r_tcp.T @ (o.position - p_tcp)
        axis = r_rel[:, 0]  # the object's long axis in the TCP frame
        key = (side, obj)
        if obs.t < self.freeze_at or key not in self._frozen:
            self._frozen[key] = float(axis @ p_rel)
        return p_rel + (self._frozen[key] - axis @ p_rel) * axis, r_rel

    def tcp_for(self, side: str, obj: str, obj_target: Vec, rot: Vec, obs: DemoObservation) -> Vec:
        """TCP position that puts the centre of ``obj`` (held by ``side``) at ``obj_target`` when the
        TCP has orientation ``rot``."""
        p_rel, _ = self._in_hand(side, obj, obs)
        return obj_target - rot @ p_rel

    def peg_target(self, obs: DemoObservation, gap: float) -> Pose:
        """Right TCP pose putting the peg on the socket's axis, its tip ``gap`` m outside the pin's end.

        The returned rotation is the current TCP rotation turned by the smallest rotation that makes
        the peg's axis (as held) point along the socket's axis."""
        sock = obs.objects["socket"]
        r_sock = Rotation.from_quat(sock.quaternion, scalar_first=True).as_matrix()
        # pin end at +0.04 on the socket's x axis; the peg's half length is 0.06
        peg_centre = sock.position + r_sock @ np.array([0.04 + 0.06 + gap, 0.0, 0.0])
        p_rel, r_rel = self._in_hand("right", "peg", obs)
        self.kin.set(obs.q)
        _, r_tcp = self.kin.pose("right", "tcp")
        peg_axis_world = r_tcp @ r_rel[:, 0]
        turn = _rotation_between(peg_axis_world, r_sock[:, 0])
        r_new = turn @ r_tcp
        return peg_centre - r_new @ p_rel, r_new


def _rotation_between(a: Vec, b: Vec) -> np.ndarray:
    """Smallest rotation turning direction ``a`` onto direction ``b``."""
    a, b = _unit(a), _unit(b)
    v = np.cross(a, b)
    s, c = np.linalg.norm(v), float(np.dot(a, b))
    if s < 1e-9:
        return np.eye(3) if c > 0 else Rotation.from_rotvec(np.pi * _unit(np.cross(a, [1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.cross(a, [0.0, 1.0, 0.0]))).as_matrix()
    return Rotation.from_rotvec(v / s * np.arctan2(s, c)).as_matrix()


TASK_SCRIPTS: dict[str, Callable[[DemoObservation, Kinematics], dict[str, ArmScript]]] = {
    "transfer_cube": transfer_cube_scripts,
    "insertion": insertion_scripts,
}


@dataclass
class ScriptedDemonstrator:
    """Closed-loop scripted teleoperator for a task (see module doc)."""

    task: str
    kin: Kinematics = field(default_factory=Kinematics)
    integral_gain: float = 4.0  # 1/s: how fast the steady servo error is added back onto the command
    integral_limit: float = 0.15  # rad
    integral_band: float = 0.05  # rad: errors larger than this are motion, not steady error
    max_speed: float = 2.0  # rad/s: the commands' largest joint speed (a leader arm in a hand cannot jump)
    # rad/s^2: nor swing faster than a hand turns it. Near the wrist singularity the IK turns forearm_roll
    # and wrist_rotate in opposite directions within a few ticks (70 rad/s^2 measured); a robot within its
    # limits (12 rad/s^2 in the profiles) cannot follow that, and a policy should not learn it.
    max_accel: float = 8.0
    _scripts: dict[str, ArmScript] = field(default_factory=dict, repr=False)
    _bias: np.ndarray = field(default_factory=lambda: np.zeros(14), repr=False)
    _last_ik: np.ndarray | None = field(default=None, repr=False)
    _last_ik_cmd: np.ndarray | None = field(default=None, repr=False)
    _limiter: CommandGuard | None = field(default=None, repr=False)
    _last_t: float = 0.0

    def __post_init__(self) -> None:
        if self.task not in TASK_SCRIPTS:
            raise ValueError(f"no scripted demonstration for task {self.task!r}; tasks: {sorted(TASK_SCRIPTS)}")

    @property
    def duration(self) -> float:
        """Episode time after which the script holds its last pose."""
        return max(s.waypoints[-1].t for s in self._scripts.values()) if self._scripts else 0.0

    def reset(self, obs: DemoObservation) -> None:
        self._scripts = TASK_SCRIPTS[self.task](obs, self.kin)
        self.kin.set(obs.q)
        for k, side in enumerate(("left", "right")):
            p, r = self.kin.pose(side, "tcp")
            self._scripts[side].start_from(p, r, obs.q[7 * k + 6], obs.t)
        self._bias[:] = 0.0
        self._last_ik = None
        self._last_ik_cmd = None
        self._last_t = obs.t
        # The limiter starts from the measured pose: the first IK solution can differ from the home pose in
        # the redundant wrist joints (0.6 rad seen in wrist_rotate), and a leader arm in a hand cannot jump
        # there in one tick (recorded actions would start with a step).
        if self._limiter is None:
            self._limiter = self._make_limiter()
        self._limiter.reset(obs.t, np.asarray(obs.q, float))

    def _make_limiter(self) -> CommandGuard:
        """The executor's per-tick guard (braking curve: it cannot overshoot) with the leader's limits;
        the grippers only by their range."""
        lay = self.kin.layout
        arm = np.ones(14, bool)
        arm[[6, 13]] = False
        names = tuple(f"joint{i}" for i in range(14))
        limits = JointLimits(names, lay.lower.copy(), lay.upper.copy(), np.where(arm, self.max_speed, 1e3),
                             np.where(arm, self.max_accel, 1e6), np.full(14, np.inf), 1.0 / 30.0, {n: "demonstrator" for n in names})
        return CommandGuard(limits, slack=1.0)

    def act(self, obs: DemoObservation) -> np.ndarray:
        """Joint targets (14, sim units) for this tick."""
        if not self._scripts:
            self.reset(obs)
        q_meas = np.asarray(obs.q, float)
        dt = max(obs.t - self._last_t, 0.0)
        self._last_t = obs.t
        if self._last_ik is not None:
            # integral of the servos' steady tracking error of the pure IK targets (grippers excluded).
            # Only small errors count: a large one is the servo still moving (or a command stream that
            # lags), and integrating it would wind the bias up into an overshoot.
            err = self._last_ik - q_meas
            err[np.abs(err) > self.integral_band] = 0.0
            self._bias += self.integral_gain * dt * err
            np.clip(self._bias, -self.integral_limit, self.integral_limit, out=self._bias)
            self._bias[[6, 13]] = 0.0
        # IK warm start: the previous tick's solution (targets move little between ticks); the
        # measured joints start the first tick. The solution does not depend on it, only the cost.
        q = q_meas.copy() if self._last_ik is None else self._last_ik.copy()
        for k, side in enumerate(("left", "right")):
            script = self._scripts[side]
            pos, rot, grip = script.sample(obs)
            q = self.kin.solve_ik(q, side, pos, rot, roll_ref=script.ik_options(obs.t).roll_ref)
            q[7 * k + 6] = grip
        self._last_ik = q
        cmd = q + self._bias
        # speed and acceleration limits of the arm joints, towards the IK command moving at its own speed
        v_cmd = np.zeros(14) if self._last_ik_cmd is None or dt <= 0 else (cmd - self._last_ik_cmd) / dt
        self._last_ik_cmd = cmd
        cmd, _, _, _ = self._limiter.apply(obs.t, cmd, v_cmd, np.zeros(14))
        return cmd


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool
    max_stage: int
    duration: float  # sim seconds
    success_time: float  # episode time success was reached (-1: never)


def run_episode(sim, demo: ScriptedDemonstrator, seed: int, control_rate: float = 30.0, settle: float = 1.0,
                on_tick: Callable[[DemoObservation, np.ndarray], None] | None = None) -> EpisodeResult:
    """One scripted episode on an :class:`~motus_core.sim.simulator.AlohaSim`, without ROS.

    Resets ``sim`` with ``seed``, then at ``control_rate`` observes, asks ``demo`` for targets and
    holds them (zero-order hold, as a leader arm stream does) until the script ends plus ``settle`` s.
    """
    sim.reset(seed=seed, task=demo.task)
    obs = DemoObservation(0.0, sim.positions(), sim.object_poses())
    demo.reset(obs)
    period = 1.0 / control_rate
    steps = max(1, int(round(period / sim.dt)))
    state_every = max(1, int(round(0.01 / sim.dt)))  # evaluate the task at 100 Hz
    end = demo.duration + settle
    while sim.episode_time < end and not (sim.success and sim.episode_time > demo.duration):
        obs = DemoObservation(sim.episode_time, sim.positions(), sim.object_poses())
        cmd = demo.act(obs)
        if on_tick is not None:
            on_tick(obs, cmd)
        sim.set_targets(cmd)
        done = 0
        while done < steps:
            n = min(state_every, steps - done)
            sim.step(n)
            done += n
            sim.update_task()
    t = sim.tracker
    return EpisodeResult(demo.task, seed, t.success, t.max_stage, sim.episode_time,
                         (t.success_time - sim.episode_start) if t.success else -1.0)
