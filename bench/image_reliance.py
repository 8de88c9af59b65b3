"""Does a policy trained on the simulated robot use its cameras? Its chunks on held-out demonstrations,
with each frame's own images and with another episode's images at the same frame (state unchanged).

    python bench/image_reliance.py --policy /work/proof2/train/final --seeds 2000:2006

Held-out demonstrations come from the scripted demonstrator (ROS-free, cameras rendered at the
profile's size) on seeds the proof never records or evaluates on. For each condition frame the mean
|chunk - demonstrated future targets| (joint units; ``--targets commands``, the default: the
demonstrator's commands in effect at each frame, what ``motus-convert`` writes to ``actions/``;
``--targets measured``: the future measured joints, for checkpoints trained before) is reported with the own images, with another
episode's images, and for the mean future of the other episodes (what a model that ignores the cube
would predict at best). A ratio other/own near 1.00 means the actions do not depend on the images;
for transfer_cube, where the cube's position is only in the images, such a policy cannot succeed
except by chance. ``motus-train``'s validation reports a looser check
(``val/action_mae_other_images``: another held-out sample's images, mostly another moment, so the arm
differs too); this one isolates the cube. Final JSON line: ``own_error``, ``other_images_error``,
``image_reliance`` (other / own), ``mean_future_error``, per frame.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MUJOCO_GL", "egl")

TASK = "transfer_cube"
INSTRUCTION = "transfer the cube to the other arm"
FRAMES = (0, 30, 60, 90, 120, 150)


def demonstrations(seeds: range) -> list[tuple[list[dict], np.ndarray, np.ndarray]]:
    from motus_core.robot_profile import load_profile
    from motus_core.sim.dataset import render_demonstration

    cam = load_profile("sim_aloha").cameras["high"]
    out = []
    for seed in seeds:
        demo = render_demonstration(TASK, seed, cam.width, cam.height)
        if not demo.success:
            print(f"seed {seed}: the demonstration failed, left out", file=sys.stderr)
            continue
        out.append((demo.frames, demo.q, demo.targets))
    return out


def demonstrations_and_policy(seeds: str, policy_dir: str, at_least: int = 1):
    """Held-out demonstrations of seeds ``A:B`` and the policy questioned on them (CPU, the simulated
    robot's profile, the task's instruction); exits when fewer than ``at_least`` demonstrations succeeded."""
    from motus_core.policies import load_policy
    from motus_core.robot_profile import load_profile

    a, b = (int(x) for x in seeds.split(":"))
    eps = demonstrations(range(a, b))
    if len(eps) < at_least:
        raise SystemExit(f"{len(eps)} successful demonstrations of seeds {seeds}; need at least {at_least}")
    policy = load_policy(policy_dir, device="cpu", profile=load_profile("sim_aloha"))
    policy.set_instruction(INSTRUCTION)
    return eps, policy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="a policy directory (motus-train checkpoint)")
    ap.add_argument("--seeds", default="2000:2006", help="held-out demonstration seeds A:B (default 2000:2006)")
    ap.add_argument("--targets", choices=("commands", "measured"), default="commands",
                    help="what the chunks are compared with: the demonstrator's commands (default; the datasets' actions/) "
                         "or the future measured joints (checkpoints trained on qpos)")
    ns = ap.parse_args(argv)
    from motus_core.policy.base import Observation, PolicyRequest

    eps, policy = demonstrations_and_policy(ns.seeds, ns.policy, at_least=2)

    def predict(images, state, c):
        req = PolicyRequest(Observation(images=images, state=state, stamp=c / 30.0), instruction=INSTRUCTION, seed=0)
        return policy.predict(req).actions

    rows = []
    try:
        for c in FRAMES:
            own, other, mean_future = [], [], []
            for i, (frames, q, cmd) in enumerate(eps):
                k = 48
                if c + k + 1 > len(q):
                    continue
                ref = cmd if ns.targets == "commands" else q
                target = ref[c + 1:c + 1 + k]
                own.append(np.abs(predict(frames[c], q[c], c)[:k] - target).mean())
                frames_j = eps[(i + 1) % len(eps)][0]
                other.append(np.abs(predict(frames_j[min(c, len(frames_j) - 1)], q[c], c)[:k] - target).mean())
                col = 2 if ns.targets == "commands" else 1
                others = [e[col][c + 1:c + 1 + k] for j, e in enumerate(eps) if j != i and c + k + 1 <= len(e[1])]
                mean_future.append(np.abs(np.mean(others, axis=0) - target).mean())
            if own:
                row = {"frame": c, "own_error": float(np.mean(own)), "other_images_error": float(np.mean(other)),
                       "mean_future_error": float(np.mean(mean_future))}
                row["image_reliance"] = row["other_images_error"] / max(row["own_error"], 1e-12)
                rows.append(row)
                print(f"frame {c:3d}: own images {row['own_error']:.4f}, another episode's images {row['other_images_error']:.4f} "
                      f"(x{row['image_reliance']:.3f}), other episodes' mean future {row['mean_future_error']:.4f}", flush=True)
    finally:
        policy.close()
    summary = {"policy": ns.policy, "seeds": ns.seeds, "targets": ns.targets, "episodes": len(eps),
               "own_error": float(np.mean([r["own_error"] for r in rows])),
               "other_images_error": float(np.mean([r["other_images_error"] for r in rows])),
               "mean_future_error": float(np.mean([r["mean_future_error"] for r in rows])), "frames": rows}
    summary["image_reliance"] = summary["other_images_error"] / max(summary["own_error"], 1e-12)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
