"""Weight-free parity fixtures (``mola-parity-fixture/1``): regenerate the seeded weights, check them.

A fixture folder holds ``manifest.json`` (key lists, shapes, seeds, sha256 of every regenerated weight,
the run's config) and ``data.safetensors`` (inputs, recorded random draws, reference outputs). Weights
follow the seed rule ``motus-parity-seed-rule/1``: key ``i`` of a group's sorted keys gets seed
``base_seed + i``; a float64 normal draw is scaled by the kind of the key (gain / bias / qkv / fan_in)
and cast to float32; its sha256 must equal the manifest's (a mismatch is an error, never a warning).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

FORMAT = "mola-parity-fixture/1"
SEED_RULE = "motus-parity-seed-rule/1"


class FixtureError(RuntimeError):
    pass


def weight_kind(key: str, shape) -> str:
    leaf = key.split(".")[-1]
    if leaf == "gamma" or (len(shape) == 1 and leaf == "weight" and "norm" in key):
        return "gain"
    if len(shape) == 1:
        return "bias"
    return "qkv" if key.endswith("_qkv") else "fan_in"


def regenerate_weight(entry: dict) -> torch.Tensor:
    shape = list(entry["shape"])
    g = torch.Generator("cpu").manual_seed(int(entry["seed"]))
    r = torch.randn(shape, generator=g, dtype=torch.float64)
    kind = weight_kind(entry["key"], shape)
    if kind != entry["kind"]:
        raise FixtureError(f"{entry['key']}: seed rule gives kind {kind!r}, manifest says {entry['kind']!r}")
    if kind == "gain":
        w = 1.0 + 0.1 * r
    elif kind == "bias":
        w = 0.02 * r
    elif kind == "qkv":
        w = r * (1.0 / math.sqrt(shape[2]))
    else:
        w = r * (1.0 / math.sqrt(math.prod(shape[1:])))
    w = w.to(torch.float32).contiguous()
    digest = hashlib.sha256(w.numpy().tobytes()).hexdigest()
    if digest != entry["sha256"]:
        raise FixtureError(f"{entry['key']}: regenerated weight has sha256 {digest[:12]}..., manifest {entry['sha256'][:12]}... "
                           "(this platform draws differently; do not loosen the check)")
    return w


@dataclass
class Fixture:
    folder: Path
    manifest: dict
    data: dict[str, torch.Tensor]

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    def weights(self, group: str) -> dict[str, torch.Tensor]:
        try:
            grp = self.manifest["weights"][group]
        except KeyError:
            raise FixtureError(f"fixture {self.folder} has no weight group {group!r}") from None
        keys = [e["key"] for e in grp["keys"]]
        if keys != sorted(keys):
            raise FixtureError(f"weight group {group!r} keys are not in sorted order")
        for i, e in enumerate(grp["keys"]):
            if int(e["index"]) != i or int(e["seed"]) != int(grp["base_seed"]) + i:
                raise FixtureError(f"{e['key']}: index/seed do not follow the seed rule")
        return {e["key"]: regenerate_weight(e) for e in grp["keys"]}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.data[name]


def load_fixture(folder: str | Path, expected: str) -> Fixture:
    folder = Path(folder)
    mf = folder / "manifest.json"
    if not mf.is_file():
        raise FixtureError(f"no manifest.json in {folder}")
    manifest = json.loads(mf.read_text())
    if manifest.get("format") != FORMAT:
        raise FixtureError(f"{mf}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("fixture") != expected:
        raise FixtureError(f"{mf}: fixture {manifest.get('fixture')!r}, expected {expected!r}")
    if manifest.get("weight_rule", {}).get("id") != SEED_RULE:
        raise FixtureError(f"{mf}: unknown weight rule {manifest.get('weight_rule', {}).get('id')!r}")
    data = load_file(str(folder / manifest.get("data_file", "data.safetensors")))
    for name, meta in manifest.get("tensors", {}).items():
        if name not in data:
            raise FixtureError(f"{name} listed in the manifest is missing from the data file")
        if list(data[name].shape) != list(meta["shape"]):
            raise FixtureError(f"{name}: shape {list(data[name].shape)} != manifest {meta['shape']}")
    return Fixture(folder=folder, manifest=manifest, data=data)
