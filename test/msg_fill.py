"""Deterministic, non-default values for every field of a ROS message type (generic, by introspection).

Used by the interface round-trip test: both processes build the same "expected" message for a type,
so a received message can be compared field by field with ``==``.
"""
from __future__ import annotations

import importlib

_SCALARS = {
    "boolean": lambda i: bool(i % 2 == 0),
    "octet": lambda i: bytes([(7 * i + 3) % 256]),
    "char": lambda i: (7 * i + 3) % 128,
    "float": lambda i: 0.5 + i,
    "double": lambda i: 0.25 + 1.5 * i,
    "int8": lambda i: -3 - i % 100,
    "uint8": lambda i: (7 * i + 3) % 256,
    "int16": lambda i: -300 - i,
    "uint16": lambda i: 300 + i,
    "int32": lambda i: -70000 - i,
    "uint32": lambda i: 70000 + i,
    "int64": lambda i: -(2**40) - i,
    "uint64": lambda i: 2**40 + i,
    "string": lambda i: f"value-{i}",
    "wstring": lambda i: f"wvalue-{i}",
}


def _msg_class(type_name: str):
    pkg, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _value(type_str: str, i: int):
    if type_str.startswith("sequence<"):
        inner = type_str[len("sequence<") : -1].split(",")[0].strip()
        vals = [_value(inner, i + k) for k in range(3)]
        return b"".join(vals) if inner == "octet" else vals
    if "[" in type_str and type_str.endswith("]"):
        inner, n = type_str[:-1].split("[")
        vals = [_value(inner, i + k) for k in range(int(n))]
        return b"".join(vals) if inner == "octet" else vals
    if type_str.startswith("string<="):
        return _SCALARS["string"](i)
    if type_str in _SCALARS:
        return _SCALARS[type_str](i)
    return fill(_msg_class(type_str)(), i)


def fill(msg, seed: int = 1):
    """Set every field of ``msg`` to a deterministic non-default value; returns msg."""
    for k, (name, type_str) in enumerate(msg.get_fields_and_field_types().items()):
        setattr(msg, name, _value(type_str, seed * 31 + k))
    return msg
