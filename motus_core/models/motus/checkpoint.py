"""The converted Motus checkpoint directory (written once by ``motus-convert-checkpoint``, loaded fast).

Layout::

    motus_policy.yaml        kind: motus + the file names below + optional stats / rates / dtype
    motus_config.json        MotusConfig (Wan, experts, geometry, VAE and Qwen3-VL configs)
    motus-0000X-of-0000N.safetensors + motus.safetensors.index.json
                             the tri-stream model in our layout (video.* = diffusers names)
    vlm-....safetensors + vlm.safetensors.index.json
                             Qwen3VLModel weights (transformers names)
    vlm_processor/           the Qwen3-VL processor/tokenizer files (or absent for tiny VLMs)
    vae.safetensors          diffusers AutoencoderKLWan weights
    text_encoder/            optional converted umT5 (see text_encoder.py)
    embeddings/              instruction-embedding cache (EmbeddingCache)

Tensors are loaded straight onto the target device (``safetensors`` ``device=``) and assigned to
meta-initialised modules, so nothing is materialised twice.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
import yaml
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .config import MotusConfig
from .convert import CheckpointError

POLICY_FILE = "motus_policy.yaml"
DEFAULT_FILES = dict(
    config="motus_config.json",
    weights="motus.safetensors.index.json",
    vae="vae.safetensors",
    vlm="vlm.safetensors.index.json",
    vlm_processor="vlm_processor",
    text_encoder="text_encoder",
    embedding_cache="embeddings",
)
SHARD_BYTES = 2 * 1024**3


def save_sharded(sd: Mapping[str, torch.Tensor], directory: Path, stem: str, *, dtype: torch.dtype | None = None,
                 shard_bytes: int = SHARD_BYTES, progress: bool = True) -> str:
    """Write ``sd`` as ``<stem>-0000i-of-0000n.safetensors`` shards + ``<stem>.safetensors.index.json``."""
    shards: list[dict] = [{}]
    size = 0
    for k in sorted(sd):
        t = sd[k]
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += nbytes
    n = len(shards)
    weight_map = {}
    total = sum(t.numel() * t.element_size() for shard in shards for t in shard.values())
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"writing {stem}", disable=not progress)
    for i, shard in enumerate(shards, 1):
        name = f"{stem}-{i:05d}-of-{n:05d}.safetensors"
        dup = _shared_ptrs(shard)  # safetensors refuses tensors sharing storage (tied weights): copy those
        save_file({k: (v.detach().contiguous().clone() if v.data_ptr() in dup else v.detach().contiguous())
                   for k, v in shard.items()}, str(directory / name), metadata={"format": "pt"})
        for k, v in shard.items():
            weight_map[k] = name
            bar.update(v.numel() * v.element_size())
    bar.close()
    index = f"{stem}.safetensors.index.json"
    (directory / index).write_text(json.dumps({"metadata": {"format": "motus-ros"}, "weight_map": weight_map}, indent=1))
    return index


def _shared_ptrs(shard: Mapping[str, torch.Tensor]) -> set:
    seen, dup = set(), set()
    for v in shard.values():
        p = v.data_ptr()
        (dup if p in seen else seen).add(p)
    return dup


def load_weights(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file or a sharded ``.safetensors.index.json`` -> state dict on ``device``."""
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.name.endswith(".index.json"):
        index = json.loads(path.read_text())
        files = sorted(set(index["weight_map"].values()))
        sd: dict[str, torch.Tensor] = {}
        for f in files:
            if not (path.parent / f).is_file():
                raise CheckpointError(f"shard {f} listed in {path} is missing")
            sd.update(load_file(str(path.parent / f), device=str(device)))
        return sd
    return load_file(str(path), device=str(device))


def write_policy_file(directory: Path, meta: dict) -> Path:
    p = directory / POLICY_FILE
    p.write_text("# Written by motus-convert-checkpoint. Paths are relative to this directory.\n"
                 + yaml.safe_dump(meta, sort_keys=False))
    return p


def save_converted(
    out_dir: str | Path,
    config: MotusConfig,
    core: Mapping[str, torch.Tensor],
    vae: Mapping[str, torch.Tensor],
    vlm: Mapping[str, torch.Tensor] | None,
    *,
    dtype: torch.dtype | None = None,
    vlm_processor_dir: str | Path | None = None,
    extra: dict | None = None,
    progress: bool = True,
) -> Path:
    """Write a converted checkpoint directory (see the module docstring)."""
    import shutil

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / DEFAULT_FILES["config"])
    meta = {"kind": "motus", "config": DEFAULT_FILES["config"]}
    meta["weights"] = save_sharded(core, out, "motus", dtype=dtype, progress=progress)
    save_file({k: v.detach().contiguous() for k, v in vae.items()}, str(out / DEFAULT_FILES["vae"]))
    meta["vae"] = DEFAULT_FILES["vae"]
    if vlm is not None:
        meta["vlm"] = save_sharded(vlm, out, "vlm", dtype=dtype, progress=progress)
        if vlm_processor_dir is not None:
            dst = out / DEFAULT_FILES["vlm_processor"]
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(vlm_processor_dir, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt", "*.pth"))
            meta["vlm_processor"] = DEFAULT_FILES["vlm_processor"]
        else:
            meta["vlm_processor"] = "tiny"
    meta["embedding_cache"] = DEFAULT_FILES["embedding_cache"]
    meta.update(extra or {})
    write_policy_file(out, meta)
    return out


def read_policy_file(directory: str | Path) -> dict:
    p = Path(directory).expanduser() / POLICY_FILE
    if not p.is_file():
        raise CheckpointError(f"no {POLICY_FILE} in {directory}")
    meta = yaml.safe_load(p.read_text()) or {}
    if meta.get("kind") != "motus":
        raise CheckpointError(f"{p}: kind is {meta.get('kind')!r}, expected 'motus'")
    return meta


def resolve(directory: str | Path, value: str | None) -> Path | None:
    if value in (None, ""):
        return None
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else Path(directory).expanduser() / p
