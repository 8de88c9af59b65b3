"""Checks of configuration dataclasses against their field metadata (ROS-free).

A parameter is declared once, as a dataclass field whose metadata says what it means and what it
may be: ``help`` (text), ``choices`` (allowed values), ``min`` / ``max`` (inclusive bounds). The
same metadata describes the ROS parameter (``motus_ros.params``), fills the parameter table in the
docs (``tools/param_table.py``) and is checked here, so a wrong value fails with one clear message
wherever the config comes from (YAML, launch argument, Python).
"""
from __future__ import annotations

import dataclasses
from typing import Any


def check_value(name: str, value: Any, metadata) -> str | None:
    """Why ``value`` breaks the field's metadata, or None."""
    choices = metadata.get("choices")
    if choices is not None and value not in tuple(choices):
        return f"{name} must be one of {tuple(choices)}, got {value!r}"
    lo, hi = metadata.get("min"), metadata.get("max")
    if (lo is not None or hi is not None) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo:
            return f"{name} must be >= {lo}, got {value!r}"
        if hi is not None and value > hi:
            return f"{name} must be <= {hi}, got {value!r}"
    return None


def problems(obj: Any, prefix: str = "") -> list[str]:
    """Every metadata violation of a (nested) dataclass instance, with dotted names."""
    out = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out.extend(problems(v, prefix=f"{name}."))
            continue
        why = check_value(name, v, f.metadata)
        if why:
            out.append(why)
    return out


def check_dataclass(obj: Any, prefix: str = "") -> None:
    """Raise ValueError naming every field whose value breaks its metadata."""
    found = problems(obj, prefix)
    if found:
        raise ValueError("; ".join(found))
