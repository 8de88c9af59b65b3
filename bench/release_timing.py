"""When does a transfer_cube policy open the right gripper? Its chunks around the hand-over of held-out
demonstrations, frame by frame, against the demonstrator's own release.

    python bench/release_timing.py --policy /work/proof11/train/final --seeds 2000:2003

For each held-out demonstration (the scripted demonstrator, ROS-free, seeds the proof never records or
evaluates on) and each condition frame from 30 frames before the left gripper's close command to 30
after, the policy predicts ``--samples`` chunks (seeds 0, 1, ...) from that frame's images and measured
joints. Reported per frame: after how many actions the demonstrator's right-gripper command crosses 0.5
(opening) and the left one crosses 0.5 (closing), and the same for each predicted chunk (-1: not within
the chunk).

What it shows: once the left fingers rest on the cube, nothing the policy observes changes until the
right gripper measurably opens. If the demonstration waits there, the policy cannot tell how long it has
waited and predicts the release the same number of actions ahead at every frame of the wait; when that
number is beyond what the executor runs of each chunk (RTC: ``execution_horizon`` 16), the release never
runs. Final JSON line: ``frames`` (rows as printed), ``release_ahead_after_close`` (the predicted release
index, mean over the frames between the left close command and the demonstrated release),
``true_release_after_close`` (the demonstrator's, same frames), ``release_never_predicted_after_close``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from image_reliance import INSTRUCTION, demonstrations_and_policy  # noqa: E402  (same held-out demonstrations)

LEFT_GRIPPER, RIGHT_GRIPPER = 6, 13


def crossing(x: np.ndarray, opening: bool) -> int:
    """Index of the first value past 0.5 (above when opening, below when closing); -1 when none."""
    hit = np.nonzero(x > 0.5 if opening else x < 0.5)[0]
    return int(hit[0]) if hit.size else -1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="a policy directory (motus-train checkpoint)")
    ap.add_argument("--seeds", default="2000:2003", help="held-out demonstration seeds A:B (default 2000:2003)")
    ap.add_argument("--samples", type=int, default=3, help="chunks sampled per frame (noise seeds 0..n-1)")
    ap.add_argument("--window", type=int, default=30, help="frames before and after the left close command")
    ns = ap.parse_args(argv)
    from motus_core.policy.base import Observation, PolicyRequest

    eps, policy = demonstrations_and_policy(ns.seeds, ns.policy)
    rows = []
    try:
        for e, (frames, q, cmd) in enumerate(eps):
            opened = int(np.argmax(cmd[:, LEFT_GRIPPER] > 0.5))  # the left gripper opens on its way first
            close = opened + crossing(cmd[opened:, LEFT_GRIPPER], opening=False)
            for c in range(max(0, close - ns.window), min(len(q) - 1, close + ns.window), 5):
                future = cmd[c + 1:c + 49]
                pred = []
                for s in range(ns.samples):
                    req = PolicyRequest(Observation(images=frames[c], state=q[c], stamp=c / 30.0), instruction=INSTRUCTION, seed=s)
                    act = policy.predict(req).actions
                    pred.append([crossing(act[:, RIGHT_GRIPPER], True), crossing(act[:, LEFT_GRIPPER], False)])
                row = {"episode": e, "frame": c, "after_close": c - close,
                       "true_release": crossing(future[:, RIGHT_GRIPPER], True), "true_close": crossing(future[:, LEFT_GRIPPER], False),
                       "predicted_release": [p[0] for p in pred], "predicted_close": [p[1] for p in pred]}
                rows.append(row)
                print(f"episode {e} frame {c} ({c - close:+d} from the left close command): right opens after "
                      f"{row['true_release']} actions (demonstration), predicted {row['predicted_release']}; "
                      f"left closes after {row['true_close']}, predicted {row['predicted_close']}", flush=True)
    finally:
        policy.close()
    after = [r for r in rows if r["after_close"] >= 0 and r["true_release"] > 0]  # the close commanded, the release still ahead
    pred_after = [p for r in after for p in r["predicted_release"] if p >= 0]
    true_after = [r["true_release"] for r in after]
    summary = {"policy": ns.policy, "seeds": ns.seeds, "episodes": len(eps), "frames": rows,
               "release_ahead_after_close": float(np.mean(pred_after)) if pred_after else None,
               "release_never_predicted_after_close": sum(p < 0 for r in after for p in r["predicted_release"]),
               "true_release_after_close": float(np.mean(true_after)) if true_after else None}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
