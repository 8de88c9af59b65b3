"""Training checkpoints that ARE policy directories.

``output_dir/checkpoints/step_00001000/`` holds everything ``load_policy(<dir>)`` (the policy node's
``policy:=<dir>``) needs, written with the converted-checkpoint layout (``checkpoint.py``):
``motus_policy.yaml`` (kind: motus), ``motus_config.json``, the model weights, the frozen VAE and VLM
(written once per run under ``output_dir/frozen/`` and hard-linked into each checkpoint), the
statistics the model was trained with (``stats.json`` + ``stats_key``: the policy de-normalises with
exactly these), the instruction-embedding cache pre-filled with the dataset's instructions, the
text encoder when known, and the resolved training config (``train_config.yaml``). The resume state
(optimizer, scheduler, RNG, step) sits in ``training_state.pt`` of the same directory.

``output_dir/latest`` is a symlink to the newest complete checkpoint (replaced atomically after the
directory is complete); ``output_dir/final`` is written only when training reaches its last step.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from motus_core.preprocessing import MinMaxNormalizer, write_stats

from ..checkpoint import DEFAULT_FILES, POLICY_FILE, save_sharded
from ..config import MotusConfig
from ..text_encoder import EmbeddingCache, TextEncoder, save_text_encoder

log = logging.getLogger("motus_train")

TRAIN_STATE = "training_state.pt"
TRAIN_CONFIG = "train_config.yaml"
STATS_FILE = "stats.json"


@dataclass
class PolicyExtras:
    """What every checkpoint of a run shares besides the model weights."""

    normalizer: MinMaxNormalizer | None
    stats_key: str
    zero_range_joints: list[int]
    text_identity: str
    text_encoder: TextEncoder | None
    instructions: dict
    vlm_processor: str | Path | None  # a processor dir to copy, or None for the tiny prompt
    train_config: dict
    policy_options: dict = field(default_factory=dict)  # step_period, num_threads, ...


class CheckpointWriter:
    def __init__(self, output_dir: str | Path, keep: int):
        self.out = Path(output_dir)
        self.root = self.out / "checkpoints"
        self.frozen = self.out / "frozen"
        self.keep = keep
        self._frozen_files: dict[str, list[str]] | None = None

    # ------------------------------------------------------------------------------ frozen parts
    def write_frozen(self, vae_sd: dict, vlm_sd: dict | None, extras: PolicyExtras) -> None:
        """VAE, VLM, processor, text encoder, embeddings: once per run (hard-linked into checkpoints)."""
        marker = self.frozen / "frozen.json"
        if marker.is_file():
            self._frozen_files = json.loads(marker.read_text())
            return
        tmp = self.out / ".frozen.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files = {"vae": [DEFAULT_FILES["vae"]]}
        save_file({k: v.detach().cpu().contiguous() for k, v in vae_sd.items()}, str(tmp / DEFAULT_FILES["vae"]))
        if vlm_sd is not None:
            index = save_sharded(vlm_sd, tmp, "vlm", progress=False)
            files["vlm"] = [index] + sorted(set(json.loads((tmp / index).read_text())["weight_map"].values()))
        if extras.vlm_processor not in (None, "tiny"):
            shutil.copytree(extras.vlm_processor, tmp / DEFAULT_FILES["vlm_processor"],
                            ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt", "*.pth"))
            files["vlm_processor"] = [DEFAULT_FILES["vlm_processor"]]
        if extras.text_encoder is not None:
            save_text_encoder(extras.text_encoder, tmp / DEFAULT_FILES["text_encoder"])
            files["text_encoder"] = [DEFAULT_FILES["text_encoder"]]
        cache = EmbeddingCache(tmp / DEFAULT_FILES["embedding_cache"])
        for text, emb in extras.instructions.items():
            cache.put(text, extras.text_identity, emb.float())
        files["embedding_cache"] = [DEFAULT_FILES["embedding_cache"]]
        (tmp / "frozen.json").write_text(json.dumps(files, indent=1))
        shutil.rmtree(self.frozen, ignore_errors=True)
        tmp.rename(self.frozen)
        self._frozen_files = files

    def _link_frozen(self, dst: Path) -> None:
        for names in self._frozen_files.values():
            for name in names:
                src = self.frozen / name
                if src.is_dir():
                    shutil.copytree(src, dst / name, copy_function=_link_or_copy)
                else:
                    _link_or_copy(src, dst / name)

    # ------------------------------------------------------------------------------ checkpoints
    def save(self, name: str, *, config: MotusConfig, core_sd: dict, extras: PolicyExtras, train_state: dict | None,
             update_latest: bool = True, vlm_sd: dict | None = None) -> Path:
        """Write ``checkpoints/<name>`` (or ``final`` when ``name == 'final'``) atomically. ``vlm_sd``: a trained
        VLM (``model.train_vlm``), written into this checkpoint instead of linked from ``frozen/``."""
        if self._frozen_files is None:
            raise RuntimeError("write_frozen() must run before the first checkpoint")
        final = self.out / "final" if name == "final" else self.root / name
        tmp = final.parent / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        config.save(tmp / DEFAULT_FILES["config"])
        meta: dict = {"kind": "motus", "name": f"motus-{name}", "config": DEFAULT_FILES["config"]}
        meta["weights"] = save_sharded({k: v.detach().cpu() for k, v in core_sd.items()}, tmp, "motus", progress=False)
        self._link_frozen(tmp)
        meta["vae"] = DEFAULT_FILES["vae"]
        if vlm_sd is not None:
            meta["vlm"] = save_sharded(vlm_sd, tmp, "vlm", progress=False)
        elif "vlm" in self._frozen_files:
            meta["vlm"] = self._frozen_files["vlm"][0]
        meta["vlm_processor"] = DEFAULT_FILES["vlm_processor"] if "vlm_processor" in self._frozen_files else "tiny"
        meta["embedding_cache"] = DEFAULT_FILES["embedding_cache"]
        if "text_encoder" in self._frozen_files:
            meta["text_encoder"] = DEFAULT_FILES["text_encoder"]
        meta["text_encoder_identity"] = extras.text_identity
        if extras.normalizer is None:
            meta["normalization"] = "none"
        else:
            write_stats(tmp / STATS_FILE, extras.stats_key, extras.normalizer, zero_range_joints=extras.zero_range_joints)
            meta["stats"] = STATS_FILE
            meta["stats_key"] = extras.stats_key
        meta.update(extras.policy_options)
        meta["train_config"] = TRAIN_CONFIG
        (tmp / TRAIN_CONFIG).write_text(yaml.safe_dump(extras.train_config, sort_keys=False))
        (tmp / POLICY_FILE).write_text("# Written by motus-train. Paths are relative to this directory.\n"
                                       + yaml.safe_dump(meta, sort_keys=False))
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if update_latest:
            self.point_latest(final)
        if name != "final":
            self._prune(final)
        return final

    def point_latest(self, target: Path) -> None:
        link = self.out / "latest"
        tmp = self.out / ".latest.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(os.path.relpath(target, self.out), tmp)
        os.replace(tmp, link)

    def _prune(self, keep_dir: Path) -> None:
        steps = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in steps[: -self.keep]:
            if old != keep_dir:
                shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        link = self.out / "latest"
        if not link.exists():
            return None
        p = link.resolve()
        return p if (p / TRAIN_STATE).is_file() else None


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
