"""Strict, offline loading of foundation models from local directories (nothing is ever downloaded)."""
from __future__ import annotations

from pathlib import Path


class WeightsError(RuntimeError):
    """A weight file does not match the model it is loaded into (missing/unexpected/mismatched keys)."""


def check_loading_info(info: dict, what: str, unused_missing: tuple[str, ...] = ()) -> None:
    """Raise unless a ``from_pretrained(..., output_loading_info=True)`` report is clean.

    ``unused_missing``: prefixes of weights the caller never uses (e.g. a ViT's ``pooler.``) that may
    be absent from the checkpoint; anything else missing, unexpected or mis-shaped is an error.
    """
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems["missing_keys"] = [k for k in problems["missing_keys"] if not k.startswith(unused_missing)]
    problems = {k: v for k, v in problems.items() if v}
    errors = info.get("error_msgs") or []
    if problems or errors:
        detail = "; ".join(f"{k}: {v[:8]}{' ...' if len(v) > 8 else ''}" for k, v in problems.items())
        raise WeightsError(f"{what}: weights do not match the model ({detail}{'; ' + str(errors[:3]) if errors else ''})")


def local_dir(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not str(path) or not p.is_dir():
        raise FileNotFoundError(f"{what}: local directory {p} not found (weights are never downloaded; "
                                f"put the model there or point the config at it)")
    return p
