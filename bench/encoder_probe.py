"""Do a Motus policy's frozen image encoders carry the cube's position? A linear probe.

    python bench/encoder_probe.py --policy /work/proof2/train/final [--poses 120]

The simulator is reset to ``--poses`` transfer_cube poses (seeds 10000.., never recorded or evaluated);
for each, the three cameras are rendered at the profile's size and turned into the policy's model image
(the policy node's preprocessing), then into (a) the VAE latent of that image and (b) the VLM's hidden
states, both as the policy computes them. Ridge regression (features standardised, dual form: far more
features than poses) from each to the cube's (x, y) is fitted on 80 % of the poses and scored on the
rest, at three regularisation strengths, against the error of predicting the training mean; the
down-sampled pixels are the reference. A small held-out error means the position is in the features and
a model on top of them could learn to use it: the proof's question is then whether training does.

Final JSON line: ``mean_baseline_m`` and, per feature set, the best held-out mean absolute error (m).
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

INSTRUCTION = "transfer the cube to the other arm"
ROLES = ("high", "left_wrist", "right_wrist")


def ridge_heldout(X: np.ndarray, Y: np.ndarray, lam: float, train_fraction: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Held-out MAE per target of ridge regression, and of predicting the training mean."""
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    n = int(train_fraction * len(X))
    Xtr, Xte, Ytr, Yte = X[:n], X[n:], Y[:n], Y[n:]
    ym = Ytr.mean(0)
    alpha = np.linalg.solve(Xtr @ Xtr.T + lam * X.shape[1] * np.eye(n), Ytr - ym)
    pred = Xte @ (Xtr.T @ alpha) + ym
    return np.abs(pred - Yte).mean(0), np.abs(Yte - ym).mean(0)


def features(policy_dir: str, poses: int) -> dict[str, np.ndarray]:
    import torch

    from motus_core.models.motus.policy import create
    from motus_core.preprocessing import motus_model_image, to_unit_chw
    from motus_core.robot_profile import load_profile
    from motus_core.sim.render import CameraRenderer
    from motus_core.sim.simulator import AlohaSim

    torch.set_num_threads(1)
    policy = create(policy_dir)
    hw = (policy.config.video_height, policy.config.video_width)
    cam = load_profile("sim_aloha").cameras["high"]
    sim = AlohaSim("transfer_cube")
    feats: dict[str, list] = {"pixels": [], "vae_latent": [], "vlm_hidden": [], "cube_xy": []}
    with CameraRenderer(sim.model, cam.width, cam.height) as renderer:
        for i in range(poses):
            objects = sim.reset(seed=10000 + i)
            image = motus_model_image({r: renderer.render(sim.data, r).copy() for r in ROLES}, hw)
            with torch.no_grad():
                latent = policy.vae.encode_image(torch.from_numpy(to_unit_chw(image))[None])
                hidden = policy.vlm(image, INSTRUCTION)
            feats["pixels"].append(image[::4, ::4].astype(np.float32).ravel() / 255.0)
            feats["vae_latent"].append(latent.float().numpy().ravel())
            feats["vlm_hidden"].append(hidden.float().numpy().ravel())
            feats["cube_xy"].append(next(iter(objects.values())).position[:2])
    return {k: np.asarray(v, dtype=np.float64) for k, v in feats.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="a Motus policy directory (motus-train checkpoint)")
    ap.add_argument("--poses", type=int, default=120, help="reset poses (default 120: 96 to fit, 24 to score)")
    ns = ap.parse_args(argv)
    if ns.poses < 20:
        ap.error("--poses must be at least 20")
    f = features(ns.policy, ns.poses)
    y = f.pop("cube_xy")
    result: dict = {"policy": ns.policy, "poses": ns.poses}
    for name, X in f.items():
        best = None
        for lam in (1e-4, 1e-2, 1.0):
            err, base = ridge_heldout(X, y, lam)
            print(f"{name:11s} ({X.shape[1]} features) lambda {lam:g}: held-out error x {err[0] * 1000:.1f} mm, "
                  f"y {err[1] * 1000:.1f} mm (mean: {base[0] * 1000:.1f}, {base[1] * 1000:.1f} mm)", flush=True)
            if best is None or err.mean() < best.mean():
                best = err
        result[f"{name}_mae_m"] = [round(float(v), 4) for v in best]
        result["mean_baseline_m"] = [round(float(v), 4) for v in base]
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
