"""Create a policy from a spec string (what the policy node's ``policy`` parameter holds).

* ``tiny_motus``            a tiny random-weight Motus-shaped flow policy (tests, CPU demos)
* ``replay:<episode>``      plays back recorded actions (a dataset episode or a .npy/.pt [T, dof] file)
* ``<directory>``           a checkpoint directory with ``motus_policy.yaml``; its ``kind`` (motus | mola)
                            selects the implementation, which loads everything from local paths.

Implementations are imported lazily so that loading one model never imports another's dependencies.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from motus_core.policy.base import Policy, PolicyError

POLICY_FILE = "motus_policy.yaml"

# kind -> "module:factory"; factory(checkpoint_dir: Path | str | None, *, device, profile, options) -> Policy
FACTORIES = {
    "tiny_motus": "motus_core.policies.tiny:create",
    "replay": "motus_core.policies.replay:create",
    "motus": "motus_core.models.motus.policy:create",
    "mola": "motus_core.models.mola.policy:create",
}


def _factory(kind: str):
    if kind not in FACTORIES:
        raise PolicyError(f"unknown policy kind {kind!r}; known: {sorted(FACTORIES)}")
    module, name = FACTORIES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def load_policy(spec: str, *, device: str = "cpu", profile=None, options: dict | None = None) -> Policy:
    options = dict(options or {})
    if spec in FACTORIES and spec not in ("motus", "mola"):
        return _factory(spec)(None, device=device, profile=profile, options=options)
    if spec.startswith("replay:"):
        return _factory("replay")(spec.split(":", 1)[1], device=device, profile=profile, options=options)
    path = Path(spec).expanduser()
    meta_file = path / POLICY_FILE
    if not meta_file.is_file():
        raise PolicyError(
            f"policy {spec!r}: not a known policy name ({', '.join(k for k in FACTORIES if k not in ('motus', 'mola'))}, "
            f"replay:<file>) and no {POLICY_FILE} in {path}"
        )
    meta = yaml.safe_load(meta_file.read_text()) or {}
    kind = meta.get("kind")
    if not kind:
        raise PolicyError(f"{meta_file} has no 'kind' (motus | mola)")
    options = {**meta, **options}
    return _factory(kind)(path, device=device, profile=profile, options=options)
