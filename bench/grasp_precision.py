"""Where does a transfer_cube policy close the right gripper? Its chunks before the grasp of held-out
demonstrations, against the demonstrator's own grasp, in centimetres.

    python bench/grasp_precision.py --policy /work/proof11/train/final --seeds 2000:2006

For each held-out demonstration (the scripted demonstrator, ROS-free, seeds the proof never records or
evaluates on) and each condition frame from ``--lead`` frames before the right gripper's close command
to 5 frames before it, the policy predicts ``--samples`` chunks from that frame's images and measured
joints. For each chunk: the action at which it commands the right gripper shut (first value below 0.5)
and where that action puts the right gripper's TCP (between the fingertips; forward kinematics of the
simulated arm), against where the demonstration closes it. The demonstrator closes with the TCP over
the cube's centre (within 1 mm in x and y), so the distance is how far from the cube the policy would
close.

The reference a policy that ignores the cube could reach: ``cube_spread_cm``, the mean distance of each
demonstration's grasp point from the mean of the others' (the cube's position varies by seed). A
policy that localises the cube lands well inside it (the cube is 4 cm wide; the right fingers close along
y). Final JSON line: ``grasp_error_cm`` (median over chunks that close), ``grasp_error_x_cm`` / ``_y_cm``
/ ``_z_cm`` (median size of each world component), ``close_timing_error`` (median predicted -
demonstrated close index, actions), ``y_beyond_tolerance`` (the fraction of closing chunks further
than ``--y-tolerance-cm`` off along y), ``never_closed`` (chunks that do not close in time),
``cube_spread_cm``, ``rows``.
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
from release_timing import RIGHT_GRIPPER, crossing  # noqa: E402

RIGHT = 1  # ee_positions: [left, right]


def grasp_frame(cmd: np.ndarray) -> int:
    """The frame whose command first shuts the right gripper after it opened for the grasp."""
    opened = int(np.argmax(cmd[:, RIGHT_GRIPPER] > 0.5))
    return opened + crossing(cmd[opened:, RIGHT_GRIPPER], opening=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="a policy directory (motus-train checkpoint)")
    ap.add_argument("--seeds", default="2000:2006", help="held-out demonstration seeds A:B (default 2000:2006)")
    ap.add_argument("--samples", type=int, default=2, help="chunks sampled per frame (noise seeds 0..n-1)")
    ap.add_argument("--lead", type=int, default=30, help="first condition frame: this many frames before the close command")
    ap.add_argument("--y-tolerance-cm", type=float, default=1.0,
                    help="the grasp's tolerance along y, where the fingers close (bench/grasp_tolerance.py: 1.0 cm)")
    ns = ap.parse_args(argv)
    from motus_core.policy.base import Observation, PolicyRequest
    from motus_core.sim import ee_positions

    eps, policy = demonstrations_and_policy(ns.seeds, ns.policy, at_least=2)
    grasps = [grasp_frame(cmd) for _, _, cmd in eps]
    points = np.array([ee_positions(cmd[g], "tcp")[RIGHT] for (_, _, cmd), g in zip(eps, grasps)])
    spread = [float(np.linalg.norm(points[i] - np.delete(points, i, axis=0).mean(axis=0))) for i in range(len(points))]
    rows = []
    try:
        for e, ((frames, q, cmd), g) in enumerate(zip(eps, grasps)):
            for c in range(max(0, g - ns.lead), g - 4, 5):
                true_k = g - c - 1  # action k of a chunk from frame c targets frame c + 1 + k
                for s in range(ns.samples):
                    req = PolicyRequest(Observation(images=frames[c], state=q[c], stamp=c / 30.0), instruction=INSTRUCTION, seed=s)
                    act = policy.predict(req).actions
                    k = crossing(act[:, RIGHT_GRIPPER], opening=False)
                    row = {"episode": e, "frame": c, "before_close": g - c, "sample": s, "true_close": true_k, "predicted_close": k}
                    if k >= 0:
                        d = ee_positions(act[k], "tcp")[RIGHT] - points[e]
                        row.update(error_cm=100 * float(np.linalg.norm(d)), error_x_cm=100 * float(d[0]),
                                   error_y_cm=100 * float(d[1]), error_z_cm=100 * float(d[2]))
                    rows.append(row)
                    where = (f"{row['error_cm']:.1f} cm from the demonstrated grasp (x {row['error_x_cm']:+.1f}, "
                             f"y {row['error_y_cm']:+.1f}, z {row['error_z_cm']:+.1f})"
                             if k >= 0 else "never")
                    print(f"episode {e} frame {c} ({g - c} before the close command), sample {s}: closes after {k} actions "
                          f"(demonstration {true_k}), {where}", flush=True)
    finally:
        policy.close()
    closed = [r for r in rows if r["predicted_close"] >= 0]
    med = (lambda key: float(np.median([abs(r[key]) for r in closed])) if closed else None)
    summary = {"policy": ns.policy, "seeds": ns.seeds, "episodes": len(eps), "chunks": len(rows),
               "grasp_error_cm": med("error_cm"), "grasp_error_x_cm": med("error_x_cm"), "grasp_error_y_cm": med("error_y_cm"),
               "grasp_error_z_cm": med("error_z_cm"),
               "close_timing_error": float(np.median([r["predicted_close"] - r["true_close"] for r in closed])) if closed else None,
               "y_beyond_tolerance": (sum(abs(r["error_y_cm"]) > ns.y_tolerance_cm for r in closed) / len(closed)) if closed else None,
               "never_closed": len(rows) - len(closed), "cube_spread_cm": 100 * float(np.mean(spread)), "rows": rows}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
