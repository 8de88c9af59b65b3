"""Marker geometry of an action chunk (ROS-free; the visualizer node turns it into a MarkerArray).

For each end effector of the robot profile the chunk becomes:

* ``<side>/path``: a line strip through the K predicted end-effector positions, one colour per
  vertex by time (early = dark purple ... late = yellow), the part already executed grey;
* ``<side>/gripper``: a sphere per action, ``gripper_offset`` above the same positions (a bead track
  riding on the path, so it does not hide the time colours), coloured by the gripper command
  (green = open ... red = closed), executed part grey;
* ``<side>/end``: a larger sphere at the chunk's last target;
* ``chunk/label``: text at the start of the first path: chunk id, model, mode.

Every chunk produces the same namespaces and ids, and the array starts with a DELETEALL, so a new
chunk replaces the previous one instead of piling up.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .frames import VizInputError
from .kinematics import ChainFK, side_gripper_columns

LINE_STRIP = "line_strip"
SPHERE_LIST = "sphere_list"
SPHERE = "sphere"
TEXT = "text"
DELETE_ALL = "delete_all"

# Anchors of the time colour ramp (perceptually ordered, dark -> bright, like "plasma").
_TIME_RAMP = np.array(
    [
        [0.050, 0.030, 0.530],
        [0.420, 0.000, 0.660],
        [0.700, 0.160, 0.560],
        [0.900, 0.380, 0.360],
        [0.990, 0.650, 0.210],
        [0.940, 0.980, 0.130],
    ]
)


@dataclass(frozen=True)
class MarkerStyle:
    line_width: float = 0.006  # m
    sphere_diameter: float = 0.010  # m
    gripper_offset: float = 0.015  # m above the path (base frame z): the gripper beads must not hide the time colours
    end_diameter: float = 0.025  # m
    text_height: float = 0.03  # m
    alpha: float = 1.0
    executed_rgba: tuple[float, float, float, float] = (0.55, 0.55, 0.55, 0.5)
    open_rgb: tuple[float, float, float] = (0.10, 0.80, 0.20)
    closed_rgb: tuple[float, float, float] = (0.90, 0.10, 0.10)
    label: bool = True


@dataclass
class MarkerGeometry:
    """One marker, in plain numpy (mirrors visualization_msgs/Marker's fields that are used)."""

    ns: str
    id: int
    kind: str
    frame_id: str
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (M, 3)
    colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (M, 4) rgba in [0, 1]
    color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    scale: tuple[float, float, float] = (0.0, 0.0, 0.0)
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)  # pose of SPHERE / TEXT markers
    text: str = ""


def time_colors(n: int, alpha: float = 1.0) -> np.ndarray:
    """(n, 4) colours along the time ramp (first = earliest)."""
    if n <= 0:
        return np.zeros((0, 4))
    s = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    x = s * (len(_TIME_RAMP) - 1)
    i = np.minimum(x.astype(int), len(_TIME_RAMP) - 2)
    f = (x - i)[:, None]
    rgb = _TIME_RAMP[i] * (1 - f) + _TIME_RAMP[i + 1] * f
    return np.concatenate([rgb, np.full((n, 1), alpha)], axis=1)


def gripper_colors(openness: np.ndarray, style: MarkerStyle) -> np.ndarray:
    """(K,) openness in [0, 1] (1 = open) -> (K, 4) colours between closed and open."""
    o = np.clip(np.asarray(openness, dtype=np.float64), 0.0, 1.0)[:, None]
    rgb = np.asarray(style.closed_rgb) * (1 - o) + np.asarray(style.open_rgb) * o
    return np.concatenate([rgb, np.full((len(o), 1), style.alpha)], axis=1)


def gripper_openness(values: np.ndarray, open_value: float, closed_value: float) -> np.ndarray:
    """Gripper commands in the profile's unit -> openness in [0, 1] (0 closed, 1 open)."""
    span = float(open_value) - float(closed_value)
    if span == 0:
        return np.zeros_like(np.asarray(values, dtype=np.float64))
    return np.clip((np.asarray(values, dtype=np.float64) - closed_value) / span, 0.0, 1.0)


@dataclass
class ChunkPath:
    """An action chunk pushed through forward kinematics."""

    chunk_id: int
    stamp: float  # observation stamp (s)
    step_period: float  # s
    positions: np.ndarray  # (K, N) canonical joint vector per action
    ee: dict[str, np.ndarray]  # side -> (K, 3) end-effector positions in the base frame
    openness: dict[str, np.ndarray]  # side -> (K,) gripper openness, 1 = open
    frame_id: str
    model: str = ""
    mode: str = ""
    prefix_length: int = 0

    @property
    def num_steps(self) -> int:
        return int(self.positions.shape[0])

    def times(self) -> np.ndarray:
        """Absolute time of each action target (``stamp + (k + 1) * step_period``)."""
        return self.stamp + self.step_period * np.arange(1, self.num_steps + 1)

    def executed(self, now: float, time_offset: float = 0.0) -> int:
        """Number of actions whose target time, shifted by ``time_offset`` (the executor's re-anchoring of
        the chunk, see ExecutorStatus), is not after ``now``."""
        return int(np.searchsorted(self.times() + time_offset, now + 1e-9, side="right"))

    @property
    def end_positions(self) -> np.ndarray:
        return self.positions[-1]


def reorder_columns(positions: np.ndarray, names: Sequence[str], canonical: Sequence[str]) -> np.ndarray:
    """(K, len(names)) -> (K, len(canonical)) in canonical order; missing joints are an error."""
    if not names:
        if positions.shape[1] != len(canonical):
            raise VizInputError(f"chunk has {positions.shape[1]} columns and no joint names; the robot has {len(canonical)} joints")
        return positions
    names = list(names)
    if len(names) != positions.shape[1]:
        raise VizInputError(f"chunk names {len(names)} joints but has {positions.shape[1]} columns")
    if len(set(names)) != len(names):
        raise VizInputError("chunk has duplicated joint names")
    missing = [c for c in canonical if c not in names]
    if missing:
        raise VizInputError(f"chunk lacks joints {missing}")
    if names == list(canonical):
        return positions
    return positions[:, [names.index(c) for c in canonical]]


class TrajectoryMarkers:
    """Action chunks -> end-effector paths -> marker geometry, for one robot profile."""

    def __init__(self, profile, fk: ChainFK, style: MarkerStyle | None = None, frame_id: str | None = None):
        self.profile = profile
        self.fk = fk
        self.style = style or MarkerStyle()
        self.frame_id = frame_id or profile.base_frame
        if not self.frame_id:
            raise ValueError("markers need a frame id (robot profile frames.base)")
        self.sides = list(fk.tips)
        self.gripper_columns = side_gripper_columns(profile, self.sides)

    def path(self, positions: np.ndarray, *, joint_names: Sequence[str] = (), stamp: float, step_period: float,
             chunk_id: int = 0, model: str = "", mode: str = "", prefix_length: int = 0) -> ChunkPath:
        """Validate a chunk (K x N positions) and compute its end-effector path."""
        q = np.asarray(positions, dtype=np.float64)
        if q.ndim != 2 or q.shape[0] == 0:
            raise VizInputError(f"chunk positions must be a non-empty (K, N) array, got shape {q.shape}")
        if not np.all(np.isfinite(q)):
            raise VizInputError("chunk positions contain NaN or inf")
        if not (np.isfinite(step_period) and step_period > 0):
            raise VizInputError(f"chunk step period must be positive, got {step_period}")
        if not np.isfinite(stamp):
            raise VizInputError("chunk stamp is not finite")
        q = reorder_columns(q, joint_names, self.profile.joint_names)
        ee = self.fk.positions(q)
        g = self.profile.gripper
        openness = {s: gripper_openness(q[:, c], g.open_value, g.closed_value) for s, c in self.gripper_columns.items()}
        return ChunkPath(chunk_id=int(chunk_id), stamp=float(stamp), step_period=float(step_period), positions=q, ee=ee,
                         openness=openness, frame_id=self.frame_id, model=model, mode=mode, prefix_length=int(prefix_length))

    def markers(self, path: ChunkPath, executed: int = 0) -> list[MarkerGeometry]:
        """The marker set of a chunk with its first ``executed`` actions greyed out."""
        st = self.style
        k = path.num_steps
        executed = int(np.clip(executed, 0, k))
        grey = np.asarray(st.executed_rgba, dtype=np.float64)
        out = [MarkerGeometry(ns="", id=0, kind=DELETE_ALL, frame_id=path.frame_id)]
        for sid, side in enumerate(self.sides):
            pts = path.ee[side]
            tc = time_colors(k, st.alpha)
            tc[:executed] = grey
            out.append(MarkerGeometry(ns=f"{side}/path", id=0, kind=LINE_STRIP, frame_id=path.frame_id, points=pts, colors=tc,
                                      color=tuple(tc[-1]), scale=(st.line_width, 0.0, 0.0)))
            if side in path.openness:
                gc = gripper_colors(path.openness[side], st)
                gc[:executed] = grey
                beads = pts + np.array([0.0, 0.0, st.gripper_offset])
                out.append(MarkerGeometry(ns=f"{side}/gripper", id=0, kind=SPHERE_LIST, frame_id=path.frame_id, points=beads, colors=gc,
                                          color=tuple(gc[-1]), scale=(st.sphere_diameter,) * 3))
            end_rgba = tuple(grey) if executed >= k else tuple(time_colors(k, st.alpha)[-1])
            out.append(MarkerGeometry(ns=f"{side}/end", id=0, kind=SPHERE, frame_id=path.frame_id, color=end_rgba,
                                      scale=(st.end_diameter,) * 3, position=tuple(float(v) for v in pts[-1])))
        if st.label and self.sides:
            first = path.ee[self.sides[0]][0]
            text = f"chunk {path.chunk_id}" + (f" {path.model}/{path.mode}" if path.model or path.mode else "")
            out.append(MarkerGeometry(ns="chunk/label", id=0, kind=TEXT, frame_id=path.frame_id, color=(1.0, 1.0, 1.0, 0.9),
                                      scale=(0.0, 0.0, st.text_height), position=(float(first[0]), float(first[1]), float(first[2]) + 0.05),
                                      text=text))
        return out


def ghost_positions(path: ChunkPath) -> np.ndarray:
    """The joint configuration the ghost robot shows: the chunk's last target."""
    return path.end_positions.copy()


def marker_errors(markers: Sequence[MarkerGeometry], chunk_length: int | None = None) -> list[str]:
    """Structural problems of a marker set (empty list = fine). Used by tests and by the node's self-check."""
    errs = []
    seen = set()
    for m in markers:
        if m.kind == DELETE_ALL:
            continue
        key = (m.ns, m.id)
        if key in seen:
            errs.append(f"duplicated (ns, id) {key}")
        seen.add(key)
        if not m.frame_id:
            errs.append(f"{key}: empty frame_id")
        if m.kind in (LINE_STRIP, SPHERE_LIST):
            if len(m.points) == 0:
                errs.append(f"{key}: no points")
            if chunk_length is not None and len(m.points) != chunk_length:
                errs.append(f"{key}: {len(m.points)} points for a chunk of {chunk_length}")
            if len(m.colors) != len(m.points):
                errs.append(f"{key}: {len(m.colors)} colours for {len(m.points)} points")
            if len(m.colors) and np.any(m.colors[:, 3] <= 0):
                errs.append(f"{key}: a colour with alpha <= 0")
        if not np.all(np.isfinite(m.points)) or not np.all(np.isfinite(m.position)):
            errs.append(f"{key}: non-finite coordinates")
        if m.scale[0] <= 0 and m.kind != TEXT:
            errs.append(f"{key}: scale.x <= 0")
        if m.color[3] <= 0:
            errs.append(f"{key}: colour alpha <= 0")
    return errs
