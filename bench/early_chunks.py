"""How well does a transfer_cube policy's *first* chunks place the right gripper? Open loop, on held-out
demonstrations: from frames early in the episode, where the chunk puts the right gripper's TCP at one
later moment of the approach, against where the demonstration has it then.

    python bench/early_chunks.py --policy /work/proof12/train/final --seeds 2000:2004

Closed loop (``bench/closed_loop_sim.py``) the arm follows the first chunks, and a policy that has only seen
the demonstrated path continues from where they led it. This measures the start of that drift: the error
of chunks predicted from the home pose (frame 0, only the high camera sees the cube) down to frames just
before the target moment. ``--target`` is the frame compared (default 48 = 1.6 s, the end of the approach,
before the close); a chunk from frame c predicts it with action target - c - 1, so c < target <= c + 48.
Final JSON line: ``rows`` (episode, frame, sample, error x/y/z cm) and ``error_cm_by_frame`` (median |error|
per condition frame).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from image_reliance import INSTRUCTION, demonstrations_and_policy  # noqa: E402

RIGHT = 1  # ee_positions: [left, right]


def blind_baseline_cm(wants: np.ndarray) -> tuple[float, float]:
    """Median error (norm, |y|; cm) of predicting each episode's target TCP as the mean of the other episodes': what
    a policy that does not see where the cube is can reach. A chunk error near it means the image is not read."""
    if len(wants) < 2:
        return float("nan"), float("nan")
    others = (wants.sum(0) - wants) / (len(wants) - 1)
    d = 100 * (wants - others)
    return float(np.median(np.linalg.norm(d, axis=1))), float(np.median(np.abs(d[:, 1])))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="a policy directory (motus-train checkpoint)")
    ap.add_argument("--seeds", default="2000:2004", help="held-out demonstration seeds A:B (default 2000:2004)")
    ap.add_argument("--samples", type=int, default=2, help="chunks sampled per frame (noise seeds 0..n-1)")
    ap.add_argument("--target", type=int, default=48, help="the frame whose TCP is compared (default 48 = 1.6 s)")
    ap.add_argument("--frames", default="0,8,16,24,32,40", help="condition frames (comma-separated, < --target)")
    ns = ap.parse_args(argv)
    from motus_core.policy.base import Observation, PolicyRequest
    from motus_core.sim import ee_positions

    frames_at = [int(x) for x in ns.frames.split(",")]
    if any(not (0 <= c < ns.target) for c in frames_at):
        raise SystemExit("every condition frame must be within 0..target-1")
    eps, policy = demonstrations_and_policy(ns.seeds, ns.policy)
    rows = []
    wants = []
    try:
        for e, (frames, q, cmd) in enumerate(eps):
            want = ee_positions(cmd[ns.target], "tcp")[RIGHT]
            wants.append(want)
            for c in frames_at:
                k = ns.target - c - 1
                for s in range(ns.samples):
                    act = policy.predict(PolicyRequest(Observation(images=frames[c], state=q[c], stamp=c / 30.0),
                                                       instruction=INSTRUCTION, seed=s)).actions
                    if k >= act.shape[0]:
                        raise SystemExit(f"frame {c}: the chunk ({act.shape[0]} actions) does not reach frame {ns.target}")
                    d = 100 * (ee_positions(act[k], "tcp")[RIGHT] - want)
                    rows.append({"episode": e, "frame": c, "sample": s, "x_cm": float(d[0]), "y_cm": float(d[1]), "z_cm": float(d[2])})
                    print(f"episode {e} frame {c} sample {s}: TCP at frame {ns.target} off by x {d[0]:+.1f} y {d[1]:+.1f} "
                          f"z {d[2]:+.1f} cm", flush=True)
    finally:
        policy.close()
    by_frame = {c: float(np.median([np.linalg.norm([r["x_cm"], r["y_cm"], r["z_cm"]]) for r in rows if r["frame"] == c]))
                for c in frames_at}
    by_frame_y = {c: float(np.median([abs(r["y_cm"]) for r in rows if r["frame"] == c])) for c in frames_at}
    blind, blind_y = blind_baseline_cm(np.asarray(wants))
    print(f"a policy blind to the cube (the other demonstrations' mean TCP at frame {ns.target}): {blind:.1f} cm "
          f"(y {blind_y:.1f})", flush=True)
    print(json.dumps({"policy": ns.policy, "seeds": ns.seeds, "target_frame": ns.target, "error_cm_by_frame": by_frame,
                      "error_y_cm_by_frame": by_frame_y, "blind_baseline_cm": blind, "blind_baseline_y_cm": blind_y,
                      "rows": rows}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
