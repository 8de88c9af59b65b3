"""Simulated tasks: objects, seeded random placement, progress stages and success.

Success is contact-based, as in ACT's simulated tasks, but must be *held*: the final stage has to
hold for ``success_hold`` seconds of sim time (a brief touch while the object tumbles does not
count). Contacts flicker when a position servo presses one body against another, so interruptions
shorter than ``success_grace`` (0.1 s) do not restart the count. Once reached, the episode stays
successful until the next reset.

transfer_cube (instruction "transfer the cube to the other arm")
  stage 1  the right gripper's fingers touch the cube
  stage 2  ... and the cube is off the table (lifted)
  stage 3  the left gripper's fingers touch the cube
  stage 4  the left fingers touch the cube, the right fingers and the table do not (handed over,
           held in the air by the left arm alone)  -> success

insertion (instruction "insert the peg into the socket")
  stage 1  the left fingers touch the socket and the right fingers touch the peg
  stage 2  ... and neither object touches the table
  stage 3  the peg touches the socket while neither touches the table
  stage 4  the peg touches the pin at the bottom of the socket, neither object touches the table
           -> success

Object poses are drawn from the task's ranges (those of gym-aloha / ACT) with ``numpy``'s
``default_rng(seed)``: the same seed gives the same scene (gym-aloha's own end-effector sampler
ignores its seed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import mujoco
import numpy as np

LEFT_FINGERS = ("vx300s_left/10_left_gripper_finger", "vx300s_left/10_right_gripper_finger")
RIGHT_FINGERS = ("vx300s_right/10_left_gripper_finger", "vx300s_right/10_right_gripper_finger")
SOCKET_WALLS = ("socket-1", "socket-2", "socket-3", "socket-4")


@dataclass(frozen=True)
class ObjectSpec:
    """A free-floating object of a task and the box its centre is drawn from."""

    name: str  # body name (also the name used in topics: ~/objects/<name>/pose)
    joint: str  # its free joint
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    z: float


@dataclass
class ContactSet:
    """Which geom pairs touch, queried by geom *groups* (tuples of names)."""

    pairs: set[tuple[int, int]]
    ids: dict[str, int]

    def touch(self, a: tuple[str, ...] | str, b: tuple[str, ...] | str) -> bool:
        a = (a,) if isinstance(a, str) else a
        b = (b,) if isinstance(b, str) else b
        for x in a:
            ia = self.ids[x]
            for y in b:
                ib = self.ids[y]
                if (ia, ib) in self.pairs or (ib, ia) in self.pairs:
                    return True
        return False


@dataclass(frozen=True)
class Task:
    name: str
    instruction: str
    objects: tuple[ObjectSpec, ...]
    geoms: tuple[str, ...]  # geoms the stage function looks at
    stage_of: Callable[[ContactSet], int]  # progress stage 0..4 from the current contacts
    default_episode_time: float  # seconds the scripted demonstrator needs, with margin

    def sample_poses(self, rng: np.random.Generator, margin: float = 0.0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Object name -> (position (3,), quaternion wxyz (4,)), upright, drawn from the task's ranges, each
        widened by ``margin`` m on both sides (demonstrations that cover the edges of the evaluation's box
        from both sides; 0: the task's own ranges, the same draws for a seed)."""
        if margin < 0:
            raise ValueError(f"placement margin must be >= 0 m, got {margin}")
        out = {}
        for obj in self.objects:
            pos = np.array([rng.uniform(obj.x_range[0] - margin, obj.x_range[1] + margin),
                            rng.uniform(obj.y_range[0] - margin, obj.y_range[1] + margin), obj.z])
            out[obj.name] = (pos, np.array([1.0, 0.0, 0.0, 0.0]))
        return out


def _transfer_cube_stage(c: ContactSet) -> int:
    right = c.touch("red_box", RIGHT_FINGERS)
    left = c.touch("red_box", LEFT_FINGERS)
    table = c.touch("red_box", "table")
    if left and not table and not right:
        return 4
    if left:
        return 3
    if right and not table:
        return 2
    return 1 if right else 0


def _insertion_stage(c: ContactSet) -> int:
    left = c.touch(SOCKET_WALLS, LEFT_FINGERS)
    right = c.touch("red_peg", RIGHT_FINGERS)
    peg_table = c.touch("red_peg", "table")
    socket_table = c.touch(SOCKET_WALLS, "table")
    lifted = not peg_table and not socket_table
    if c.touch("red_peg", "pin") and lifted:
        return 4
    if c.touch("red_peg", SOCKET_WALLS) and lifted:
        return 3
    if left and right and lifted:
        return 2
    return 1 if left and right else 0


TASKS: dict[str, Task] = {
    "transfer_cube": Task(
        name="transfer_cube",
        instruction="transfer the cube to the other arm",
        objects=(ObjectSpec("box", "red_box_joint", (0.0, 0.2), (0.4, 0.6), 0.05),),
        geoms=("red_box", "table", *LEFT_FINGERS, *RIGHT_FINGERS),
        stage_of=_transfer_cube_stage,
        default_episode_time=9.0,
    ),
    "insertion": Task(
        name="insertion",
        instruction="insert the peg into the socket",
        objects=(
            ObjectSpec("peg", "red_peg_joint", (0.1, 0.2), (0.4, 0.6), 0.05),
            ObjectSpec("socket", "blue_socket_joint", (-0.2, -0.1), (0.4, 0.6), 0.05),
        ),
        geoms=("red_peg", "pin", "table", *SOCKET_WALLS, *LEFT_FINGERS, *RIGHT_FINGERS),
        stage_of=_insertion_stage,
        default_episode_time=11.0,
    ),
}
MAX_STAGE = 4


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown sim task {name!r}; tasks: {sorted(TASKS)}")
    return TASKS[name]


@dataclass
class TaskTracker:
    """Evaluates a task's stage on a model's contacts and latches success once it held long enough."""

    task: Task
    model: mujoco.MjModel
    success_hold: float = 0.5
    success_grace: float = 0.1
    stage: int = 0
    max_stage: int = 0
    success: bool = False
    success_time: float = -1.0  # sim time the episode became successful (-1: not yet)
    # m, the highest the task's first object (the cube, the peg) has been above the lowest it rested since the
    # reset: stage 2 ("lifted") is reached by a cube knocked off the table for one step, a real lift is 10+ cm
    max_lift: float = 0.0
    lift: float = 0.0  # m, the same object's rise above its lowest rest now
    _lowest: float = field(default=np.inf, repr=False)
    _since: float | None = field(default=None, repr=False)  # start of the current final-stage streak
    _last_final: float = field(default=-1.0, repr=False)  # last time the final stage was seen
    _ids: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in self.task.geoms:
            gid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, name)
            if gid < 0:
                raise ValueError(f"task {self.task.name}: model has no geom {name!r}")
            self._ids[name] = gid
        self._body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, self.task.objects[0].name)
        if self._body < 0:
            raise ValueError(f"task {self.task.name}: model has no body {self.task.objects[0].name!r}")

    def reset(self) -> None:
        self.stage = self.max_stage = 0
        self.lift = self.max_lift = 0.0
        self._lowest = np.inf
        self.success = False
        self.success_time = -1.0
        self._since = None
        self._last_final = -1.0

    def contacts(self, data: mujoco.MjData) -> ContactSet:
        n = data.ncon
        geoms = data.contact.geom[:n] if n else np.zeros((0, 2), int)
        return ContactSet(pairs={(int(a), int(b)) for a, b in geoms}, ids=self._ids)

    def update(self, data: mujoco.MjData) -> int:
        """Evaluate the stage now (call after mj_step / mj_forward); returns it."""
        self.stage = self.task.stage_of(self.contacts(data))
        self.max_stage = max(self.max_stage, self.stage)
        z = float(data.xpos[self._body][2])
        self._lowest = min(self._lowest, z)
        self.lift = z - self._lowest
        self.max_lift = max(self.max_lift, self.lift)
        t = float(data.time)
        if self.stage == MAX_STAGE:
            if self._since is None:
                self._since = t
            self._last_final = t
            if not self.success and t - self._since >= self.success_hold - 1e-9:
                self.success = True
                self.success_time = t
        elif self._since is not None and t - self._last_final > self.success_grace:
            self._since = None
        return self.stage
