"""A recording process for the robustness tests (no ROS): offers synthetic messages to an
``EpisodeRecorder`` at a steady pace so a test can kill it, fill its disk, or let it finish.

    python test/data_record_worker.py ROOT EPISODE_ID --storage mcap --frames 300 --period 0.01

Prints ``OFFERED <n>`` every 10 frames and ``FINAL <json>`` (the episode metadata) at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from motus_core.data.bag_writer import EpisodeRecorder, RecorderError, profile_snapshot, profile_topics  # noqa: E402
from motus_core.robot_profile import load_profile  # noqa: E402
from test.data_helpers import NS, image_cdr, joints_cdr, joint_value  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("episode_id")
    ap.add_argument("--storage", default="mcap")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--period", type=float, default=0.01, help="seconds between frames")
    ap.add_argument("--hw", type=int, nargs=2, default=(240, 320))
    ap.add_argument("--min-free-mb", type=float, default=0.0)
    ap.add_argument("--flush", type=float, default=0.1)
    args = ap.parse_args()
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # RLIMIT_FSIZE: get EFBIG from write() instead of dying
    prof = load_profile("sim_aloha")
    rec = EpisodeRecorder(args.root, prof.name, storage=args.storage, profile_snapshot=profile_snapshot(prof),
                          min_free_bytes=int(args.min_free_mb * 2**20), flush_period_s=args.flush)
    try:
        rec.start(profile_topics(prof), task="pick_cube", instruction="pick up the cube", episode_id=args.episode_id, stamp_ns=1000 * NS)
    except RecorderError as exc:
        print(f"START_FAILED {exc}", flush=True)
        return 3
    names = list(prof.joint_names)
    for k in range(args.frames):
        t = 1000 * NS + k * (NS // 30)
        for role, cam in prof.cameras.items():
            rec.offer(cam.topic, image_cdr(role, k, t, tuple(args.hw)), t)
        for i in range(7):
            tj = t + i * (NS // 200)
            raw = joints_cdr(names, [joint_value(j, tj) for j in range(14)], tj)
            rec.offer(prof.state_sources[0].topic, raw, tj)
            rec.offer(prof.leader_sources[0].topic, raw, tj)
        if k % 10 == 9:
            print(f"OFFERED {k + 1}", flush=True)
        if not rec.recording:
            break
        time.sleep(args.period)
    meta = rec.stop("success", stamp_ns=1000 * NS + args.frames * (NS // 30))
    print("FINAL " + json.dumps(dataclasses.asdict(meta)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
