"""urdf/sim_aloha.urdf: generated from the MuJoCo model, loadable by yourdfpy, same joints and limits
as the robot profile, and forward kinematics equal to MuJoCo's within 1e-6 m."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import motus_core.sim  # noqa: F401  (MUJOCO_GL before mujoco)
import mujoco
from motus_core.robot_profile import load_profile
from motus_core.sim.kinematics import Kinematics
from motus_core.sim.model import CAMERA_NAMES, SIM_JOINT_NAMES, build_model
from motus_core.sim.render import MJ_TO_OPTICAL
from motus_core.sim.urdf_export import _link_name, build_urdf, load_urdf

ROOT = Path(__file__).resolve().parent.parent
PROFILE = load_profile("sim_aloha")


@pytest.fixture(scope="module")
def urdf():
    return load_urdf(ROOT / PROFILE.urdf, build_scene_graph=True, load_meshes=False)


def test_committed_urdf_is_what_the_converter_writes():
    text, meshes = build_urdf()
    assert (ROOT / "urdf" / "sim_aloha.urdf").read_text() == text, "regenerate: python -m motus_core.sim.urdf_export"
    for f in meshes:
        assert (ROOT / "urdf" / "meshes" / f).is_file()
    assert "Interbotix" in (ROOT / "urdf" / "meshes" / "README.md").read_text()


def test_joints_and_limits_match_the_profile(urdf):
    assert sorted(urdf.actuated_joint_names) == sorted(PROFILE.joint_names)
    for i, name in enumerate(PROFILE.joint_names):
        lim = urdf.joint_map[name].limit
        assert lim.lower == pytest.approx(PROFILE.position_lower[i])
        assert lim.upper == pytest.approx(PROFILE.position_upper[i])
    for side in ("left", "right"):
        assert PROFILE.ee_links[side] in urdf.link_map
        for finger in ("left_finger", "right_finger"):
            j = urdf.joint_map[f"{side}_{finger}"]
            assert j.type == "prismatic" and j.mimic.joint == f"{side}_gripper"
    for cam in PROFILE.cameras.values():
        assert cam.frame_id in urdf.link_map


def test_meshes_resolve_and_load():
    u = load_urdf(ROOT / PROFILE.urdf, build_scene_graph=True, load_meshes=True)
    assert len(u.scene.geometry) >= 20  # 2 x 10 arm meshes + the table


def test_forward_kinematics_equals_mujoco(urdf):
    kin = Kinematics(build_model("transfer_cube", render_mesh_cell=0.0))
    m, d = kin.model, kin.data
    rng = np.random.default_rng(0)
    worst_pos = worst_rot = 0.0
    checked = 0
    for _ in range(4):
        q = rng.uniform(kin.layout.lower, kin.layout.upper)
        q[[6, 13]] = rng.uniform(0.1, 0.9, 2)
        kin.set(q)
        mujoco.mj_camlight(m, d)
        urdf.update_cfg(dict(zip(SIM_JOINT_NAMES, q)))
        for b in range(1, m.nbody):
            name = _link_name(m.body(b).name)
            if name not in urdf.link_map:
                continue
            t = urdf.get_transform(name, "world")
            worst_pos = max(worst_pos, np.abs(t[:3, 3] - d.xpos[b]).max())
            worst_rot = max(worst_rot, np.abs(t[:3, :3] - d.xmat[b].reshape(3, 3)).max())
            checked += 1
        for role, cam in CAMERA_NAMES.items():
            cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, cam)
            t = urdf.get_transform(PROFILE.cameras[role].frame_id, "world")
            worst_pos = max(worst_pos, np.abs(t[:3, 3] - d.cam_xpos[cid]).max())
            worst_rot = max(worst_rot, np.abs(t[:3, :3] - d.cam_xmat[cid].reshape(3, 3) @ MJ_TO_OPTICAL).max())
    assert checked >= 4 * 24  # every arm link incl. fingers, both arms
    assert worst_pos < 1e-6 and worst_rot < 1e-6
