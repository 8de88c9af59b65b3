"""Record N episodes on the simulated robot (scripted demonstrator as teleoperator), convert, check.

    python bench/record_sim.py [--episodes 20] [--task transfer_cube] [--keep DIR]

The issue's end-to-end run: ``motus-launch graph:=record episodes:=N`` (sim + demonstrator +
recorder), then ``motus-convert`` to the Motus layout with a tiny umT5 encoder, then the checks of
``test/test_recorder_e2e_sim.py`` on every episode: each episode complete with its outcome, no
message dropped by the recorder, no topic missing; dataset qpos equal to the recorded follower joint
states as-of each frame (exactly); sampled video frames equal to the T-mosaic of the recorded
images (within codec tolerance) and reader samples equal to their preprocessed version;
instruction and embedding present; ``stat.json`` = min/max of the dataset. Final JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import motus_ros  # noqa: E402,F401  (DDS environment for the launched graph)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--task", default="transfer_cube", choices=("transfer_cube", "insertion"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="keep episodes and dataset here")
    args = ap.parse_args()

    from motus_core.data.bag_reader import read_messages
    from motus_core.data.convert import ConvertConfig, Converter
    from motus_core.data.episode import COMPLETE, list_episodes
    from motus_core.data.images import image_cdr_to_rgb
    from motus_core.data.reader import MotusDataset
    from motus_core.data.sync import NS, header_stamp_ns, parse_joint_state_cdr
    from motus_core.models.motus.text_encoder import build_tiny_text_encoder
    from motus_core.preprocessing import make_mosaic, resize_with_padding
    from motus_core.robot_profile import load_profile

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_record_sim_"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), MUJOCO_GL="egl")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "motus_ros.launcher", "graph:=record", f"episodes:={args.episodes}",
                          f"task:={args.task}", f"seed:={args.seed}", f"output_dir:={work / 'episodes'}"],
                         env=env, capture_output=True, text=True)
    record_s = time.perf_counter() - t0
    (work / "launch.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        print(json.dumps({"error": f"record graph exited with {res.returncode}", "log": str(work / 'launch.log')}))
        return 1

    profile = load_profile("sim_aloha")
    encoder = build_tiny_text_encoder(seed=0)
    t0 = time.perf_counter()
    summary = Converter(ConvertConfig(work / "episodes", work / "dataset", text_encoder=encoder, progress=False,
                                      outcomes=("success", "failure", "unknown"))).run()
    convert_s = time.perf_counter() - t0

    eps, unreadable = list_episodes(work / "episodes")
    ds = MotusDataset(work / "dataset", seed=0)
    stats = json.loads((work / "dataset" / "stat.json").read_text())[profile.stats_key]
    lo, hi = np.array(stats["min"]), np.array(stats["max"])
    cams = {r: c.topic for r, c in profile.cameras.items()}
    state_topic = profile.state_sources[0].topic
    names = list(profile.state_sources[0].names)
    problems, frame_err, qpos_exact, frames_total, all_q, episode_s = [], [], 0, 0, [], 0.0
    for ep in eps:
        m = ep.meta
        if m.state != COMPLETE or m.missing_topics or any(t.dropped for t in m.topics.values()):
            problems.append(f"{m.episode_id}: state {m.state}, missing {m.missing_topics}, drops {[t for t, r in m.topics.items() if r.dropped]}")
            continue
        ref = next((r for r in ds.episodes if r.episode_id == m.episode_id), None)
        if ref is None:
            continue  # left out by the converter: listed with its reason under "left_out"
        rep = json.loads((work / "dataset" / "sync_reports" / f"{m.episode_id}.json").read_text())
        stamps = np.array(rep["frame_stamps_ns"], np.int64)
        episode_s += rep["duration_s"]
        frames, qpos, instruction = ds.load_episode(ref)
        frames_total += len(frames)
        all_q.append(qpos)
        if instruction != m.instruction or not (ref.task_dir / "instructions" / f"{m.episode_id}.pt").is_file():
            problems.append(f"{m.episode_id}: instruction/embedding")
        imgs = {t: {} for t in cams.values()}
        js_t, js_q = [], []
        for msg in read_messages(ep.bag, {*cams.values(), state_topic}):
            if msg.topic == state_topic:
                st, n, pos = parse_joint_state_cdr(msg.data)
                lookup = {x: k for k, x in enumerate(n)}
                js_t.append(st)
                js_q.append([pos[lookup[x]] for x in names])
            else:
                imgs[msg.topic][header_stamp_ns(msg.data)] = bytes(msg.data)
        order = np.argsort(js_t)
        js_t, js_q = np.asarray(js_t)[order], np.asarray(js_q, np.float32)[order]
        idx = np.searchsorted(js_t, stamps, side="right") - 1
        if np.array_equal(qpos, js_q[idx]) and ((stamps - js_t[idx]) <= 0.1 * NS).all():
            qpos_exact += 1
        else:
            problems.append(f"{m.episode_id}: qpos differs from the recorded joint states")
        for i in np.linspace(0, len(stamps) - 2, 6).astype(int):
            t = int(stamps[i])
            chosen = {r: image_cdr_to_rgb(imgs[topic][max(s for s in imgs[topic] if s <= t)], "sensor_msgs/msg/Image")
                      for r, topic in cams.items()}
            expected = make_mosaic(chosen["high"], chosen["left_wrist"], chosen["right_wrist"])
            frame_err.append(float(np.abs(frames[i].astype(np.int16) - expected.astype(np.int16)).mean()))
            s = ds.sample(ref, int(i))
            model = resize_with_padding(expected).transpose(2, 0, 1).astype(np.float32) / 255.0
            if float(np.abs(s["first_frame"].numpy() - model).mean()) > 3.0 / 255:
                problems.append(f"{m.episode_id}: sample {i} differs from the preprocessed mosaic")
            if not np.allclose(s["initial_state"].numpy() * np.where(hi > lo, hi - lo, 1.0) + lo, qpos[i], atol=1e-5):
                problems.append(f"{m.episode_id}: normalised state at {i}")
    if all_q:
        q = np.concatenate(all_q)
        if not (np.allclose(lo, q.min(0), atol=1e-6) and np.allclose(hi, q.max(0), atol=1e-6)):
            problems.append("stat.json min/max differ from the dataset's qpos")
    result = {
        "episodes_requested": args.episodes, "episodes_recorded": len(eps), "unreadable": len(unreadable),
        "complete": sum(e.meta.state == COMPLETE for e in eps), "success": sum(e.meta.outcome == "success" for e in eps),
        "converted": summary.count("converted"),
        "left_out": {e.episode_id: e.reason for e in summary.episodes if e.status != "converted"},
        "frames": frames_total, "episode_seconds": round(episode_s, 1),
        "qpos_exact_episodes": qpos_exact, "frame_mean_abs_error_max": round(max(frame_err), 3) if frame_err else None,
        "record_wall_s": round(record_s, 1), "convert_s": round(convert_s, 1),
        "converter_realtime_factor": round(episode_s / convert_s, 2) if convert_s else None,
        # ok: every recorded episode is complete, every converted one passes the checks, and an episode
        # left out (e.g. a gap in a stream) is left out with its reason (sync report) - never silently
        "problems": problems[:20],
        "ok": not problems and len(eps) == args.episodes and all(e.status in ("converted", "excluded") for e in summary.episodes),
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
