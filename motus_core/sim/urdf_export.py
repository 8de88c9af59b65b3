"""MJCF -> URDF: the simulated robot's URDF, generated from the same MuJoCo model the sim runs.

    python -m motus_core.sim.urdf_export            # writes urdf/sim_aloha.urdf + urdf/meshes/

The converter walks the compiled model (so every frame is exactly MuJoCo's) and writes:

* one link per arm body, with clean names (``vx300s_left/gripper_link`` -> ``left_gripper_link``;
  the arm's root body -> ``left_base_link``), the original STL meshes as visual and collision
  geometry, and the bodies' inertials;
* revolute joints named like the robot profile (``left_waist`` ... ``right_wrist_rotate``) with the
  model's axes and limits;
* the gripper as the profile sees it: a joint ``<side>_gripper`` (revolute, 0..1, moving only an
  empty ``<side>_gripper_actuator`` frame) carrying the normalised gripper value, and the two
  prismatic fingers ``<side>_left_finger`` / ``<side>_right_finger`` as ``<mimic>`` joints of it
  (finger = +-(0.01844 + 0.03956 g) m, the sim's own map). A JointState with the profile's 14 names
  therefore drives the whole URDF in robot_state_publisher, and FK code can map the canonical
  vector to URDF joints by name;
* the table (a fixed link) and the three cameras' optical frames (``cam_high_optical``, ...; ROS
  optical convention: z forward, y down), named as the profile's camera ``frame_id``.

Mesh geometry: MuJoCo re-centres each mesh on its centre of mass (``mesh_pos``/``mesh_quat``); the
visual origin written here undoes that, so the STL files are used unchanged. Meshes are referenced
as ``package://motus_ros/urdf/meshes/<file>`` (installed by setup.py); :func:`load_urdf` resolves
that prefix to this source tree for pip-only use.

The ViperX meshes are Interbotix' (BSD-3-Clause), shipped in gym-aloha (Apache-2.0); the copies
under ``urdf/meshes`` keep that attribution (``urdf/meshes/README.md``).
"""
from __future__ import annotations

import argparse
import shutil
import warnings
from pathlib import Path
from xml.dom import minidom
from xml.etree import ElementTree as ET

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from .assets import assets_dir
from .model import ARMS, CAMERA_NAMES, FINGER_CLOSED, FINGER_SPAN, build_model
from .render import MJ_TO_OPTICAL

PACKAGE_PREFIX = "package://motus_ros/urdf/meshes/"
DEFAULT_EFFORT = 10.0  # N m / N for joints whose actuator has no force limit in the model
DEFAULT_VELOCITY = 3.14  # rad/s (m/s for fingers); the model has none
MESH_README = """# Meshes of the simulated ViperX 300 dual-arm robot

STL files copied unchanged from the `gym-aloha` wheel (PyPI `gym-aloha==0.1.5`, Apache-2.0,
`gym_aloha/assets/`) by `python -m motus_core.sim.urdf_export`. The ViperX 300 6-DOF arm meshes
(`vx300s_*.stl`) are Interbotix' (Trossen Robotics), BSD-3-Clause; `tabletop.stl` comes from the ACT
simulation assets shipped with gym-aloha. Referenced by `urdf/sim_aloha.urdf` as
`package://motus_ros/urdf/meshes/<file>`.
"""


def _link_name(body: str) -> str:
    for side in ARMS:
        prefix = f"vx300s_{side}"
        if body == prefix:
            return f"{side}_base_link"
        if body.startswith(prefix + "/"):
            return f"{side}_{body[len(prefix) + 1:]}"
    return body


def _joint_name(joint: str) -> str:
    for side in ARMS:
        prefix = f"vx300s_{side}/"
        if joint.startswith(prefix):
            return f"{side}_{joint[len(prefix):]}"
    return joint


def _fmt(v) -> str:
    vals = [0.0 if abs(float(x)) < 1e-12 else float(x) for x in np.ravel(v)]  # no -0 or 1e-17 noise
    return " ".join(f"{x:.10g}" for x in vals)


def _rpy(rot: np.ndarray) -> np.ndarray:
    """URDF rpy (fixed-axis roll about x, pitch about y, yaw about z) of a rotation matrix."""
    with warnings.catch_warnings():  # at pitch = +-90 deg scipy warns about gimbal lock; the angles are still exact
        warnings.simplefilter("ignore", UserWarning)
        return Rotation.from_matrix(rot).as_euler("xyz")


def _quat_mat(q) -> np.ndarray:
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.asarray(q, float))
    return m.reshape(3, 3)


def _origin(parent: ET.Element, pos, rot) -> None:
    ET.SubElement(parent, "origin", xyz=_fmt(pos), rpy=_fmt(_rpy(rot)))


class _Writer:
    def __init__(self, model: mujoco.MjModel, camera_frames: dict[str, str]):
        self.m = model
        self.camera_frames = camera_frames
        self.robot = ET.Element("robot", name="sim_aloha")
        self.meshes: set[str] = set()
        ET.SubElement(self.robot, "link", name="world")

    def add_link(self, body_id: int) -> str:
        m = self.m
        name = _link_name(m.body(body_id).name)
        link = ET.SubElement(self.robot, "link", name=name)
        if m.body_mass[body_id] > 0 and name != "table":
            inertial = ET.SubElement(link, "inertial")
            _origin(inertial, m.body_ipos[body_id], _quat_mat(m.body_iquat[body_id]))
            ET.SubElement(inertial, "mass", value=f"{m.body_mass[body_id]:.10g}")
            ixx, iyy, izz = m.body_inertia[body_id]
            ET.SubElement(inertial, "inertia", ixx=f"{ixx:.10g}", ixy="0", ixz="0", iyy=f"{iyy:.10g}", iyz="0", izz=f"{izz:.10g}")
        for g in range(m.ngeom):
            if m.geom_bodyid[g] != body_id or m.geom_type[g] != mujoco.mjtGeom.mjGEOM_MESH:
                continue
            mid = int(m.geom_dataid[g])
            # undo MuJoCo's re-centring of the mesh: spec frame = compiled geom frame o mesh offset^-1
            r_c, p_c = _quat_mat(m.geom_quat[g]), m.geom_pos[g]
            r_m, p_m = _quat_mat(m.mesh_quat[mid]), m.mesh_pos[mid]
            rot = r_c @ r_m.T
            pos = p_c - rot @ p_m
            file = self.mesh_source(mid)
            self.meshes.add(file)
            for tag in ("visual", "collision"):
                el = ET.SubElement(link, tag)
                _origin(el, pos, rot)
                geo = ET.SubElement(el, "geometry")
                ET.SubElement(geo, "mesh", filename=PACKAGE_PREFIX + file, scale=_fmt(m.mesh_scale[mid]))
                if tag == "visual":
                    mat = ET.SubElement(el, "material", name="table_grey" if name == "table" else "viperx_grey")
                    ET.SubElement(mat, "color", rgba="0.2 0.2 0.2 1" if name == "table" else "0.6 0.6 0.6 1")
        return name

    def mesh_source(self, mesh_id: int) -> str:
        """STL file of a mesh asset (MjSpec keeps the file name in the model's paths)."""
        adr = self.m.mesh_pathadr[mesh_id]
        path = self.m.paths[adr:].split(b"\0", 1)[0].decode()
        return Path(path).name

    def add_fixed(self, name: str, parent: str, child: str, pos, rot) -> None:
        j = ET.SubElement(self.robot, "joint", name=name, type="fixed")
        _origin(j, pos, rot)
        ET.SubElement(j, "parent", link=parent)
        ET.SubElement(j, "child", link=child)

    def add_joint(self, jid: int, parent: str, child: str, pos, rot) -> None:
        m = self.m
        kind = {mujoco.mjtJoint.mjJNT_HINGE: "revolute", mujoco.mjtJoint.mjJNT_SLIDE: "prismatic"}.get(m.jnt_type[jid])
        if kind is None:
            raise ValueError(f"joint {m.joint(jid).name}: only hinge and slide joints can become URDF joints")
        if np.linalg.norm(m.jnt_pos[jid]) > 1e-12:
            raise ValueError(f"joint {m.joint(jid).name} is not at its body's origin; the converter does not support that")
        name = _joint_name(m.joint(jid).name)
        j = ET.SubElement(self.robot, "joint", name=name, type=kind)
        _origin(j, pos, rot)
        ET.SubElement(j, "parent", link=parent)
        ET.SubElement(j, "child", link=child)
        ET.SubElement(j, "axis", xyz=_fmt(m.jnt_axis[jid]))
        effort = DEFAULT_EFFORT
        for a in range(m.nu):
            if m.actuator_trnid[a, 0] == jid and m.actuator_forcelimited[a]:
                effort = float(np.max(np.abs(m.actuator_forcerange[a])))
        lo, hi = m.jnt_range[jid]
        ET.SubElement(j, "limit", lower=f"{lo:.10g}", upper=f"{hi:.10g}", effort=f"{effort:.10g}", velocity=f"{DEFAULT_VELOCITY:.10g}")
        if name.endswith("_finger"):
            side = name.split("_", 1)[0]
            sign = 1.0 if name.endswith("_left_finger") else -1.0
            ET.SubElement(j, "mimic", joint=f"{side}_gripper", multiplier=f"{sign * FINGER_SPAN:.10g}", offset=f"{sign * FINGER_CLOSED:.10g}")

    def add_gripper_joint(self, side: str) -> None:
        """``<side>_gripper``: the profile's normalised gripper value as a joint the fingers mimic."""
        child = f"{side}_gripper_actuator"
        ET.SubElement(self.robot, "link", name=child)
        j = ET.SubElement(self.robot, "joint", name=f"{side}_gripper", type="revolute")
        _origin(j, np.zeros(3), np.eye(3))
        ET.SubElement(j, "parent", link=f"{side}_gripper_link")
        ET.SubElement(j, "child", link=child)
        ET.SubElement(j, "axis", xyz="1 0 0")
        ET.SubElement(j, "limit", lower="0", upper="1", effort=f"{DEFAULT_EFFORT:.10g}", velocity="4")

    def add_cameras(self, data: mujoco.MjData) -> None:
        m = self.m
        for role, cam_name in CAMERA_NAMES.items():
            cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, cam_name)
            frame = self.camera_frames.get(role, f"{cam_name}_optical")
            ET.SubElement(self.robot, "link", name=frame)
            body = int(m.cam_bodyid[cid])
            parent = "world" if body == 0 else _link_name(m.body(body).name)
            rot = _quat_mat(m.cam_quat[cid]) @ MJ_TO_OPTICAL
            self.add_fixed(f"{frame}_joint", parent, frame, m.cam_pos[cid], rot)

    def text(self) -> str:
        raw = ET.tostring(self.robot, encoding="unicode")
        header = (
            "<!-- Generated by `python -m motus_core.sim.urdf_export` from gym-aloha's bimanual ViperX 300 MJCF "
            "(motus_core.sim.model). Do not edit: regenerate. Meshes: urdf/meshes/README.md. -->\n"
        )
        pretty = minidom.parseString(raw).toprettyxml(indent="  ")
        return pretty.replace('<?xml version="1.0" ?>\n', '<?xml version="1.0"?>\n' + header, 1)


def _arm_bodies(model: mujoco.MjModel) -> list[int]:
    """Bodies of the two arms and the table (in tree order: parents before children)."""
    keep = []
    roots = {mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"vx300s_{s}") for s in ARMS}
    table = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "table")
    for b in range(1, model.nbody):
        root = b
        while model.body_parentid[root] != 0:
            root = int(model.body_parentid[root])
        if root in roots or b == table:
            keep.append(b)
    return keep


def build_urdf(camera_frames: dict[str, str] | None = None) -> tuple[str, set[str]]:
    """URDF text of the simulated robot and the set of STL files it references."""
    if camera_frames is None:
        from ..robot_profile import load_profile

        profile = load_profile("sim_aloha")
        camera_frames = {role: cam.frame_id for role, cam in profile.cameras.items()}
    model = build_model("transfer_cube", render_mesh_cell=0.0)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    w = _Writer(model, camera_frames)
    for b in _arm_bodies(model):
        child = w.add_link(b)
        parent_id = int(model.body_parentid[b])
        parent = "world" if parent_id == 0 else _link_name(model.body(parent_id).name)
        pos, rot = model.body_pos[b], _quat_mat(model.body_quat[b])
        jnum = model.body_jntnum[b]
        if jnum == 0:
            w.add_fixed(f"{child}_joint", parent, child, pos, rot)
        elif jnum == 1:
            w.add_joint(int(model.body_jntadr[b]), parent, child, pos, rot)
        else:
            raise ValueError(f"body {model.body(b).name} has {jnum} joints; URDF links have one")
    for side in ARMS:
        w.add_gripper_joint(side)
    w.add_cameras(data)
    return w.text(), w.meshes


def export(out_dir: str | Path) -> Path:
    """Write ``sim_aloha.urdf`` and ``meshes/`` (STL copies + attribution) into ``out_dir``."""
    out = Path(out_dir)
    (out / "meshes").mkdir(parents=True, exist_ok=True)
    text, meshes = build_urdf()
    for f in sorted(meshes):
        shutil.copyfile(assets_dir() / f, out / "meshes" / f)
    (out / "meshes" / "README.md").write_text(MESH_README)
    path = out / "sim_aloha.urdf"
    path.write_text(text)
    return path


def load_urdf(path: str | Path | None = None, **kwargs):
    """Load the URDF with yourdfpy, resolving ``package://motus_ros/`` to the project tree."""
    import yourdfpy

    from ..robot_profile import config_dir

    root = config_dir().parent
    path = Path(path) if path is not None else root / "urdf" / "sim_aloha.urdf"

    def handler(fname: str) -> str:
        if fname.startswith("package://motus_ros/"):
            return str(root / fname[len("package://motus_ros/"):])
        return fname

    return yourdfpy.URDF.load(str(path), filename_handler=handler, **kwargs)


def main(argv: list[str] | None = None) -> int:
    from ..robot_profile import config_dir

    p = argparse.ArgumentParser(description="Write the simulated robot's URDF (and meshes) from its MuJoCo model.")
    p.add_argument("--out", default=str(config_dir().parent / "urdf"), help="output directory (default: the project's urdf/)")
    ns = p.parse_args(argv)
    path = export(ns.out)
    print(f"wrote {path} and {path.parent / 'meshes'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
