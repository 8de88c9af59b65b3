"""Motus layout writer + dataset reader: samples follow the official sampling rule (motus-spec §5.2)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from motus_core.data.motus_layout import DatasetError, find_episodes, write_dataset_stats, write_episode
from motus_core.data.reader import MotusDataset, collate, draw_condition_index, sampling_indices
from motus_core.data.video import read_video
from motus_core.preprocessing import resize_with_padding

GREY_STEP = 3  # frame t of episode e is filled with grey level (t * GREY_STEP + e) (codec-proof code of t)


def _frames(n: int, e: int, hw=(360, 320)) -> np.ndarray:
    f = np.empty((n, *hw, 3), np.uint8)
    for t in range(n):
        f[t] = t * GREY_STEP + e
    return f


def _qpos(n: int, e: int) -> np.ndarray:
    # column j of row t = t + 100 * j + 1000 * e: every entry says which frame and joint it is
    t = np.arange(n, dtype=np.float32)[:, None]
    return t + 100.0 * np.arange(14, dtype=np.float32)[None, :] + 1000.0 * e


def _decode_t(img_chw: torch.Tensor, e: int) -> int:
    # centre pixel of the padded model image lies inside the mosaic content
    v = float(img_chw[:, img_chw.shape[1] // 2, img_chw.shape[2] // 2].mean()) * 255.0
    return int(round((v - e) / GREY_STEP))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("motus")
    lengths = {0: 70, 1: 30}  # episode 1 is shorter than one chunk (K = 48): cond 0 + clamping
    for e, n in lengths.items():
        emb = torch.full((3 + e, 16), float(e), dtype=torch.bfloat16)
        write_episode(root / "pick_cube", str(e), _frames(n, e), _qpos(n, e), f"pick the cube {e}", emb)
    write_dataset_stats(root, "sim_aloha")
    return root, lengths


def test_layout_files_and_stats(dataset_dir):
    root, lengths = dataset_dir
    refs = find_episodes(root)
    assert [r.episode_id for r in refs] == ["0", "1"]
    task = root / "pick_cube"
    for e, n in lengths.items():
        q = torch.load(task / "qpos" / f"{e}.pt")
        assert q.dtype == torch.float32 and tuple(q.shape) == (n, 14)
        assert (task / "instructions" / f"{e}.txt").read_text().strip() == f"pick the cube {e}"
        assert tuple(torch.load(task / "instructions" / f"{e}.pt").shape) == (3 + e, 16)
        video = read_video(task / "videos" / f"{e}.mp4")
        assert video.shape == (n, 360, 320, 3)
        assert np.abs(video.astype(int) - _frames(n, e).astype(int)).mean() < 1.0
    stats = json.loads((root / "stat.json").read_text())["sim_aloha"]
    all_q = np.concatenate([_qpos(n, e) for e, n in lengths.items()])
    np.testing.assert_allclose(stats["min"], all_q.min(0), rtol=0, atol=1e-4)
    np.testing.assert_allclose(stats["max"], all_q.max(0), rtol=0, atol=1e-4)
    assert stats["action_dim"] == 14 and stats["file_count"] == 2
    # nothing half-written is left behind
    assert not list(task.rglob("*.tmp"))


def test_write_episode_rejects_mismatch(tmp_path):
    with pytest.raises(DatasetError, match="video frames"):
        write_episode(tmp_path / "t", "0", _frames(5, 0), _qpos(6, 0), "x")
    assert not (tmp_path / "t" / "qpos" / "0.pt").exists()
    assert not list((tmp_path / "t").rglob("*.mp4"))
    with pytest.raises(DatasetError, match="NaN"):
        q = _qpos(5, 0)
        q[2, 3] = np.nan
        write_episode(tmp_path / "t", "0", _frames(5, 0), q, "x")
    with pytest.raises(DatasetError, match="safe file stem"):
        write_episode(tmp_path / "t", "../evil", _frames(5, 0), _qpos(5, 0), "x")


def test_recorded_commands_are_the_targets_and_the_state_stays_measured(tmp_path):
    """``actions/<id>.pt``: the targets are its rows at the official action indices; qpos stays the state."""
    from motus_core.data.motus_layout import load_targets
    from motus_core.models.motus.train.data import check_episode

    root, n = tmp_path / "ds", 70
    q, cmd = _qpos(n, 0), _qpos(n, 0) + 0.5  # every commanded value says its frame and joint, 0.5 apart from the state
    files = write_episode(root / "pick_cube", "0", _frames(n, 0), q, "pick", torch.zeros(2, 16), actions=cmd)
    assert files.actions == root / "pick_cube" / "actions" / "0.pt"
    write_dataset_stats(root, "sim_aloha")
    stats = json.loads((root / "stat.json").read_text())["sim_aloha"]
    np.testing.assert_allclose(stats["max"], cmd.max(0), atol=1e-4)  # the targets' range is covered too
    np.testing.assert_allclose(stats["min"], q.min(0), atol=1e-4)
    assert stats["file_count"] == 1
    ds = MotusDataset(root, normalize=False)
    (ref,) = ds.episodes
    for cond in (0, 5, 21):
        smp = ds.sample(ref, cond)
        np.testing.assert_array_equal(smp["action_sequence"].numpy(), cmd[cond + 1:cond + 49])
        np.testing.assert_array_equal(smp["initial_state"].numpy(), q[cond])
    assert check_episode(ref, chunk=48, downsample=1, text_dim=16) == ""
    # a targets file that does not match the frames is an error, never a shifted target
    torch.save(torch.from_numpy(cmd[1:]), ref.actions)
    with pytest.raises(DatasetError, match=r"actions have shape \(69, 14\), qpos \(70, 14\)"):
        ds.sample(ref, 0)
    assert check_episode(ref, chunk=48, downsample=1, text_dim=16) == "actions have shape (69, 14), qpos (70, 14)"
    cmd_bad = cmd.copy()
    cmd_bad[7, 2] = np.inf
    torch.save(torch.from_numpy(cmd_bad), ref.actions)
    assert check_episode(ref, chunk=48, downsample=1, text_dim=16) == "actions contain NaN/inf (first at frame 7, joint 2)"
    # the writer refuses targets of another length, and leaves nothing behind
    with pytest.raises(DatasetError, match="actions have shape"):
        write_episode(root / "pick_cube", "1", _frames(n, 1), _qpos(n, 1), "pick", actions=cmd[:-1])
    assert not (root / "pick_cube" / "qpos" / "1.pt").exists() and not (root / "pick_cube" / "actions" / "1.pt").exists()
    # rewriting the episode without targets removes the old ones: the official rule (future qpos) again
    write_episode(root / "pick_cube", "0", _frames(n, 0), q, "pick", torch.zeros(2, 16))
    (ref,) = find_episodes(root)
    assert ref.actions is None and not (root / "pick_cube" / "actions" / "0.pt").exists()
    np.testing.assert_array_equal(load_targets(ref), q)


def test_samples_follow_official_rule(dataset_dir):
    root, lengths = dataset_dir
    ds = MotusDataset(root, seed=7)
    stats = json.loads((root / "stat.json").read_text())["sim_aloha"]
    lo, hi = np.array(stats["min"]), np.array(stats["max"])
    seen_conds = {0: set(), 1: set()}
    for i in range(12):
        s = ds[i]
        e = int(s["episode"].split("/")[1])
        n, c = lengths[e], s["cond_index"]
        seen_conds[e].add(c)
        # official: cond = randint(0, T - K - 1), or 0 when negative
        assert 0 <= c <= max(0, n - 48 - 1)
        expected_actions = [min(c + i + 1, n - 1) for i in range(48)]
        expected_video = [expected_actions[(j + 1) * 6 - 1] for j in range(8)]
        assert s["first_frame"].shape == (3, 384, 320) and s["first_frame"].dtype == torch.float32
        assert s["video_frames"].shape == (8, 3, 384, 320)
        assert 0.0 <= float(s["video_frames"].min()) and float(s["video_frames"].max()) <= 1.0
        assert _decode_t(s["first_frame"], e) == c
        assert [_decode_t(f, e) for f in s["video_frames"]] == expected_video
        raw_actions = s["action_sequence"].numpy() * (hi - lo) + lo
        np.testing.assert_allclose(raw_actions, _qpos(n, e)[expected_actions], atol=1e-2)
        np.testing.assert_allclose(s["initial_state"].numpy() * (hi - lo) + lo, _qpos(n, e)[c], atol=1e-2)
        assert s["instruction"] == f"pick the cube {e}"
        assert tuple(s["language_embedding"].shape) == (3 + e, 16)
    assert seen_conds[1] <= {0}


def test_frames_are_the_preprocessed_mosaic(dataset_dir):
    root, lengths = dataset_dir
    ds = MotusDataset(root, seed=0)
    s = ds.sample(0, 5)
    frames, qpos, instruction = ds.load_episode(0)
    assert frames.shape == (70, 360, 320, 3) and qpos.dtype == np.float32 and instruction == "pick the cube 0"
    expected = resize_with_padding(frames[5]).transpose(2, 0, 1).astype(np.float32) / 255.0
    np.testing.assert_allclose(s["first_frame"].numpy(), expected, atol=1e-6)
    # padding is black: a 360x320 mosaic gets 12-pixel bars top and bottom (official example)
    assert float(s["first_frame"][:, :12].max()) == 0.0 and float(s["first_frame"][:, -12:].max()) == 0.0


def test_seeded_determinism_and_sampling_coverage(dataset_dir):
    root, _ = dataset_dir
    a, b, c = MotusDataset(root, seed=1), MotusDataset(root, seed=1), MotusDataset(root, seed=2)
    picks_a = [(a[i]["episode"], a[i]["cond_index"]) for i in range(8)]
    assert picks_a == [(b[i]["episode"], b[i]["cond_index"]) for i in range(8)]
    assert picks_a != [(c[i]["episode"], c[i]["cond_index"]) for i in range(8)]
    # over many draws the long episode's cond covers the whole official range [0, 70 - 49]
    rng = random.Random(3)
    conds = {draw_condition_index(70, rng) for _ in range(2000)}
    assert conds == set(range(0, 22))


def test_sampling_indices_downsampled_config():
    # robotwin config: g = 3, ratio 2 -> actions c+3 .. c+48 (10 Hz), video c+6 .. c+48 (5 Hz)
    idx = sampling_indices(200, 10, num_video_frames=8, video_action_freq_ratio=2, global_downsample_rate=3)
    assert idx.actions == tuple(10 + 3 * (i + 1) for i in range(16))
    assert idx.video == tuple(10 + 6 * (j + 1) for j in range(8))


def test_collate_pads_text_like_official(dataset_dir):
    root, _ = dataset_dir
    ds = MotusDataset(root, seed=0)
    s0, s1 = ds.sample(0, 3), ds.sample(1, 0)
    batch = collate([s0, None, s1])
    assert batch["first_frame"].shape == (2, 3, 384, 320)
    assert batch["video_frames"].shape == (2, 8, 3, 384, 320)
    assert batch["action_sequence"].shape == (2, 48, 14) and batch["initial_state"].shape == (2, 14)
    emb = batch["language_embedding"]
    assert emb.shape == (2, 512, 16) and emb.dtype == torch.bfloat16
    assert torch.equal(emb[0, :3], s0["language_embedding"]) and float(emb[0, 3:].abs().max()) == 0.0
    assert torch.equal(emb[1, :4], s1["language_embedding"]) and float(emb[1, 4:].abs().max()) == 0.0
    assert batch["episode"] == ["pick_cube/0", "pick_cube/1"] and batch["cond_index"] == [3, 0]
    assert collate([None]) is None


def test_reader_without_stats_needs_explicit_choice(tmp_path):
    write_episode(tmp_path / "t", "0", _frames(10, 0), _qpos(10, 0), "x")
    with pytest.raises(DatasetError, match="stat.json"):
        MotusDataset(tmp_path)
    ds = MotusDataset(tmp_path, normalize=False, seed=0)
    s = ds.sample(0, 0)
    np.testing.assert_allclose(s["action_sequence"][:, 0].numpy(), [min(i + 1, 9) for i in range(48)])
    assert "language_embedding" not in s


def test_official_single_instruction_file_per_task(tmp_path):
    """Official DATA_FORMAT.md layout: task/instructions/{task.txt, task.pt} shared by all episodes."""
    task = tmp_path / "stack_cups"
    for e in range(2):
        write_episode(task, str(e), _frames(12, e), _qpos(12, e), "unused")
        (task / "instructions" / f"{e}.txt").unlink()
    (task / "instructions" / "stack_cups.txt").write_text("stack the cups\n")
    torch.save(torch.ones(1, 5, 8), task / "instructions" / "stack_cups.pt")  # [1, L, D] is accepted too
    ds = MotusDataset(tmp_path, normalize=False, seed=0)
    s = ds.sample(1, 0)
    assert s["instruction"] == "stack the cups" and tuple(s["language_embedding"].shape) == (5, 8)
