"""motus-sim-dataset and the simulator's exact depth / segmentation / flow (MoLA stage-II sim targets).

The ground truth is checked against things it was not computed from: depth + intrinsics + camera
pose must put the cube's pixels on the cube (its pose and size from the model), the exact flow must
warp the *rendered RGB* of a later frame onto an earlier one far better than no motion does, and a
static camera's background must not move.
"""
from __future__ import annotations

import json

import mujoco
import numpy as np
import pytest

from motus_core.data.motus_layout import find_episodes, load_qpos, read_stat_file
from motus_core.data.reader import MotusDataset
from motus_core.data.video import read_video
from motus_core.preprocessing import mosaic_layout_of, split_mosaic
from motus_core.sim import AlohaSim
from motus_core.cli.sim_dataset import main
from motus_core.sim.dataset import SimDatasetOptions, generate
from motus_core.sim.ground_truth import (SEMANTIC_CLASSES, GroundTruthEpisode, GroundTruthError, ground_truth_path,
                                         semantic_labels)

HW = (96, 128)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim_ds")
    opts = SimDatasetOptions(task="transfer_cube", episodes=1, height=HW[0], width=HW[1], ground_truth=("high", "left_wrist"))
    summary = generate(root, opts, progress=False)
    return root, opts, summary


def _episode(root):
    (ref,) = find_episodes(root)
    return ref, GroundTruthEpisode(ground_truth_path(ref.task_dir, ref.episode_id))


def test_generator_writes_an_aligned_motus_episode(dataset):
    root, opts, summary = dataset
    assert summary["episodes"] == 1 and summary["failed"] == 0
    ref, gt = _episode(root)
    frames = read_video(ref.video)
    qpos = load_qpos(ref.qpos)
    assert frames.shape[1:3] == (HW[0] + HW[0] // 2, HW[1])
    assert len(frames) == len(qpos) == gt.frames > 150  # the whole demonstration at 30 Hz
    assert gt.size("high") == HW and gt.size("left_wrist") == (HW[0] // 2, HW[1] // 2)  # as in the mosaic
    # the targets: the demonstrator's commands in effect at each frame (as the converter aligns a leader stream)
    from motus_core.sim import AlohaSim
    from motus_core.sim.dataset import commands_in_effect
    from motus_core.sim.demonstrator import ScriptedDemonstrator, run_episode

    cmds = []
    run_episode(AlohaSim("transfer_cube"), ScriptedDemonstrator("transfer_cube"), int(ref.episode_id.removeprefix("seed")),
                control_rate=opts.fps, on_tick=lambda obs, cmd: cmds.append(np.asarray(cmd, np.float32)))
    actions = load_qpos(ref.actions)
    np.testing.assert_allclose(actions, commands_in_effect(cmds), atol=1e-6)
    np.testing.assert_array_equal(actions[1:], np.asarray(cmds[:-1]))
    assert np.abs(actions - qpos).max() > 0.3  # a gripper closed on the cube is commanded shut, measured open
    stats = read_stat_file(root / "stat.json")
    assert "sim_aloha" in stats
    np.testing.assert_allclose(stats["sim_aloha"]["min"], np.minimum(qpos.min(0), actions.min(0)), atol=1e-6)
    np.testing.assert_allclose(stats["sim_aloha"]["max"], np.maximum(qpos.max(0), actions.max(0)), atol=1e-6)
    sample = MotusDataset(root, seed=0, samples_per_episode=1)[0]
    assert sample["instruction"] == "transfer the cube to the other arm"
    assert sample["frame_indices"][0] == sample["cond_index"]


def test_rerun_is_idempotent_and_refuses_other_settings(dataset):
    root, opts, _ = dataset
    ref, _ = _episode(root)
    before = ref.video.stat().st_mtime_ns
    again = generate(root, opts, progress=False)
    assert again["episodes"] == 1 and ref.video.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="other settings"):
        generate(root, SimDatasetOptions(task="transfer_cube", episodes=1, height=HW[0], width=HW[1]), progress=False)
    assert main([str(root), "--ground-truth", "nose_camera", "--quiet"]) == 2


def test_depth_puts_cube_pixels_on_the_cube(dataset):
    root, _, _ = dataset
    _, gt = _episode(root)
    sim = AlohaSim("transfer_cube")
    box = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_BODY, "box")
    half = sim.model.geom_size[sim.model.geom_bodyid == box][0]  # the cube's half extents
    h, w, fx, fy, cx, cy = gt._intr["high"]
    t = 0
    body = gt.body("high", t)
    z = gt.depth("high", t)
    v, u = np.nonzero(body == box)
    assert len(u) > 10
    cam = np.stack([(u - cx) / fx * z[v, u], (v - cy) / fy * z[v, u], z[v, u], np.ones(len(u))])
    world = gt.camera_pose[t, gt.roles.index("high")] @ cam
    local = np.linalg.inv(gt.body_pose[t, box]) @ world
    # on the cube's surface (depth is stored in float16: ~1 mm at 1 m)
    assert np.all(np.abs(local[:3]).max(axis=1) <= half + 3e-3)
    sem = gt.semantic("high", t)
    assert SEMANTIC_CLASSES[int(np.bincount(sem[v, u]).argmax())] == "cube"


@pytest.mark.parametrize("role", ["high", "left_wrist"])
def test_exact_flow_warps_the_rendered_images(dataset, role):
    root, _, _ = dataset
    ref, gt = _episode(root)
    frames = read_video(ref.video)
    layout = mosaic_layout_of(frames.shape[1:3])
    gains = []
    for ta in (40, 80, 120):
        tb = ta + 3
        a = split_mosaic(frames[ta], layout)[role].astype(float)
        b = split_mosaic(frames[tb], layout)[role].astype(float)
        flow, valid = gt.flow(role, ta, tb)
        assert valid.mean() > 0.85
        hh, ww = valid.shape
        vv, uu = np.mgrid[0:hh, 0:ww]
        iu = np.clip(np.rint(uu + flow[..., 0]).astype(int), 0, ww - 1)
        iv = np.clip(np.rint(vv + flow[..., 1]).astype(int), 0, hh - 1)
        moving = valid & (np.linalg.norm(flow, axis=-1) > 1.0)
        if moving.sum() < 50:
            continue
        warped_err = np.abs(b[iv, iu] - a).mean(-1)[moving].mean()
        still_err = np.abs(b - a).mean(-1)[moving].mean()
        gains.append(still_err / max(warped_err, 1e-3))
    assert gains and min(gains) > 2.0, gains


def test_static_camera_background_does_not_move(dataset):
    root, _, _ = dataset
    _, gt = _episode(root)
    flow, valid = gt.flow("high", 50, 60)
    background = gt.body("high", 50) < 0
    assert valid[background].mean() > 0.95
    assert np.abs(flow[background & valid]).max() < 1e-3


def test_bad_requests_are_clear_errors(dataset, tmp_path):
    root, _, _ = dataset
    _, gt = _episode(root)
    with pytest.raises(GroundTruthError, match="no ground truth for camera"):
        gt.depth("right_wrist", 0)
    with pytest.raises(GroundTruthError, match="outside"):
        gt.flow("high", 0, gt.frames)
    with pytest.raises(GroundTruthError, match="no simulator ground truth"):
        GroundTruthEpisode(tmp_path / "missing.npz")
    labels = semantic_labels(AlohaSim("insertion").model)
    assert {SEMANTIC_CLASSES[i] for i in labels} == {"background", "left_arm", "left_gripper", "right_arm",
                                                     "right_gripper", "peg", "socket"}
    marker = json.loads((root / "transfer_cube" / ".sim_dataset.json").read_text())
    assert marker["settings"]["ground_truth"] == ["high", "left_wrist"]
