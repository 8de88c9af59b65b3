"""motus-convert: bags -> Motus / RoboTwin / LeRobot v3; alignment, exclusion rules, robustness, idempotency."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from motus_core.cli.convert import main as convert_main
from motus_core.data.convert import ConvertConfig, Converter
from motus_core.data.episode import read_metadata
from motus_core.data.extract import SyncOptions
from motus_core.data.motus_layout import load_qpos
from motus_core.data.reader import MotusDataset
from motus_core.data.video import read_video
from motus_core.models.motus.text_encoder import build_tiny_text_encoder
from test.data_helpers import NS, expected_qpos, grey, record_synthetic

START = 1000 * NS
PERIOD = NS // 30


@pytest.fixture(scope="module")
def encoder():
    return build_tiny_text_encoder(seed=0)


def _cfg(src, out, encoder=None, **kw) -> ConvertConfig:
    return ConvertConfig(episodes_dir=src, output_dir=out, text_encoder=encoder, progress=False, **kw)


def _regions(frame: np.ndarray) -> dict[str, float]:
    """Mean grey of the interior of each camera in a 360x320 mosaic of 240x320 cameras."""
    return {"high": float(frame[20:220, 20:300].mean()), "left_wrist": float(frame[260:340, 20:140].mean()),
            "right_wrist": float(frame[260:340, 180:300].mean())}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and "sync_reports" not in p.parts and p.name not in ("conversion_report.json",)}


def test_motus_layout_frames_qpos_instructions_stats(tmp_path, encoder):
    src, out = tmp_path / "eps", tmp_path / "motus"
    rec = record_synthetic(src, "ep_a", frames=60)
    record_synthetic(src, "ep_b", frames=45, recorder=rec, instruction="stack the blocks", task="stack")
    summary = Converter(_cfg(src, out, encoder)).run()
    assert {e.episode_id: e.status for e in summary.episodes} == {"ep_a": "converted", "ep_b": "converted"}
    for eid, task, n, text in (("ep_a", "pick_cube", 60, "pick up the cube"), ("ep_b", "stack", 45, "stack the blocks")):
        tdir = out / task
        video = read_video(tdir / "videos" / f"{eid}.mp4")
        qpos = torch.load(tdir / "qpos" / f"{eid}.pt")
        # the wrist cameras lag 5 ms behind the high camera: frame 0 has no wrist image yet and is trimmed
        assert video.shape == (n - 1, 360, 320, 3) and qpos.dtype == torch.float32 and tuple(qpos.shape) == (n - 1, 14)
        for i in (0, 10, n - 2):
            k = i + 1  # high-camera frame of output frame i
            r = _regions(video[i])
            assert abs(r["high"] - grey("high", k)) < 2.5
            # as-of: the latest wrist image stamped at or before the high frame (k - 1, 28 ms old)
            assert abs(r["left_wrist"] - grey("left_wrist", k - 1)) < 2.5
            assert abs(r["right_wrist"] - grey("right_wrist", k - 1)) < 2.5
        times = START + np.arange(1, n) * PERIOD
        np.testing.assert_allclose(qpos.numpy(), expected_qpos("sim_aloha", times), atol=1e-6)
        # the training targets: the leader arms as of the same frames (the helper's leader = follower + 0.01)
        actions = torch.load(tdir / "actions" / f"{eid}.pt")
        assert actions.dtype == torch.float32 and tuple(actions.shape) == (n - 1, 14)
        np.testing.assert_allclose(actions.numpy(), expected_qpos("sim_aloha", times) + 0.01, atol=1e-5)
        assert (tdir / "instructions" / f"{eid}.txt").read_text().strip() == text
        emb = torch.load(tdir / "instructions" / f"{eid}.pt")
        assert emb.dtype == torch.bfloat16 and emb.shape[1] == encoder.dim
        torch.testing.assert_close(emb.float(), encoder.encode([text])[0].to(torch.bfloat16).float())
        report = json.loads((out / "sync_reports" / f"{eid}.json").read_text())
        assert report["included"] and report["frames"] == n - 1 and report["trimmed_start_frames"] == 1
        left = report["streams"]["/cam_left_wrist/image_raw"]
        assert left["gaps"] == [] and 28.0 < left["age_ms_max"] < 29.0 and abs(left["latency_ms_mean"] - 2.0) < 1e-6
        assert report["streams"]["/joint_states"]["age_ms_max"] <= 5.0
    stats = json.loads((out / "stat.json").read_text())["sim_aloha"]
    # one normaliser for state and targets: min/max over the qpos and the actions of both episodes
    all_q = np.concatenate([load_qpos(out / t / sub / f"{e}.pt") for t, e in (("pick_cube", "ep_a"), ("stack", "ep_b"))
                            for sub in ("qpos", "actions")])
    np.testing.assert_allclose(stats["min"], all_q.min(0), atol=1e-6)
    np.testing.assert_allclose(stats["max"], all_q.max(0), atol=1e-6)
    assert stats["file_count"] == 2 and stats["action_dim"] == 14
    # the training reader reads it: targets from actions/, the state from qpos/
    ds = MotusDataset(out, seed=0)
    s = ds[0]
    assert s["action_sequence"].shape == (48, 14) and float(s["action_sequence"].min()) >= -1e-6
    ref = next(r for r in ds.episodes if r.episode_id == "ep_a")
    smp = ds.sample(ref, 3)
    q, a = load_qpos(ref.qpos), load_qpos(ref.actions)
    np.testing.assert_allclose(ds.normalizer.denormalize(smp["action_sequence"].numpy()), a[4:52], atol=1e-5)
    np.testing.assert_allclose(ds.normalizer.denormalize(smp["initial_state"].numpy()), q[3], atol=1e-5)
    assert s["instruction"] in ("pick up the cube", "stack the blocks") and s["language_embedding"].shape[1] == encoder.dim


def _profile_without_leader(tmp_path: Path) -> Path:
    """sim_aloha as recorded on a robot without leader arms (no ``leader`` topics)."""
    import yaml

    from motus_core.robot_profile import config_dir

    raw = yaml.safe_load((config_dir() / "robots" / "sim_aloha.yaml").read_text())
    raw.pop("leader")
    path = tmp_path / "profiles" / "sim_aloha.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_actions_follower_writes_no_targets(tmp_path):
    src = tmp_path / "eps"
    rec = record_synthetic(src, "ep_a", frames=60)
    record_synthetic(src, "ep_b", frames=60, recorder=rec)
    follower = tmp_path / "follower"
    summary = Converter(_cfg(src, follower, actions="follower")).run()
    assert {e.status for e in summary.episodes} == {"converted"}
    assert not (follower / "pick_cube" / "actions").exists()
    stats = json.loads((follower / "stat.json").read_text())["sim_aloha"]
    all_q = np.concatenate([load_qpos(p) for p in sorted((follower / "pick_cube" / "qpos").glob("*.pt"))])
    np.testing.assert_allclose(stats["max"], all_q.max(0), atol=1e-6)  # no leader offset in the statistics
    ds = MotusDataset(follower, seed=0)
    ref = ds.episodes[0]
    assert ref.actions is None
    q = load_qpos(ref.qpos)
    np.testing.assert_allclose(ds.normalizer.denormalize(ds.sample(ref, 0)["action_sequence"].numpy()), q[1:49], atol=1e-5)
    # switching the option re-converts (it changes the bytes) and the targets appear
    summary = Converter(_cfg(src, follower, actions="auto")).run()
    assert {e.status for e in summary.episodes} == {"converted"}
    assert sorted(p.name for p in (follower / "pick_cube" / "actions").glob("*.pt")) == ["ep_a.pt", "ep_b.pt"]


def test_actions_leader_without_a_recorded_leader_stream_fails_that_episode(tmp_path):
    src, out = tmp_path / "eps", tmp_path / "motus"
    record_synthetic(src, "arms_only", frames=60, profile=str(_profile_without_leader(tmp_path)))
    summary = Converter(_cfg(src, out, actions="leader")).run()
    (outcome,) = summary.episodes
    assert outcome.status == "failed" and "no leader/command stream was recorded" in outcome.reason
    assert not (out / "pick_cube").exists()
    summary = Converter(_cfg(src, out, actions="auto")).run()
    assert [e.status for e in summary.episodes] == ["converted"]
    assert (out / "pick_cube" / "qpos" / "arms_only.pt").is_file() and not (out / "pick_cube" / "actions").exists()
    with pytest.raises(ValueError, match="actions must be one of"):
        _cfg(src, out, actions="commands")


def test_only_complete_episodes_and_removal_after_discard(tmp_path):
    src, out = tmp_path / "eps", tmp_path / "motus"
    rec = record_synthetic(src, "good", frames=20)
    record_synthetic(src, "failed_try", frames=20, recorder=rec, outcome="failure")
    record_synthetic(src, "interrupted", frames=20, recorder=rec, stop=False)
    rec.stop("unknown", incomplete_reason="recorder shut down during the episode (SIGINT/SIGTERM)")
    record_synthetic(src, "thrown_away", frames=20, recorder=rec, stop=False)
    rec.discard("operator pressed discard")
    record_synthetic(src, "running", frames=20, recorder=rec, stop=False)  # this process is still recording it
    summary = Converter(_cfg(src, out)).run()
    got = {e.episode_id: (e.status, e.reason) for e in summary.episodes}
    assert got["good"][0] == "converted"
    assert got["failed_try"] == ("skipped", "outcome failure (converting success, unknown)")
    assert got["interrupted"][0] == "skipped" and got["interrupted"][1].startswith("incomplete (recorder shut down")
    assert got["thrown_away"] == ("skipped", "discarded: operator pressed discard")
    assert got["running"] == ("skipped", "still recording")
    assert sorted(p.stem for p in (out / "pick_cube" / "qpos").glob("*.pt")) == ["good"]
    # with failures requested, the failure is converted too
    assert {e.episode_id: e.status for e in Converter(_cfg(src, out, outcomes=("success", "failure"))).run().episodes}["failed_try"] == "converted"
    rec.stop("success")
    # discarding an episode after it was converted removes it from the dataset on the next run
    rec.discard("changed my mind", discard_last=True)
    summary = Converter(_cfg(src, out)).run()
    got = {e.episode_id: e.status for e in summary.episodes}
    assert got["running"] == "skipped"  # stopped, then discarded before any conversion saw it complete
    assert got["failed_try"] == "removed"
    assert sorted(p.stem for p in (out / "pick_cube" / "qpos").glob("*.pt")) == ["good"]
    assert json.loads((out / "stat.json").read_text())["sim_aloha"]["file_count"] == 1


def test_gap_excluded_unless_forced(tmp_path):
    src = tmp_path / "eps"
    record_synthetic(src, "gappy", frames=60, drop_left=tuple(range(20, 32)))  # 12 frames = 400 ms without the left wrist
    summary = Converter(_cfg(src, tmp_path / "strict")).run()
    (e,) = summary.episodes
    assert e.status == "excluded" and "/cam_left_wrist/image_raw: 1 gap(s)" in e.reason
    assert not (tmp_path / "strict" / "pick_cube" / "qpos" / "gappy.pt").exists()
    report = json.loads((tmp_path / "strict" / "sync_reports" / "gappy.json").read_text())
    (gap,) = report["streams"]["/cam_left_wrist/image_raw"]["gaps"]
    assert not report["included"] and gap["frames"] >= 9 and gap["duration_s"] > 0.1
    summary = Converter(_cfg(src, tmp_path / "forced", sync=SyncOptions(force=True))).run()
    assert summary.episodes[0].status == "converted" and "--force" in summary.episodes[0].reason
    assert (tmp_path / "forced" / "pick_cube" / "qpos" / "gappy.pt").exists()


def test_streams_ending_early_are_trimmed_not_gaps(tmp_path):
    """Stopping a recording cuts streams of different latency a few frames apart: trailing frames after
    the follower joints' last message are trimmed (reported), the episode is kept."""
    src = tmp_path / "eps"
    record_synthetic(src, "cut", frames=60, joints_stop_early_ns=300_000_000)
    (e,) = Converter(_cfg(src, tmp_path / "motus")).run().episodes
    report = json.loads((tmp_path / "motus" / "sync_reports" / "cut.json").read_text())
    assert e.status == "converted" and report["problems"] == []
    assert 6 <= report["trimmed_end_frames"] <= 10 and report["frames"] == 59 - report["trimmed_end_frames"]
    last = report["frame_stamps_ns"][-1]
    assert last <= START + 60 * PERIOD - 300_000_000 + int(0.1 * NS)


def test_corrupted_and_truncated_bags_are_skipped_with_a_report(tmp_path):
    src, out = tmp_path / "eps", tmp_path / "motus"
    rec = record_synthetic(src, "fine", frames=30)
    record_synthetic(src, "truncated", frames=30, recorder=rec)
    record_synthetic(src, "garbled", frames=30, recorder=rec)
    mcap = src / "truncated" / "bag" / "bag.mcap"
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    mcap = src / "garbled" / "bag" / "bag.mcap"
    data = bytearray(mcap.read_bytes())
    data[len(data) // 3: len(data) // 3 + 4096] = b"\xff" * 4096
    mcap.write_bytes(bytes(data))
    summary = Converter(_cfg(src, out)).run()
    got = {e.episode_id: e for e in summary.episodes}
    assert got["fine"].status == "converted"
    assert got["truncated"].status == "failed" and "bag" in got["truncated"].reason
    assert got["garbled"].status == "failed"
    for eid in ("truncated", "garbled"):
        rep = json.loads((out / "sync_reports" / f"{eid}.json").read_text())
        assert rep["included"] is False and rep["problems"]
        assert not (out / "pick_cube" / "qpos" / f"{eid}.pt").exists()
    run_report = json.loads((out / "conversion_report.json").read_text())
    assert run_report["counts"]["failed"] == 2 and run_report["counts"]["converted"] == 1


def test_rerun_is_idempotent(tmp_path, encoder):
    src, out = tmp_path / "eps", tmp_path / "motus"
    rec = record_synthetic(src, "a", frames=20)
    record_synthetic(src, "b", frames=20, recorder=rec)
    Converter(_cfg(src, out, encoder)).run()
    before = _digest(out)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "pick_cube").rglob("*") if p.is_file()}
    summary = Converter(_cfg(src, out, encoder)).run()
    assert {e.status for e in summary.episodes} == {"up_to_date"}
    assert _digest(out) == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing was rewritten
    # a changed source is converted again, and only that one
    meta = read_metadata(src / "b")
    meta.instruction = "pick up the red cube"
    from motus_core.data.episode import write_metadata

    write_metadata(src / "b", meta)
    summary = Converter(_cfg(src, out, encoder)).run()
    assert {e.episode_id: e.status for e in summary.episodes} == {"a": "up_to_date", "b": "converted"}
    assert (out / "pick_cube" / "instructions" / "b.txt").read_text().strip() == "pick up the red cube"


def test_robotwin_layout(tmp_path, encoder):
    src, out = tmp_path / "eps", tmp_path / "robotwin"
    rec = record_synthetic(src, "r1", frames=55)
    record_synthetic(src, "r2", frames=55, recorder=rec)
    Converter(_cfg(src, out, encoder, format="robotwin")).run()
    tdir = out / "clean" / "pick_cube"
    assert json.loads((tdir / "episode_ids.json").read_text()) == {"0": "r1", "1": "r2"}
    emb = torch.load(tdir / "umt5_wan" / "0.pt")
    assert isinstance(emb, list) and len(emb) == 1 and emb[0].dtype == torch.bfloat16
    assert (tdir / "metas" / "1.txt").read_text().strip() == "pick up the cube"
    assert tuple(torch.load(tdir / "qpos" / "1.pt").shape) == (54, 14)
    ds = MotusDataset(out, normalize=False, seed=0, num_video_frames=8, video_action_freq_ratio=2, global_downsample_rate=3)
    s = ds.sample(0, 0)
    assert s["action_sequence"].shape == (16, 14) and s["language_embedding"].shape[1] == encoder.dim


def test_lerobot_v3_dataset(tmp_path):
    from motus_core.data.lerobot_v3 import read_lerobot_episode

    src, out = tmp_path / "eps", tmp_path / "lerobot"
    rec = record_synthetic(src, "l1", frames=40)
    record_synthetic(src, "l2", frames=30, recorder=rec, instruction="stack the blocks")
    summary = Converter(_cfg(src, out, format="lerobot")).run()
    assert [e.status for e in summary.episodes] == ["converted", "converted"]
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 30 and info["total_episodes"] == 2
    assert info["total_frames"] == 39 + 29 and info["total_tasks"] == 2 and info["robot_type"] == "sim_aloha"
    assert info["features"]["observation.images.cam_high"]["shape"] == [240, 320, 3]
    assert info["features"]["observation.state"]["shape"] == [14]
    tasks = pq.read_table(out / "meta" / "tasks.parquet")
    assert tasks.column("task").to_pylist() == ["pick up the cube", "stack the blocks"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    eps = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [e["length"] for e in eps] == [39, 29] and [e["dataset_from_index"] for e in eps] == [0, 39]
    assert eps[1]["videos/observation.images.cam_high/from_timestamp"] == pytest.approx(39 / 30)
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert stats["observation.state"]["count"] == [68] and len(stats["observation.images.cam_high"]["mean"]) == 3
    for e, n in ((0, 40), (1, 30)):
        ep = read_lerobot_episode(out, e)
        times = START + np.arange(1, n) * PERIOD
        np.testing.assert_allclose(ep["state"], expected_qpos("sim_aloha", times), atol=1e-6)
        np.testing.assert_allclose(ep["action"], ep["state"] + 0.01, atol=1e-5)  # action = leader arms
        np.testing.assert_allclose(ep["timestamp"], np.arange(n - 1) / 30, atol=1e-6)
        high = ep["images"]["observation.images.cam_high"]
        assert high.shape == (n - 1, 240, 320, 3)
        assert [round(float(high[i].mean())) for i in (0, n - 2)] == [grey("high", 1), grey("high", n - 1)]
        left = ep["images"]["observation.images.cam_left_wrist"]
        assert abs(float(left[5].mean()) - grey("left_wrist", 5)) < 1.5
    before = _digest(out)
    assert {e.status for e in Converter(_cfg(src, out, format="lerobot")).run().episodes} == {"up_to_date"}
    assert _digest(out) == before


def test_cli(tmp_path, capsys):
    src, out = tmp_path / "eps", tmp_path / "motus"
    record_synthetic(src, "c1", frames=15)
    assert convert_main([str(src), str(out), "--tiny-text-encoder", "--quiet"]) == 0
    assert "1 converted" in capsys.readouterr().out
    assert (out / "pick_cube" / "instructions" / "c1.pt").is_file() and (out / "stat.json").is_file()
    assert convert_main([str(src), str(out), "--tiny-text-encoder", "--quiet"]) == 0
    assert "1 up_to_date" in capsys.readouterr().out
    assert (out / "pick_cube" / "actions" / "c1.pt").is_file()  # the leader stream: the default targets
    assert convert_main([str(src), str(out), "--tiny-text-encoder", "--quiet", "--actions", "follower"]) == 0
    assert "1 converted" in capsys.readouterr().out and not (out / "pick_cube" / "actions" / "c1.pt").exists()
    with pytest.raises(SystemExit) as exc:
        convert_main([str(src), str(out), "--actions", "future"])
    assert exc.value.code == 2 and "invalid choice: 'future'" in capsys.readouterr().err


def _layout_dirs(root: Path) -> list[str]:
    """Folders under ``root`` apart from the converter's own reports and caches."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir()
                  and not {"sync_reports", ".embedding_cache"} & set(p.relative_to(root).parts))


def test_cli_fails_when_no_episode_converts_and_leaves_no_empty_folders(tmp_path, capsys):
    """Issue 15 item 2: every episode failed -> non-zero exit naming the failures; no empty layout folders."""
    src, out = tmp_path / "eps", tmp_path / "motus"
    rec = record_synthetic(src, "t1", frames=15)
    record_synthetic(src, "t2", frames=15, recorder=rec)
    for eid in ("t1", "t2"):
        mcap = src / eid / "bag" / "bag.mcap"
        mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    assert convert_main([str(src), str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "no episode converted (2 failed)" in captured.err
    assert "t1: failed:" in captured.out and "t2: failed:" in captured.out
    assert _layout_dirs(out) == []
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["counts"]["failed"] == 2 and all(e["reason"] for e in report["episodes"])
    # the same for the RoboTwin layout, where each episode failing also must not leave numbers behind
    assert convert_main([str(src), str(tmp_path / "rt"), "--format", "robotwin", "--tiny-text-encoder", "--quiet"]) == 1
    assert _layout_dirs(tmp_path / "rt") == []


def test_robotwin_without_text_encoder_is_refused_before_writing(tmp_path, capsys):
    src, out = tmp_path / "eps", tmp_path / "rt"
    record_synthetic(src, "n1", frames=15)
    assert convert_main([str(src), str(out), "--format", "robotwin", "--quiet"]) == 2
    assert "needs instruction embeddings" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ValueError, match="text encoder"):
        Converter(_cfg(src, out, format="robotwin"))


def test_excluded_episode_leaves_no_empty_folders(tmp_path):
    src, out = tmp_path / "eps", tmp_path / "motus"
    record_synthetic(src, "gappy", frames=40, drop_left=tuple(range(10, 22)))
    (e,) = Converter(_cfg(src, out)).run().episodes
    assert e.status == "excluded" and _layout_dirs(out) == []


def test_formats_are_registered_modules():
    """Each output format is one module of motus_core.data.formats registering itself; the CLI lists them."""
    from motus_core.cli.convert import build_parser
    from motus_core.data.formats import OutputFormat, format_names, get_format

    assert format_names() == ("motus", "lerobot", "robotwin")
    for name in format_names():
        cls = get_format(name)
        assert issubclass(cls, OutputFormat) and cls.name == name and cls.__module__ == f"motus_core.data.formats.{name}"
    assert get_format("robotwin").embeddings == "required" and get_format("lerobot").rebuild
    with pytest.raises(ValueError, match="format must be one of"):
        get_format("rlds")
    assert "robotwin" in build_parser().format_help()
