"""Small helpers shared by the model implementations."""
from __future__ import annotations

import torch

from motus_core.policy.base import PolicyError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(value, device: str) -> torch.dtype:
    """Compute dtype from a config value: None -> bf16 on CUDA, fp32 elsewhere."""
    if value is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(value, torch.dtype):
        return value
    if str(value) not in DTYPES:
        raise PolicyError(f"unknown dtype {value!r}; use one of {sorted(DTYPES)}")
    return DTYPES[str(value)]
