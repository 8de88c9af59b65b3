"""The MuJoCo model of the simulated dual-arm robot, and the map between it and the 14-dim joint vector.

The scene is gym-aloha's bimanual ViperX 300 (two 6-DOF arms facing each other across a table, each
with a two-finger parallel gripper) loaded with ``mujoco.MjSpec`` and extended in memory:

* ``cam_high`` above the front edge of the table, looking down at the workspace, and ``cam_left_wrist``
  / ``cam_right_wrist`` on D405-style mounts on the grippers (the mount of ALOHA 2; the shipped
  ``left_wrist``/``right_wrist`` cameras sit 16 cm behind the gripper with a 20 deg field of view and
  mostly show the gripper itself);
* a ``<side>_tcp`` site between the finger pads (the point the scripted demonstrator steers);
* render-only, decimated copies of the densest arm meshes (the originals keep colliding but are moved
  to a hidden geom group): triangle count dominates software rendering cost, pixels barely matter;
* shadows and multi-sampling off (the 4096^2 shadow map alone costs ~100 ms per frame on CPU).

The sim's own joint vector (``SIM_JOINT_NAMES``) is the ``sim_aloha`` profile's canonical order:
per arm 6 revolute joints in rad, then the gripper, normalised as in gym-aloha / ACT's simulated
datasets: ``g = (finger - 0.01844) / (0.05800 - 0.01844)``, 0 = closed, 1 = open, where ``finger`` is
the opening of one finger from the gripper's centre line in metres (both fingers mirror each other).
Joint limits of the model clip what the actuators can reach (a finger travels 0.021..0.057 m, so
``g`` stays within about 0.065..0.975 in the state).
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from .assets import assets_dir, cluster_decimate, read_binary_stl

TASK_FILES = {
    "transfer_cube": "bimanual_viperx_transfer_cube.xml",
    "insertion": "bimanual_viperx_insertion.xml",
}
ARMS = ("left", "right")
ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
SIM_JOINT_NAMES = tuple(f"{side}_{j}" for side in ARMS for j in (*ARM_JOINTS, "gripper"))
GRIPPER_INDICES = (6, 13)
ARM_INDICES = tuple(i for i in range(14) if i not in GRIPPER_INDICES)

# Finger opening (m) <-> normalised gripper, the convention of gym-aloha and ACT's sim datasets.
FINGER_CLOSED = 0.01844
FINGER_OPEN = 0.05800
FINGER_SPAN = FINGER_OPEN - FINGER_CLOSED

CAMERA_NAMES = {"high": "cam_high", "left_wrist": "cam_left_wrist", "right_wrist": "cam_right_wrist"}

# cam_high: 0.8 m above the table's front edge, pitched down at the workspace (like ALOHA's top camera).
CAM_HIGH_POS = (0.0, -0.15, 0.8)
CAM_HIGH_TARGET = (0.0, 0.45, 0.05)
CAM_HIGH_FOVY = 60.0
# Wrist cameras: ALOHA 2's D405 mount (mujoco_menagerie aloha.xml; the gripper_link frames match).
WRIST_MOUNT_POS = (0.035, 0.0, 0.0)
WRIST_MOUNT_EULER = (0.0, 1.57, -1.57)
WRIST_CAM_POS = (0.0, -0.0824748, -0.0095955)
WRIST_CAM_EULER = (2.70525955359, 0.0, 0.0)
WRIST_CAM_FOVY = 58.0
# Tool centre point in the gripper_link frame: between the finger pads, where a grasped object sits.
TCP_POS = (0.1175, 0.0, 0.0)

# Meshes with more triangles than this get a decimated render-only copy.
DENSE_MESH_FACES = 1500


def _arm_prefix(side: str) -> str:
    return f"vx300s_{side}/"


def mj_joint_name(sim_joint: str) -> str:
    """MuJoCo joint of an arm joint of the sim vector (``left_waist`` -> ``vx300s_left/waist``)."""
    side, _, joint = sim_joint.partition("_")
    return f"{_arm_prefix(side)}{joint}"


def look_at_xyaxes(pos, target, up=(0.0, 0.0, 1.0)) -> list[float]:
    """MuJoCo camera ``xyaxes`` for a camera at ``pos`` looking at ``target`` (cameras look along -z)."""
    pos, target, up = (np.asarray(v, float) for v in (pos, target, up))
    forward = target - pos
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    return [*x, *y]


def _add_cameras(spec: mujoco.MjSpec) -> None:
    for side in ARMS:
        mount = spec.body(f"{_arm_prefix(side)}gripper_link").add_body(name=f"{side}_wrist_camera_mount", pos=list(WRIST_MOUNT_POS))
        mount.alt.type = mujoco.mjtOrientation.mjORIENTATION_EULER
        mount.alt.euler = list(WRIST_MOUNT_EULER)
        cam = mount.add_camera(name=CAMERA_NAMES[f"{side}_wrist"], pos=list(WRIST_CAM_POS), fovy=WRIST_CAM_FOVY)
        cam.alt.type = mujoco.mjtOrientation.mjORIENTATION_EULER
        cam.alt.euler = list(WRIST_CAM_EULER)
    cam = spec.worldbody.add_camera(name=CAMERA_NAMES["high"], pos=list(CAM_HIGH_POS), fovy=CAM_HIGH_FOVY)
    cam.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
    cam.alt.xyaxes = look_at_xyaxes(CAM_HIGH_POS, CAM_HIGH_TARGET)


def _add_tcp_sites(spec: mujoco.MjSpec) -> None:
    for side in ARMS:
        spec.body(f"{_arm_prefix(side)}gripper_link").add_site(
            name=f"{side}_tcp", pos=list(TCP_POS), size=[0.005, 0.005, 0.005], rgba=[0, 1, 0, 0], group=4
        )


def _add_render_meshes(spec: mujoco.MjSpec, cell: float) -> None:
    """Render-only decimated twins of dense meshes; the originals keep colliding, hidden (group 3)."""
    root = assets_dir()
    twins: dict[str, str] = {}
    for mesh in list(spec.meshes):
        tri = read_binary_stl(root / mesh.file)
        if len(tri) <= DENSE_MESH_FACES:
            continue
        verts, faces = cluster_decimate(tri * np.asarray(mesh.scale), cell)
        twin = spec.add_mesh(name=f"{mesh.name}_render", uservert=verts.reshape(-1).tolist(), userface=faces.reshape(-1).tolist())
        twin.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL  # never used for mass (visual geom), but must compile
        twins[mesh.name] = twin.name
    for geom in list(spec.geoms):
        if geom.type != mujoco.mjtGeom.mjGEOM_MESH or geom.meshname not in twins:
            continue
        twin = geom.parent.add_geom(
            name=f"{geom.name}_render", type=mujoco.mjtGeom.mjGEOM_MESH, meshname=twins[geom.meshname],
            pos=list(geom.pos), quat=list(geom.quat), contype=0, conaffinity=0, group=geom.group, rgba=list(geom.rgba),
        )
        twin.alt.type = geom.alt.type
        twin.alt.euler = list(geom.alt.euler)
        geom.group = 3


def build_spec(task: str = "transfer_cube", render_mesh_cell: float = 0.002, timestep: float = 0.002,
               offscreen_size: tuple[int, int] = (640, 480)) -> mujoco.MjSpec:
    """The scene of ``task`` as an ``MjSpec`` with cameras, TCP sites and fast rendering settings.

    ``render_mesh_cell`` (m): grid of the render-only mesh decimation; 0 renders the original meshes.
    ``offscreen_size``: (width, height) of the largest image that will be rendered.
    """
    if task not in TASK_FILES:
        raise ValueError(f"unknown sim task {task!r}; tasks: {sorted(TASK_FILES)}")
    spec = mujoco.MjSpec.from_file(str(assets_dir() / TASK_FILES[task]))
    spec.option.timestep = float(timestep)
    _add_cameras(spec)
    _add_tcp_sites(spec)
    if render_mesh_cell > 0:
        _add_render_meshes(spec, render_mesh_cell)
    spec.visual.quality.offsamples = 0
    spec.visual.quality.shadowsize = 0
    spec.visual.global_.offwidth = max(int(offscreen_size[0]), 640)
    spec.visual.global_.offheight = max(int(offscreen_size[1]), 480)
    return spec


def build_model(task: str = "transfer_cube", **kwargs) -> mujoco.MjModel:
    """Compile the scene of ``task`` (see :func:`build_spec` for the keyword arguments)."""
    return build_spec(task, **kwargs).compile()


def gripper_to_finger(g):
    """Normalised gripper (0 closed .. 1 open) -> finger opening in m (unclipped)."""
    return FINGER_CLOSED + np.asarray(g, float) * FINGER_SPAN


def finger_to_gripper(finger):
    """Finger opening in m -> normalised gripper."""
    return (np.asarray(finger, float) - FINGER_CLOSED) / FINGER_SPAN


@dataclass(frozen=True)
class JointLayout:
    """Addresses of the 14-dim sim vector in a compiled model (qpos, qvel, actuators, fingers)."""

    arm_qpos: np.ndarray  # (12,) qpos addresses of the arm joints, in sim-vector order without grippers
    arm_dof: np.ndarray
    arm_act: np.ndarray
    finger_qpos: np.ndarray  # (2, 2): [arm][left finger, right finger]
    finger_dof: np.ndarray
    finger_act: np.ndarray
    lower: np.ndarray  # (14,) joint limits of the sim vector (grippers 0..1)
    upper: np.ndarray
    ctrl_lower: np.ndarray  # (nu,)
    ctrl_upper: np.ndarray

    @classmethod
    def of(cls, model: mujoco.MjModel) -> "JointLayout":
        def joint(name):
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if jid < 0:
                raise ValueError(f"model has no joint {name!r}")
            return jid

        act_of_joint = {int(model.actuator_trnid[a, 0]): a for a in range(model.nu)}
        arm = [joint(mj_joint_name(n)) for n in SIM_JOINT_NAMES if not n.endswith("_gripper")]
        fingers = [[joint(f"{_arm_prefix(s)}{f}") for f in ("left_finger", "right_finger")] for s in ARMS]
        lower = np.zeros(14)
        upper = np.ones(14)
        lower[list(ARM_INDICES)] = model.jnt_range[arm, 0]
        upper[list(ARM_INDICES)] = model.jnt_range[arm, 1]
        return cls(
            arm_qpos=model.jnt_qposadr[arm].copy(),
            arm_dof=model.jnt_dofadr[arm].copy(),
            arm_act=np.array([act_of_joint[j] for j in arm]),
            finger_qpos=model.jnt_qposadr[np.array(fingers)].copy(),
            finger_dof=model.jnt_dofadr[np.array(fingers)].copy(),
            finger_act=np.array([[act_of_joint[j] for j in pair] for pair in fingers]),
            lower=lower,
            upper=upper,
            ctrl_lower=model.actuator_ctrlrange[:, 0].copy(),
            ctrl_upper=model.actuator_ctrlrange[:, 1].copy(),
        )

    def positions(self, data: mujoco.MjData) -> np.ndarray:
        """Measured 14-dim vector; the gripper is the mean opening of its two fingers, normalised."""
        q = np.empty(14)
        q[list(ARM_INDICES)] = data.qpos[self.arm_qpos]
        f = data.qpos[self.finger_qpos]
        q[list(GRIPPER_INDICES)] = finger_to_gripper(0.5 * (f[:, 0] - f[:, 1]))
        return q

    def velocities(self, data: mujoco.MjData) -> np.ndarray:
        v = np.empty(14)
        v[list(ARM_INDICES)] = data.qvel[self.arm_dof]
        f = data.qvel[self.finger_dof]
        v[list(GRIPPER_INDICES)] = 0.5 * (f[:, 0] - f[:, 1]) / FINGER_SPAN
        return v

    def efforts(self, data: mujoco.MjData) -> np.ndarray:
        """Actuator forces: N m for the arm joints, N for the grippers (mean of the two finger servos)."""
        e = np.empty(14)
        e[list(ARM_INDICES)] = data.actuator_force[self.arm_act]
        f = data.actuator_force[self.finger_act]
        e[list(GRIPPER_INDICES)] = 0.5 * (f[:, 0] - f[:, 1])
        return e

    def set_positions(self, data: mujoco.MjData, q: np.ndarray) -> None:
        """Write a 14-dim vector into qpos (fingers mirrored); for resets and kinematics."""
        q = np.asarray(q, float)
        data.qpos[self.arm_qpos] = q[list(ARM_INDICES)]
        finger = gripper_to_finger(q[list(GRIPPER_INDICES)])
        data.qpos[self.finger_qpos[:, 0]] = finger
        data.qpos[self.finger_qpos[:, 1]] = -finger

    def set_targets(self, data: mujoco.MjData, q: np.ndarray) -> None:
        """Write a 14-dim position target into the servos' ctrl, clipped to what they accept."""
        q = np.asarray(q, float)
        ctrl = data.ctrl
        ctrl[self.arm_act] = q[list(ARM_INDICES)]
        finger = gripper_to_finger(q[list(GRIPPER_INDICES)])
        ctrl[self.finger_act[:, 0]] = finger
        ctrl[self.finger_act[:, 1]] = -finger
        np.clip(ctrl, self.ctrl_lower, self.ctrl_upper, out=ctrl)

    def targets(self, data: mujoco.MjData) -> np.ndarray:
        """The current servo targets as a 14-dim vector (inverse of :meth:`set_targets`, after clipping)."""
        q = np.empty(14)
        q[list(ARM_INDICES)] = data.ctrl[self.arm_act]
        c = data.ctrl[self.finger_act]
        q[list(GRIPPER_INDICES)] = finger_to_gripper(0.5 * (c[:, 0] - c[:, 1]))
        return q


__all__ = [
    "TASK_FILES", "ARMS", "ARM_JOINTS", "SIM_JOINT_NAMES", "GRIPPER_INDICES", "ARM_INDICES", "FINGER_CLOSED", "FINGER_OPEN",
    "FINGER_SPAN", "CAMERA_NAMES", "JointLayout", "build_spec", "build_model", "gripper_to_finger", "finger_to_gripper",
    "mj_joint_name", "look_at_xyaxes",
]
