"""Forward kinematics of whole action chunks through the robot's URDF.

The kinematic data (joint origins, axes, types, mimic relations, the tree) come from the URDF as
parsed by ``yourdfpy``. yourdfpy's own ``update_cfg`` + ``get_transform`` recomputes a trimesh
scene graph per configuration (about 40 ms for a 50-step chunk, see docs/visualization.md), far too
slow to redraw predicted paths live. So the chain from the base frame to each end-effector link is
extracted once and a chunk's K configurations are pushed through it together: one batched
(K, 4, 4) matrix product per joint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .frames import VizInputError

_MOVABLE = ("revolute", "continuous", "prismatic")


class KinematicsError(ValueError):
    """The URDF cannot give the requested chain (missing link, unsupported joint, unmapped joint)."""


@dataclass(frozen=True)
class _ChainJoint:
    name: str
    kind: str  # "fixed" | "revolute" | "prismatic"
    origin: np.ndarray  # (4, 4) parent link -> joint frame at q = 0
    axis: np.ndarray  # (3,) unit axis in the joint frame
    column: int  # column of the configuration vector driving it (-1 for fixed joints)
    multiplier: float  # q_joint = multiplier * q[column] + offset (mimic joints; 1, 0 otherwise)
    offset: float


def _rotations(axis: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Batched Rodrigues: (K,) angles about a unit ``axis`` -> (K, 3, 3)."""
    x, y, z = axis
    c, s = np.cos(angles), np.sin(angles)
    t = 1.0 - c
    r = np.empty((angles.shape[0], 3, 3))
    r[:, 0, 0] = t * x * x + c
    r[:, 0, 1] = t * x * y - s * z
    r[:, 0, 2] = t * x * z + s * y
    r[:, 1, 0] = t * x * y + s * z
    r[:, 1, 1] = t * y * y + c
    r[:, 1, 2] = t * y * z - s * x
    r[:, 2, 0] = t * x * z - s * y
    r[:, 2, 1] = t * y * z + s * x
    r[:, 2, 2] = t * z * z + c
    return r


def load_urdf(path: str | Path):
    """Parse a URDF with yourdfpy, kinematics only (no meshes, no scene graph)."""
    import yourdfpy

    p = Path(path)
    if not p.is_file():
        raise KinematicsError(f"URDF not found: {p}")
    try:
        return yourdfpy.URDF.load(
            str(p), build_scene_graph=False, build_collision_scene_graph=False, load_meshes=False, load_collision_meshes=False
        )
    except Exception as exc:  # noqa: BLE001 - yourdfpy raises many types for malformed XML
        raise KinematicsError(f"cannot parse URDF {p}: {exc}") from exc


class ChainFK:
    """Batched forward kinematics from ``base_link`` to a set of tip links of one URDF.

    ``joint_columns`` maps URDF joint names to columns of the configuration vectors passed to
    :meth:`transforms` (e.g. the robot profile's canonical order). Every movable joint on a chain
    must be mapped, directly or through a ``<mimic>`` of a mapped joint.
    """

    def __init__(self, urdf, base_link: str, tips: Mapping[str, str], joint_columns: Mapping[str, int]):
        self.urdf = urdf
        self.base_link = base_link
        self.tips = dict(tips)
        self.joint_columns = dict(joint_columns)
        links = set(urdf.link_map)
        if base_link not in links:
            raise KinematicsError(f"base frame {base_link!r} is not a link of the URDF (links: {sorted(links)[:8]}...)")
        parent_joint = {j.child: j for j in urdf.robot.joints}
        self._chains: dict[str, list[_ChainJoint]] = {}
        for key, tip in self.tips.items():
            if tip not in links:
                raise KinematicsError(f"end-effector link {tip!r} ({key}) is not a link of the URDF")
            chain = []
            link = tip
            while link != base_link:
                j = parent_joint.get(link)
                if j is None:
                    raise KinematicsError(f"link {tip!r} is not below the base frame {base_link!r} in the URDF tree")
                chain.append(self._chain_joint(j))
                link = j.parent
            self._chains[key] = chain[::-1]

    def _chain_joint(self, j) -> _ChainJoint:
        origin = np.asarray(j.origin if j.origin is not None else np.eye(4), dtype=np.float64)
        if j.type == "fixed":
            return _ChainJoint(j.name, "fixed", origin, np.zeros(3), -1, 1.0, 0.0)
        if j.type not in _MOVABLE:
            raise KinematicsError(f"joint {j.name!r} of type {j.type!r} is not supported (revolute, continuous, prismatic, fixed)")
        axis = np.asarray(j.axis if j.axis is not None else (1.0, 0.0, 0.0), dtype=np.float64)
        axis = axis / np.linalg.norm(axis)
        kind = "prismatic" if j.type == "prismatic" else "revolute"
        source, mult, off = j.name, 1.0, 0.0
        if j.mimic is not None:
            source = j.mimic.joint
            mult = float(j.mimic.multiplier if j.mimic.multiplier is not None else 1.0)
            off = float(j.mimic.offset if j.mimic.offset is not None else 0.0)
        if source not in self.joint_columns:
            raise KinematicsError(f"URDF joint {source!r} on the chain to an end effector has no column in the joint vector "
                                  f"(mapped joints: {sorted(self.joint_columns)})")
        return _ChainJoint(j.name, kind, origin, axis, int(self.joint_columns[source]), mult, off)

    @property
    def chain_joint_names(self) -> dict[str, list[str]]:
        return {k: [j.name for j in c] for k, c in self._chains.items()}

    def transforms(self, q: np.ndarray) -> dict[str, np.ndarray]:
        """(K, N) configurations -> {tip key: (K, 4, 4) pose of the tip link in the base frame}."""
        q = np.asarray(q, dtype=np.float64)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2:
            raise VizInputError(f"configurations must be (K, N), got shape {q.shape}")
        need = 1 + max((j.column for c in self._chains.values() for j in c), default=-1)
        if q.shape[1] < need:
            raise VizInputError(f"configurations have {q.shape[1]} columns; the chains need {need}")
        if not np.all(np.isfinite(q)):
            raise VizInputError("configurations contain NaN or inf")
        k = q.shape[0]
        out = {}
        for key, chain in self._chains.items():
            t = np.broadcast_to(np.eye(4), (k, 4, 4)).copy()
            for j in chain:
                t = t @ j.origin
                if j.kind == "fixed":
                    continue
                v = j.multiplier * q[:, j.column] + j.offset
                m = np.broadcast_to(np.eye(4), (k, 4, 4)).copy()
                if j.kind == "revolute":
                    m[:, :3, :3] = _rotations(j.axis, v)
                else:
                    m[:, :3, 3] = v[:, None] * j.axis
                t = t @ m
            out[key] = t
        return out

    def positions(self, q: np.ndarray) -> dict[str, np.ndarray]:
        """(K, N) configurations -> {tip key: (K, 3) position of the tip link in the base frame}."""
        return {k: t[:, :3, 3].copy() for k, t in self.transforms(q).items()}


def urdf_joint_names_for_profile(profile) -> dict[str, str]:
    """Canonical joint name -> URDF joint name (``RobotProfile.urdf_joint_names``: distinct for both arms
    even when per-arm drivers name their joints alike)."""
    return profile.urdf_joint_names


def chain_fk_for_profile(profile, urdf_path: str | Path | None = None) -> ChainFK:
    """A :class:`ChainFK` from the profile's base frame to its end-effector links, fed with the
    profile's canonical joint vector (columns = ``profile.joint_names``)."""
    if urdf_path is None or str(urdf_path) == "":
        if not profile.urdf:
            raise KinematicsError(f"robot profile {profile.name!r} names no URDF (set the 'urdf' field or pass a path)")
        urdf_path = profile.resolve(profile.urdf)
    if not profile.ee_links:
        raise KinematicsError(f"robot profile {profile.name!r} names no end-effector links (frames.end_effectors)")
    urdf = load_urdf(urdf_path)
    names = urdf_joint_names_for_profile(profile)
    columns = {names[c]: i for i, c in enumerate(profile.joint_names)}
    return ChainFK(urdf, profile.base_frame, profile.ee_links, columns)


def side_gripper_columns(profile, sides: Sequence[str]) -> dict[str, int]:
    """End-effector key ("left"/"right") -> column of its gripper in the canonical joint vector.

    Matched by name (the gripper joint whose canonical name starts with the key), else by order.
    """
    grippers = list(profile.gripper_indices)
    out = {}
    for side in sides:
        named = [i for i in grippers if profile.joint_names[i].startswith(side)]
        if len(named) == 1:
            out[side] = named[0]
    if len(out) < len(sides) and len(grippers) == len(sides):
        out = dict(zip(sides, grippers))
    return out


class UrdfTree:
    """Every joint's parent -> child transform for given joint values (what robot_state_publisher
    computes), for writing ``/tf`` where no robot_state_publisher runs (pip-only installs)."""

    def __init__(self, urdf):
        self.urdf = urdf
        children = {j.child for j in urdf.robot.joints}
        roots = [link.name for link in urdf.robot.links if link.name not in children]
        if len(roots) != 1:
            raise KinematicsError(f"the URDF must be one tree with one root link, found roots {roots}")
        self.root = roots[0]
        self._joints = []
        for j in urdf.robot.joints:
            if j.type not in ("fixed", *_MOVABLE):
                raise KinematicsError(f"joint {j.name!r} of type {j.type!r} is not supported")
            axis = np.asarray(j.axis if j.axis is not None else (1.0, 0.0, 0.0), dtype=np.float64)
            mimic = (j.mimic.joint, float(j.mimic.multiplier or 1.0), float(j.mimic.offset or 0.0)) if j.mimic is not None else None
            origin = np.asarray(j.origin if j.origin is not None else np.eye(4), dtype=np.float64)
            self._joints.append((j.name, j.type, j.parent, j.child, origin, axis / np.linalg.norm(axis), mimic))

    @property
    def movable_joints(self) -> list[str]:
        return [j[0] for j in self._joints if j[1] != "fixed" and j[6] is None]

    def fixed_transforms(self) -> list[tuple[str, str, np.ndarray]]:
        return [(p, c, o) for _, kind, p, c, o, _, _ in self._joints if kind == "fixed"]

    def moving_transforms(self, values: Mapping[str, float]) -> list[tuple[str, str, np.ndarray]]:
        """(parent, child, 4x4) of every movable joint; joints without a value are at 0."""
        out = []
        for name, kind, parent, child, origin, axis, mimic in self._joints:
            if kind == "fixed":
                continue
            v = float(values.get(name, 0.0))
            if mimic is not None:
                v = mimic[1] * float(values.get(mimic[0], 0.0)) + mimic[2]
            m = np.eye(4)
            if kind == "prismatic":
                m[:3, 3] = v * axis
            else:
                m[:3, :3] = _rotations(axis, np.array([v]))[0]
            out.append((parent, child, origin @ m))
        return out
