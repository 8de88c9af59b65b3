"""Reader of the Motus parity fixtures (``motus-parity-fixture/1``, weight-free).

A fixture folder holds ``manifest.json`` and a safetensors data file: configuration, inputs, every
random draw of the official run, reference outputs, and - instead of weights - the seed rule that
regenerates them (``motus-parity-seed-rule/1``) with a sha256 per key. This module regenerates the
weights, verifies every hash, and assembles the state dict a real checkpoint would hold (canonical
keys, alias keys sharing the canonical tensors, stored persistent buffers), so tests can push it
through the same converter and strict loader as a real ``mp_rank_00_model_states.pt``.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

FORMAT = "motus-parity-fixture/1"
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


def regenerate_weight(key: str, shape, seed: int) -> torch.Tensor:
    """The seed rule: float64 normal draw, scaled by kind, cast to float32."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    r = torch.randn(list(shape), generator=g, dtype=torch.float64)
    kind = weight_kind(key, shape)
    if kind == "gain":
        w = 1.0 + 0.1 * r
    elif kind == "bias":
        w = 0.02 * r
    elif kind == "qkv":
        w = r * (1.0 / math.sqrt(shape[2]))
    else:
        w = r * (1.0 / math.sqrt(math.prod(shape[1:])))
    return w.to(torch.float32)


def sha256_of(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


@dataclass
class Fixture:
    path: Path
    manifest: dict
    data: dict

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.data[name]

    def names(self, prefix: str) -> list[str]:
        return sorted(n for n in self.data if n.startswith(prefix))

    def weights(self, group: str) -> dict[str, torch.Tensor]:
        """Regenerate one weight group and verify every sha256 (FixtureError names the first bad key)."""
        if self.manifest.get("weight_rule", {}).get("id") != SEED_RULE:
            raise FixtureError(f"{self.path}: unknown weight rule {self.manifest.get('weight_rule', {}).get('id')!r}")
        entries = self.manifest["weights"][group]["keys"]
        out = {}
        for e in entries:
            kind = weight_kind(e["key"], e["shape"])
            if kind != e["kind"]:
                raise FixtureError(f"{e['key']}: kind {kind} != manifest {e['kind']}")
            w = regenerate_weight(e["key"], e["shape"], e["seed"])
            if sha256_of(w) != e["sha256"]:
                raise FixtureError(f"{self.path}: regenerated weight {e['key']} does not match its sha256 "
                                   "(platform RNG differs from the fixture's)")
            out[e["key"]] = w
        return out

    def official_state_dict(self, groups=("core", "vlm")) -> dict[str, torch.Tensor]:
        """What ``mp_rank_00_model_states.pt["module"]`` would hold: weights, aliases, fixed buffers."""
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


def load_fixture(path: str | Path) -> Fixture:
    p = Path(path)
    mf = p / "manifest.json"
    if not mf.is_file():
        raise FixtureError(f"no manifest.json in {p}")
    manifest = json.loads(mf.read_text())
    if manifest.get("format") != FORMAT:
        raise FixtureError(f"{mf}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    data = load_file(str(p / manifest.get("data_file", "data.safetensors")))
    return Fixture(path=p, manifest=manifest, data=data)
