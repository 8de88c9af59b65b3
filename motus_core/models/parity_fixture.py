"""Reader of the weight-free parity fixtures (Motus ``motus-parity-fixture/1``, MoLA ``mola-parity-fixture/1``).

A fixture folder holds ``manifest.json`` (key lists, shapes, seeds, the sha256 of every regenerated
weight, the run's config) and a safetensors data file (inputs, every random draw of the official run,
reference outputs, stored persistent buffers). Weights are not stored: they follow the seed rule
``motus-parity-seed-rule/1`` (key ``i`` of a group's sorted keys gets seed ``base_seed + i``; a float64
normal draw is scaled by the kind of the key - gain / bias / qkv / fan_in - and cast to float32) and
each regenerated tensor must hash to the manifest's sha256 (a mismatch is an error, never a warning).

``Fixture.official_state_dict`` assembles what a real checkpoint would hold (canonical keys, alias
keys sharing the canonical tensors, stored buffers), so tests push it through the same converter and
strict loader as a real checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

FORMATS = ("motus-parity-fixture/1", "mola-parity-fixture/1")
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


def sha256_of(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def regenerate_weight(entry: dict) -> torch.Tensor:
    """One weight from its manifest entry (``key``, ``shape``, ``seed``, ``kind``, ``sha256``), verified."""
    key, shape = entry["key"], list(entry["shape"])
    kind = weight_kind(key, shape)
    if kind != entry["kind"]:
        raise FixtureError(f"{key}: the seed rule gives kind {kind!r}, the manifest says {entry['kind']!r}")
    g = torch.Generator("cpu").manual_seed(int(entry["seed"]))
    r = torch.randn(shape, generator=g, dtype=torch.float64)
    if kind == "gain":
        w = 1.0 + 0.1 * r
    elif kind == "bias":
        w = 0.02 * r
    elif kind == "qkv":
        w = r * (1.0 / math.sqrt(shape[2]))
    else:
        w = r * (1.0 / math.sqrt(math.prod(shape[1:])))
    w = w.to(torch.float32).contiguous()
    digest = sha256_of(w)
    if digest != entry["sha256"]:
        raise FixtureError(f"{key}: regenerated weight has sha256 {digest[:12]}..., the manifest {entry['sha256'][:12]}... "
                           "(this platform draws differently; do not loosen the check)")
    return w


@dataclass
class Fixture:
    path: Path
    manifest: dict
    data: dict[str, torch.Tensor]

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.data[name]

    def names(self, prefix: str) -> list[str]:
        return sorted(n for n in self.data if n.startswith(prefix))

    def weights(self, group: str) -> dict[str, torch.Tensor]:
        """Regenerate one weight group, checking the seed rule's ordering and every sha256."""
        try:
            grp = self.manifest["weights"][group]
        except KeyError:
            raise FixtureError(f"fixture {self.path} has no weight group {group!r}") from None
        keys = [e["key"] for e in grp["keys"]]
        if keys != sorted(keys):
            raise FixtureError(f"{self.path}: weight group {group!r} keys are not in sorted order")
        for i, e in enumerate(grp["keys"]):
            if int(e["index"]) != i or int(e["seed"]) != int(grp["base_seed"]) + i:
                raise FixtureError(f"{self.path}: {e['key']}: index/seed do not follow the seed rule")
        return {e["key"]: regenerate_weight(e) for e in grp["keys"]}

    def official_state_dict(self, groups=("core", "vlm")) -> dict[str, torch.Tensor]:
        """What the official state dict would hold: regenerated weights, aliases, stored buffers."""
        sd: dict[str, torch.Tensor] = {}
        for g in groups:
            if g in self.manifest["weights"]:
                sd.update(self.weights(g))
        for f in self.manifest.get("fixed", []):
            sd[f["key"]] = self.data[f["tensor"]]
        for a in self.manifest.get("aliases", []):
            if a["same_as"] in sd:
                sd[a["key"]] = sd[a["same_as"]]
        return sd


def load_fixture(path: str | Path, expected: str | None = None) -> Fixture:
    """Read a fixture folder; ``expected`` names the fixture kind (``manifest["fixture"]``) to insist on."""
    p = Path(path)
    mf = p / "manifest.json"
    if not mf.is_file():
        raise FixtureError(f"no manifest.json in {p}")
    manifest = json.loads(mf.read_text())
    if manifest.get("format") not in FORMATS:
        raise FixtureError(f"{mf}: format {manifest.get('format')!r}, expected one of {FORMATS}")
    if expected is not None and manifest.get("fixture") != expected:
        raise FixtureError(f"{mf}: fixture {manifest.get('fixture')!r}, expected {expected!r}")
    if manifest.get("weight_rule", {}).get("id") != SEED_RULE:
        raise FixtureError(f"{mf}: unknown weight rule {manifest.get('weight_rule', {}).get('id')!r}")
    data = load_file(str(p / manifest.get("data_file", "data.safetensors")))
    for name, meta in manifest.get("tensors", {}).items():
        if name not in data:
            raise FixtureError(f"{name} listed in the manifest is missing from the data file")
        if list(data[name].shape) != list(meta["shape"]):
            raise FixtureError(f"{name}: shape {list(data[name].shape)} != manifest {meta['shape']}")
    return Fixture(path=p, manifest=manifest, data=data)
