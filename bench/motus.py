"""Motus chunk latency and memory: random weights, pre-encoded instruction (umT5 never loaded).

    python bench/motus.py --config reduced --device cpu --threads 1    # CPU: real geometry, reduced widths
    python bench/motus.py --config full --device cuda --dtype bfloat16  # GPU: the released model size

(On a CPU shared with other work, ``--threads 1`` avoids OpenMP spin contention, which otherwise
inflates the latency several-fold.)

Each chunk = one ``MotusPolicy.predict``: preprocessing (mosaic + resize-with-padding), VLM once,
VAE encode of the current image, ``--steps`` Euler steps of the tri-stream model, de-normalisation
(+ VAE decode of the predicted frames with ``--frames``). The last line printed is JSON with
``chunk_ms_p50``/``chunk_ms_p90`` over ``--chunks`` chunks (after one warm-up chunk), the per-stage
split (``vlm_ms``, ``vae_ms``, ``denoise_ms``, ...; p50), ``peak_mem_gb`` (CUDA: max allocated;
CPU: peak resident set of the process) and the parameter counts.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def percentile(values, q):
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=["tiny", "reduced", "full"], default="reduced")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--mode", default="vla", choices=["vla", "joint", "world_model", "idm", "video"])
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--frames", action="store_true", help="also decode the predicted frames (joint/video/world_model)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the layer function")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    ap.add_argument("--profile", default="aloha_agilex_2", help="robot profile (camera sizes, joints)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from motus_core.models.motus.config import PRESETS
    from motus_core.models.motus.policy import MotusRequest, create_random
    from motus_core.policy.base import Observation

    cfg = PRESETS[args.config]()
    t0 = time.perf_counter()
    policy = create_random(cfg, profile=args.profile, device=args.device, num_steps=args.steps, seed=0,
                           options={"dtype": args.dtype, "text_encoder": False, "compile": args.compile,
                                    "num_threads": args.threads})
    build_s = time.perf_counter() - t0
    prof = policy.profile
    rng = np.random.default_rng(0)
    images = {r: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for r, c in prof.cameras.items()}
    obs = Observation(images=images, state=np.asarray(prof.home), stamp=0.0)
    # a pre-encoded instruction (what EmbeddingCache returns): umT5 is never loaded
    emb = torch.randn(24, int(cfg.wan["text_dim"]), generator=torch.Generator().manual_seed(0))
    extra = {}
    if args.mode == "world_model":
        extra["actions"] = np.tile(np.asarray(prof.home), (policy.chunk_length, 1))
    if args.mode == "idm":
        extra["future_images"] = [images] * cfg.num_video_frames

    def chunk(seed):
        return policy.predict(MotusRequest(observation=obs, mode=args.mode, seed=seed, instruction="bench",
                                           instruction_embedding=emb, return_frames=args.frames, **extra))

    if str(args.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    chunk(0)  # warm-up (allocations, kernels, compilation)
    timings = [chunk(i + 1).timing for i in range(args.chunks)]
    total = [t["total"] * 1000 for t in timings]
    stage = lambda k: percentile([t.get(k, 0.0) * 1000 for t in timings], 50)  # noqa: E731
    if str(args.device).startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 1024**3
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    result = {
        "bench": "motus", "config": args.config, "device": str(policy.device),
        "dtype": str(policy.model.compute_dtype).replace("torch.", ""), "mode": args.mode,
        "chunks": args.chunks, "flow_steps": args.steps, "frames_decoded": bool(args.frames),
        "chunk_ms_p50": round(percentile(total, 50), 2), "chunk_ms_p90": round(percentile(total, 90), 2),
        "vlm_ms": round(stage("vlm"), 2), "vae_ms": round(stage("vae_encode") + stage("vae_decode"), 2),
        "vae_encode_ms": round(stage("vae_encode"), 2), "vae_decode_ms": round(stage("vae_decode"), 2),
        "denoise_ms": round(stage("denoise"), 2), "text_ms": round(stage("text"), 2),
        "preprocess_ms": round(stage("preprocess"), 2),
        "peak_mem_gb": round(peak, 3),
        "params_m": {"video": round(count(policy.model.video) / 1e6, 2),
                     "action_expert": round(count(policy.model.action_expert) / 1e6, 2),
                     "und_expert": round(count(policy.model.und_expert) / 1e6, 2),
                     "vlm": round(count(policy.vlm.model) / 1e6, 2), "vae": round(count(policy.vae) / 1e6, 2)},
        "video_tokens": cfg.video_tokens, "action_tokens": cfg.action_tokens, "build_s": round(build_s, 2),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
