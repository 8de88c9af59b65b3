"""Forward and inverse kinematics of the simulated arms, computed by MuJoCo on a private ``MjData``.

The simple entry point for other components (visualisation, tests):

>>> from motus_core.sim import ee_positions
>>> ee_positions(q)            # q: (14,) or (N, 14) sim vector -> (2, 3) or (N, 2, 3), [left, right]

``point="gripper_link"`` (default) is the origin of the URDF's ``<side>_gripper_link`` (the wrist
end of the gripper, the profile's end-effector frame); ``point="tcp"`` is the point between the
finger pads. Positions are in the world frame (the URDF's ``world`` link), metres.

:class:`Kinematics` also solves damped-least-squares inverse kinematics for the scripted
demonstrator. One instance is not thread-safe; the module-level helpers keep one per thread.
"""
from __future__ import annotations

import threading

import mujoco
import numpy as np

from .model import ARMS, JointLayout, build_model

EE_POINTS = ("gripper_link", "tcp")


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Axis-angle vector (world frame) rotating ``current`` onto ``target`` (3x3 rotation matrices)."""
    r = target @ current.T
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, r.reshape(-1))
    vel = np.empty(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


class Kinematics:
    """FK / Jacobians / IK of both arms for 14-dim sim vectors (see module doc)."""

    def __init__(self, model: mujoco.MjModel | None = None):
        self.model = model if model is not None else build_model("transfer_cube", render_mesh_cell=0.0)
        self.data = mujoco.MjData(self.model)
        self.layout = JointLayout.of(self.model)
        m = self.model
        self._body = {s: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"vx300s_{s}/gripper_link") for s in ARMS}
        self._site = {s: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, f"{s}_tcp") for s in ARMS}
        self._dofs = {s: self.layout.arm_dof[6 * k:6 * k + 6] for k, s in enumerate(ARMS)}
        self._qidx = {s: np.arange(7 * k, 7 * k + 6) for k, s in enumerate(ARMS)}  # arm joints in the 14-vector
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))

    def set(self, q: np.ndarray) -> None:
        """Pose the model at ``q`` (14-dim sim vector) and compute the kinematics."""
        self.layout.set_positions(self.data, q)
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)  # needed by the Jacobians

    def pose(self, side: str, point: str = "tcp") -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), rotation (3, 3)) of ``point`` of arm ``side`` for the pose last :meth:`set`."""
        if point == "tcp":
            sid = self._site[side]
            return self.data.site_xpos[sid].copy(), self.data.site_xmat[sid].reshape(3, 3).copy()
        if point == "gripper_link":
            bid = self._body[side]
            return self.data.xpos[bid].copy(), self.data.xmat[bid].reshape(3, 3).copy()
        raise ValueError(f"point must be one of {EE_POINTS}, got {point!r}")

    def ee_positions(self, q: np.ndarray, point: str = "gripper_link") -> np.ndarray:
        """End-effector positions [left, right] for one (14,) or many (N, 14) joint vectors."""
        q = np.asarray(q, float)
        batch = q.reshape(-1, 14)
        out = np.empty((len(batch), 2, 3))
        for i, qi in enumerate(batch):
            self.set(qi)
            for k, side in enumerate(ARMS):
                out[i, k] = self.pose(side, point)[0]
        return out.reshape(q.shape[:-1] + (2, 3))

    def jacobian(self, side: str) -> np.ndarray:
        """(6, 6) Jacobian [linear; angular] of the TCP w.r.t. the arm's 6 joints, at the pose last set."""
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self._site[side])
        dofs = self._dofs[side]
        return np.vstack([self._jacp[:, dofs], self._jacr[:, dofs]])

    def solve_ik(self, q0: np.ndarray, side: str, position: np.ndarray, rotation: np.ndarray | None = None,
                 axis: tuple[np.ndarray, np.ndarray] | None = None, roll_ref: tuple[float, float] = (0.0, 0.0),
                 iterations: int = 40, damping: float = 0.02, rot_weight: float = 0.3, tol: float = 1e-4,
                 posture_weight: float = 0.02) -> np.ndarray:
        """Damped-least-squares IK of one arm's TCP, starting from ``q0`` (14-dim; the other arm and
        the grippers are kept). Returns the 14-dim solution, clipped to the joint limits.

        Orientation: ``rotation`` (3x3, columns = TCP axes in the world) constrains it fully;
        ``axis=(local, world)`` only makes the TCP's ``local`` axis point along ``world`` (rotation
        about it is free); neither = position only.

        A first phase (up to ``iterations``) adds a weak pull of the two roll joints (forearm_roll,
        wrist_rotate) towards ``roll_ref``. It keeps the solution on the intended branch: when
        wrist_angle crosses 0 the roll axes align (a wrist singularity) and plain DLS may spin them
        by +-pi into their limits. A second phase drops the pull and converges on the exact
        solution next to it (unless that flips a roll joint by more than 0.5 rad). Both phases stop
        as soon as they converge, so a warm start (the previous tick's solution) costs a few
        iterations."""
        q = np.array(q0, dtype=float)
        idx = self._qidx[side]
        lo, hi = self.layout.lower[idx], self.layout.upper[idx]
        w = np.array([1.0, 1.0, 1.0, rot_weight, rot_weight, rot_weight])
        if rotation is None and axis is None:
            w[3:] = 0.0
        ref = np.array([0.0, 0.0, 0.0, roll_ref[0], 0.0, roll_ref[1]])
        posture = posture_weight**2 * np.diag([0.0, 0.0, 0.0, 1.0, 0.0, 1.0])
        no_pull = np.zeros((6, 6))
        q_reg = q.copy()
        exact = False
        for it in range(2 * iterations):
            if not exact and it >= iterations:
                exact, q_reg = True, q.copy()
            pull = no_pull if exact else posture
            self.set(q)
            p, r = self.pose(side, "tcp")
            err = np.zeros(6)
            err[:3] = position - p
            jac = self.jacobian(side)
            if rotation is not None:
                err[3:] = rotation_error(rotation, r)
            elif axis is not None:
                cur = r @ np.asarray(axis[0], float)
                err[3:] = np.cross(cur, axis[1] / np.linalg.norm(axis[1]))
                jac[3:] = (np.eye(3) - np.outer(cur, cur)) @ jac[3:]  # rotation about the axis is free
            if exact and np.linalg.norm(err[:3]) < tol and np.linalg.norm(w[3:] * err[3:]) < 3 * tol:
                break
            jac = w[:, None] * jac
            dq = np.linalg.solve(jac.T @ jac + damping**2 * np.eye(6) + pull, jac.T @ (w * err) - pull @ (q[idx] - ref))
            step = np.max(np.abs(dq))
            if step > 0.2:  # keep each iteration in the linear region
                dq *= 0.2 / step
            q[idx] = np.clip(q[idx] + dq, lo, hi)
            if step < 1e-5:  # converged: to the regularised optimum (then refine), or to the exact one
                if exact:
                    break
                exact, q_reg = True, q.copy()
        if np.max(np.abs(q[idx[[3, 5]]] - q_reg[idx[[3, 5]]])) > 0.5:
            return q_reg  # next to the wrist singularity the exact solution spins the rolls: keep the other
        return q


_local = threading.local()


def _kinematics() -> Kinematics:
    kin = getattr(_local, "kin", None)
    if kin is None:
        kin = _local.kin = Kinematics()
    return kin


def ee_positions(q: np.ndarray, point: str = "gripper_link") -> np.ndarray:
    """End-effector positions [left, right] (m, world) of (14,) or (N, 14) sim joint vectors."""
    return _kinematics().ee_positions(q, point)


def ee_poses(q: np.ndarray, point: str = "gripper_link") -> tuple[np.ndarray, np.ndarray]:
    """(positions (2, 3), rotations (2, 3, 3)) of both end effectors for one 14-dim sim vector."""
    kin = _kinematics()
    kin.set(np.asarray(q, float))
    poses = [kin.pose(side, point) for side in ARMS]
    return np.stack([p for p, _ in poses]), np.stack([r for _, r in poses])
