"""motus-train throughput and memory. The last line printed is JSON.

    python bench/train.py                 # CPU: reduced_sim training + data loading + meta-device estimates
    python bench/train.py --gpu-steps 5   # + on CUDA: one full-size LoRA + activation-checkpointing bf16 step

Keys: ``train_samples_per_s_reduced_cpu`` (reduced_sim recipe, batch 8, one thread, wall clock over
``--steps`` steps after one warm-up step, frame cache on), ``dataloader_samples_per_s`` (the training
DataLoader alone: reader + preprocessing + VLM prompt in ``--workers`` worker processes, decoding
with PyAV through the frame cache; ``..._decode`` without the cache), ``peak_mem_gb_estimate_full``
(full-size fine-tuning, batch 8, activation checkpointing) and ``peak_mem_gb_estimate_full_lora``
(LoRA on the video DiT, batch 8, activation checkpointing), from the meta-device estimate
(docs/motus.md). With CUDA: ``train_step_ms_full_lora_bf16`` and ``peak_mem_gb_full_lora_bf16``
(measured, ``torch.cuda.max_memory_allocated``) of ``motus_core.models.motus.train.step.one_step``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def make_data(root: Path, episodes: int, frames: int) -> Path:
    from test.motus_train_helpers import make_dataset

    return make_dataset(root, episodes=episodes, frames=frames)


def cpu_train(data: Path, out: Path, steps: int) -> float:
    from motus_core.models.motus.train.config import load_config
    from motus_core.models.motus.train.trainer import Trainer

    cfg = load_config(ROOT / "config/motus/reduced_sim.yaml", [f"data.path={data}", f"output_dir={out}", "data.val_episodes=0",
                                                               "train.save_every=0", "train.save_every_minutes=0",
                                                               f"train.steps={steps + 1}", "train.val_every=0"])
    t = Trainer(cfg)
    t.setup()
    times: list[float] = []
    t.optimizer.register_step_post_hook(lambda *_: times.append(time.perf_counter()))
    t.run()
    t.close()
    return (len(times) - 1) * cfg.train.batch_size / (times[-1] - times[0])


def loader_rate(data: Path, out: Path, workers: int, batches: int, cache: bool) -> float:
    import functools

    from torch.utils.data import DataLoader

    from motus_core.models.motus.train.build import build_models
    from motus_core.models.motus.train.config import load_config
    from motus_core.models.motus.train.data import collate, open_data
    from motus_core.models.motus.train.trainer import StepBatchSampler, _worker_init

    cfg = load_config(ROOT / "config/motus/reduced_sim.yaml", [f"data.path={data}", "data.val_episodes=0", f"data.frame_cache={str(cache).lower()}"])
    built = build_models(cfg.model, cfg.init, torch.device("cpu"))
    d = open_data(cfg.data, built.config, built.vlm.prompt, seed=0, cache_dir=out / "frame_cache")
    loader = DataLoader(d.train, batch_sampler=StepBatchSampler(len(d.train), 8, 0, batches + 2), num_workers=workers,
                        collate_fn=functools.partial(collate, text_len=built.config.text_len), worker_init_fn=_worker_init)
    it = iter(loader)
    next(it)
    next(it)
    t0 = time.perf_counter()
    n = sum(len(b["episode"]) for b in it)
    return n / (time.perf_counter() - t0)


def gpu_step(steps: int, batch: int) -> dict:
    from motus_core.models.motus.config import full_config
    from motus_core.models.motus.train.config import LoraSection
    from motus_core.models.motus.train.step import one_step, synthetic_setup

    loss, opt, b = synthetic_setup(full_config(), device="cuda", batch_size=batch, lora=LoraSection(enabled=True))
    torch.cuda.reset_peak_memory_stats()
    one_step(loss, opt, b, precision="bf16")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step(loss, opt, b, precision="bf16")
    torch.cuda.synchronize()
    return {"train_step_ms_full_lora_bf16": round((time.perf_counter() - t0) / steps * 1000, 1),
            "peak_mem_gb_full_lora_bf16": round(torch.cuda.max_memory_allocated() / 1024**3, 2), "gpu_batch_size": batch,
            "gpu": torch.cuda.get_device_name()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="reduced_sim CPU training steps timed")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=10, help="DataLoader batches timed")
    p.add_argument("--gpu-steps", type=int, default=3)
    p.add_argument("--gpu-batch", type=int, default=8)
    args = p.parse_args()
    from motus_core.models.motus.config import full_config
    from motus_core.models.motus.train.config import LoraSection
    from motus_core.models.motus.train.memory import GB, estimate

    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp / "data", args.episodes, 120)
        result["dataloader_samples_per_s"] = round(loader_rate(data, tmp / "l1", args.workers, args.batches, True), 2)
        result["dataloader_samples_per_s_decode"] = round(loader_rate(data, tmp / "l2", args.workers, args.batches, False), 2)
        threads = torch.get_num_threads()
        result["train_samples_per_s_reduced_cpu"] = round(cpu_train(data, tmp / "run", args.steps), 2)
        torch.set_num_threads(threads)
    full = estimate(full_config(), batch_size=8, activation_checkpointing=True)
    lora = estimate(full_config(), batch_size=8, lora=LoraSection(enabled=True), activation_checkpointing=True)
    lora1 = estimate(full_config(), batch_size=1, lora=LoraSection(enabled=True), activation_checkpointing=True)
    result["peak_mem_gb_estimate_full"] = round(full["total"] / GB, 2)
    result["peak_mem_gb_estimate_full_lora"] = round(lora["total"] / GB, 2)
    result["peak_mem_gb_estimate_full_lora_batch1"] = round(lora1["total"] / GB, 2)
    result["estimate_parts_gb_full_lora"] = {k: round(lora[k] / GB, 2) for k in ("weights", "gradients", "optimizer", "activations")}
    if torch.cuda.is_available():
        result.update(gpu_step(args.gpu_steps, args.gpu_batch))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
