"""MoLA policy-step latency: random weights, the real policy path (``MolaPolicy.predict``).

    python bench/mola.py --config reduced --device cpu                  # CPU: full-size MoIDM/head/Video Former, reduced UNet
    python bench/mola.py --config aloha --device cuda --dtype bf16      # GPU: our full-size model (3 cameras, SVD UNet)
    python bench/mola.py --config official_calvin --device cuda         # the released CALVIN geometry (2 cameras)
    python bench/mola.py --config path/to/mola_config.yaml              # any MolaConfig file

One step = preprocessing (mosaic split + letterbox), CLIP text (cached after the first step), VAE
encode + truncated SVD UNet pass on all cameras in one batched call (``video``), the three IDMs
(``moidm``), the Video Former, the head's context encoder + ``--steps`` sampler steps (``head``),
de-normalisation. The last line printed is JSON: ``step_ms_p50`` / ``step_ms_p90`` over ``--iters``
steps after ``--warmup`` steps, the per-stage split (p50 ms), the parameter counts and the targets
(paper: 129.6 ms on an RTX 4090 with 2 cameras; ours: <= 65 ms on an H100 with 3 cameras).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

STAGES = ("preprocess", "text", "video", "moidm", "video_former", "head")


def reduced_config():
    """Full-size trainable policy (MoIDM, Video Former, head, 3 cameras, 16 frames at 256 px) on an
    SVD-topology UNet with 1/5 of the widths, so a CPU can run it; the tap is then 512 channels."""
    from motus_core.models.mola.config import MolaConfig

    cfg = MolaConfig.aloha().to_dict()
    cfg["video"]["unet"] = {"block_out_channels": [64, 128, 256, 256], "num_attention_heads": [1, 2, 4, 4],
                            "cross_attention_dim": 512, "transformer_layers_per_block": 1, "layers_per_block": 1}
    cfg["video"]["vae"] = {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1,
                           "down_block_types": ["DownEncoderBlock2D"] * 4}
    cfg["video"]["text"] = {"hidden_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8, "intermediate_size": 1024,
                            "projection_dim": 512}
    return MolaConfig.from_dict(cfg)


def load_config(name: str):
    from motus_core.models.mola.config import MolaConfig

    if name == "reduced":
        return reduced_config()
    if name in ("aloha", "official_calvin", "tiny"):
        return getattr(MolaConfig, name)()
    return MolaConfig.load(name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="reduced", help="tiny | reduced | aloha | official_calvin | <mola_config.yaml>")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the config's, 10)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from motus_core.models.mola.policy import build_policy
    from motus_core.policy.base import Observation, PolicyRequest
    from motus_core.preprocessing import MinMaxNormalizer
    from motus_core.robot_profile import load_profile

    cfg = load_config(args.config)
    for key in ("pretrained", "text_encoder"):  # random weights from the architecture, never a download
        setattr(cfg.video, key, "")
    profile = load_profile("sim_aloha")
    if profile.dof != cfg.action_dim:
        profile = None
    lower = profile.position_lower if profile else [-1.0] * cfg.action_dim
    upper = profile.position_upper if profile else [1.0] * cfg.action_dim
    torch.manual_seed(0)
    policy = build_policy(cfg, None, MinMaxNormalizer(lower, upper, "bench"), device=args.device, profile=None,
                          options={"dtype": args.dtype, "num_steps": args.steps})
    rng = np.random.default_rng(0)
    images = {r: rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for r in ("high", "left_wrist", "right_wrist")}
    state = np.asarray(profile.home if profile else np.zeros(cfg.action_dim), dtype=np.float64)
    req = PolicyRequest(observation=Observation(images=images, state=state, stamp=0.0), instruction="transfer the cube")
    totals, parts = [], {k: [] for k in STAGES}
    for i in range(args.warmup + args.iters):
        chunk = policy.predict(req)
        if i >= args.warmup:
            totals.append(chunk.timing["total"] * 1e3)
            for k in STAGES:
                parts[k].append(chunk.timing.get(k, 0.0) * 1e3)
    net = policy.model.net
    count = lambda m: int(sum(p.numel() for p in m.parameters()))  # noqa: E731
    result = {
        "config": args.config, "device": str(args.device), "dtype": str(policy.dtype).replace("torch.", ""),
        "cameras": len(cfg.cameras), "frames": cfg.video.num_frames, "image_size": cfg.video.image_size,
        "sampler_steps": int(args.steps or cfg.head.sampling_steps), "iters": args.iters,
        "step_ms_p50": float(np.percentile(totals, 50)), "step_ms_p90": float(np.percentile(totals, 90)),
        **{f"{k}_ms_p50": float(np.percentile(v, 50)) for k, v in parts.items()},
        "params": {"unet": count(policy.model.video.unet), "moidm": count(net.moidm.idms),
                   "idm_input": count(net.moidm.idm_input), "video_former": count(net.video_former), "head": count(net.head)},
        "reference": {"paper_rtx4090_ms": 129.6, "target_h100_ms": 65.0},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
