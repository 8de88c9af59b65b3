"""Forward kinematics of action chunks through the URDF, and the marker geometry built on it.

The reference is the simulator's own end-effector positions (MuJoCo, ``motus_core.sim.ee_positions``)
for the same joint vectors, and yourdfpy's scene-graph FK for the same URDF.
"""
from __future__ import annotations

import numpy as np
import pytest

from motus_core.robot_profile import load_profile
from motus_core.viz.kinematics import KinematicsError, chain_fk_for_profile, load_urdf
from motus_core.viz.markers import (DELETE_ALL, LINE_STRIP, SPHERE_LIST, MarkerStyle, TrajectoryMarkers, gripper_openness,
                                    marker_errors, time_colors)
from motus_core.viz.frames import VizInputError
from motus_core.viz.render import render_markers_topdown
from test.viz_data import assert_matches_golden, fixed_chunk

PROFILE = load_profile("sim_aloha")
URDF = PROFILE.resolve(PROFILE.urdf)
pytestmark = pytest.mark.skipif(not URDF.is_file(), reason=f"{URDF} not built yet (the simulator's URDF export)")


@pytest.fixture(scope="module")
def fk():
    return chain_fk_for_profile(PROFILE)


def _random_chunks(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(PROFILE.position_lower), np.asarray(PROFILE.position_upper)
    return lo + (hi - lo) * rng.random((n, PROFILE.dof))


def test_fk_equals_the_sims_end_effector_positions(fk):
    from motus_core.sim import ee_positions

    q = np.concatenate([fixed_chunk(PROFILE), _random_chunks(64)])
    ours = fk.positions(q)
    truth = ee_positions(q, point="gripper_link")  # MuJoCo, (N, 2, 3) [left, right]
    for k, side in enumerate(("left", "right")):
        err = np.abs(ours[side] - truth[:, k]).max()
        assert err < 1e-6, f"{side}: URDF FK differs from MuJoCo by {err} m"
    # not a trivially constant answer: the paths move
    assert np.ptp(ours["left"], axis=0).max() > 0.1


def test_fk_equals_yourdfpy_scene_graph(fk):
    """The cached chain composes the same transforms yourdfpy computes with its scene graph."""
    import yourdfpy

    from motus_core.viz.kinematics import urdf_joint_names_for_profile

    urdf = yourdfpy.URDF.load(str(URDF), load_meshes=False, build_collision_scene_graph=False, load_collision_meshes=False)
    names = urdf_joint_names_for_profile(PROFILE)
    q = _random_chunks(5, seed=3)
    ours = fk.transforms(q)
    for i in range(len(q)):
        cfg = {names[c]: float(v) for c, v in zip(PROFILE.joint_names, q[i]) if names[c] in urdf.actuated_joint_names}
        urdf.update_cfg(cfg)
        for side, link in PROFILE.ee_links.items():
            ref = urdf.get_transform(link, PROFILE.base_frame)
            assert np.abs(ours[side][i] - ref).max() < 1e-9


def test_fk_errors():
    urdf = load_urdf(URDF)
    from motus_core.viz.kinematics import ChainFK

    with pytest.raises(KinematicsError):
        ChainFK(urdf, "no_such_link", PROFILE.ee_links, {})
    with pytest.raises(KinematicsError):
        ChainFK(urdf, PROFILE.base_frame, {"left": "no_such_link"}, {})
    with pytest.raises(KinematicsError, match="no column"):
        ChainFK(urdf, PROFILE.base_frame, PROFILE.ee_links, {})  # chain joints not mapped to the joint vector
    with pytest.raises(KinematicsError):
        load_urdf(URDF.parent / "missing.urdf")
    fk = chain_fk_for_profile(PROFILE)
    with pytest.raises(VizInputError):
        fk.positions(np.full((3, 14), np.nan))
    with pytest.raises(VizInputError):
        fk.positions(np.zeros((3, 2)))


def test_marker_geometry_of_a_chunk(fk):
    tm = TrajectoryMarkers(PROFILE, fk, MarkerStyle())
    q = fixed_chunk(PROFILE)
    path = tm.path(q, joint_names=PROFILE.joint_names, stamp=100.0, step_period=1 / 30, chunk_id=5, model="m", mode="joint")
    markers = tm.markers(path, executed=10)
    assert markers[0].kind == DELETE_ALL
    assert marker_errors(markers, chunk_length=len(q)) == []
    strips = [m for m in markers if m.kind == LINE_STRIP]
    assert len(strips) == 2 and all(m.frame_id == "world" for m in strips)
    # executed part grey, the rest on the time ramp
    grey = np.asarray(MarkerStyle().executed_rgba)
    assert np.allclose(strips[0].colors[:10], grey) and np.allclose(strips[0].colors[10:], time_colors(len(q))[10:])
    spheres = {m.ns: m for m in markers if m.kind == SPHERE_LIST}
    openness = gripper_openness(q[:, 6], 1.0, 0.0)
    assert spheres["left/gripper"].colors[-1][0] > spheres["left/gripper"].colors[-1][1]  # closed at the end: red
    assert openness[0] == 1.0 and openness[-1] == 0.0
    # the chunk's columns may come in any order with names
    perm = np.random.default_rng(1).permutation(14)
    path2 = tm.path(q[:, perm], joint_names=[PROFILE.joint_names[i] for i in perm], stamp=100.0, step_period=1 / 30)
    assert np.allclose(path2.ee["left"], path.ee["left"])
    # time bookkeeping
    assert path.executed(100.0) == 0 and path.executed(100.0 + 10 / 30) == 10 and path.executed(1e9) == len(q)
    # a structural error is detected by the checker (not a tautology)
    broken = tm.markers(path)
    broken[1].points = broken[1].points[:-1]
    assert marker_errors(broken, chunk_length=len(q))


def test_bad_chunks_are_rejected(fk):
    tm = TrajectoryMarkers(PROFILE, fk)
    q = fixed_chunk(PROFILE, 8)
    for kwargs in [dict(positions=q[:, :13]), dict(positions=np.zeros((0, 14))), dict(positions=np.where(q > 0, np.inf, q)),
                   dict(positions=q, joint_names=["a"] * 14), dict(positions=q, joint_names=list(PROFILE.joint_names[:13]) + ["x"]),
                   dict(positions=q, step_period=0.0), dict(positions=q, stamp=float("nan"))]:
        args = dict(stamp=0.0, step_period=1 / 30)
        args.update(kwargs)
        positions = args.pop("positions")
        with pytest.raises(VizInputError):
            tm.path(positions, **args)


def test_golden_markers_topdown(fk):
    tm = TrajectoryMarkers(PROFILE, fk)
    path = tm.path(fixed_chunk(PROFILE), stamp=0.0, step_period=1 / 30, chunk_id=3, model="tiny_motus", mode="joint")
    img = render_markers_topdown(tm.markers(path, executed=12), size=(480, 360),
                                 title="chunk 3: 12 of 48 executed")
    assert_matches_golden(img, "markers_topdown.png")


def test_tf_tree_composes_to_the_same_end_effector_pose(fk):
    """UrdfTree (the recorder's /tf where no robot_state_publisher runs) agrees with the chain FK."""
    from motus_core.viz.kinematics import UrdfTree, urdf_joint_names_for_profile

    tree = UrdfTree(load_urdf(URDF))
    names = urdf_joint_names_for_profile(PROFILE)
    q = _random_chunks(3, seed=7)
    ours = fk.transforms(q)
    for i in range(len(q)):
        values = {names[c]: float(v) for c, v in zip(PROFILE.joint_names, q[i])}
        parent_of = {c: (p, m) for p, c, m in tree.fixed_transforms() + tree.moving_transforms(values)}
        for side, link in PROFILE.ee_links.items():
            t, frame = np.eye(4), link
            while frame != PROFILE.base_frame:
                parent, m = parent_of[frame]
                t = m @ t
                frame = parent
            assert np.abs(t - ours[side][i]).max() < 1e-9
