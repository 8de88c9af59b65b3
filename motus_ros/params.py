"""Declare ROS parameters from the dataclass that defines them, once.

Each node's parameters are a dataclass (usually the config class of the ``motus_core`` component it
wraps). Field names become parameter names, defaults become defaults and ``field(metadata={"help":
...})`` becomes the parameter description, so ``ros2 param describe`` shows the same text as the
code. Nested dataclasses become dotted names (``safety.max_step``). ``choices`` and ``min``/``max`` in
the metadata are checked against the value the node ends up with (defaults < parameter files < command
line / launch arguments, as ROS applies them): a wrong value stops the node at start with one
message naming the parameter and what it may be (``motus_core.config_fields``).
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

from rcl_interfaces.msg import ParameterDescriptor

from motus_core.config_fields import check_value

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    raise TypeError(f"parameter field {f.name!r} needs a default")


def _ros_value(value: Any) -> Any:
    # rclpy infers the parameter type from the default; tuples must be lists, empty lists need a type.
    if isinstance(value, tuple):
        return list(value)
    return value


def parameter_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    """Flatten a (nested) dataclass into (dotted name, field, resolved type) triples."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name, Any)
        name = f"{prefix}{f.name}"
        if _is_dataclass_type(tp):
            out.extend(parameter_fields(tp, prefix=f"{name}."))
        else:
            out.append((name, f, tp))
    return out


def describe(f: dataclasses.Field) -> str:
    """The field's help text with its allowed values (``ros2 param describe`` and the docs table show it)."""
    text = f.metadata.get("help", "")
    extra = []
    if f.metadata.get("choices") is not None:
        extra.append("one of " + ", ".join(repr(c) for c in f.metadata["choices"]))
    if f.metadata.get("min") is not None:
        extra.append(f">= {f.metadata['min']}")
    if f.metadata.get("max") is not None:
        extra.append(f"<= {f.metadata['max']}")
    return text + (f" [{'; '.join(extra)}]" if extra else "")


def _empty_list_type(tp: Any):
    from rclpy.parameter import Parameter

    args = typing.get_args(tp)
    inner = args[0] if args else str
    return {
        str: Parameter.Type.STRING_ARRAY,
        float: Parameter.Type.DOUBLE_ARRAY,
        int: Parameter.Type.INTEGER_ARRAY,
        bool: Parameter.Type.BOOL_ARRAY,
    }.get(inner, Parameter.Type.STRING_ARRAY)


# Overrides that name no declared parameter but are ROS's own (declared later by rclpy, or by the launch system).
_ROS_OWN_PREFIXES = ("qos_overrides.",)


def unknown_overrides(node, renamed: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Parameter values given to ``node`` (params files, ``-p``, launch) that name no declared parameter.

    ROS drops such values without a word, so an old or misspelt name in a YAML file silently leaves the
    default in place. Returns (errors for renamed parameters, the other unknown names). rclpy keeps the
    overrides in ``Node._parameter_overrides`` (Humble to Kilted); without it nothing can be checked.
    """
    overrides = getattr(node, "_parameter_overrides", None) or {}
    renamed = renamed or {}
    errors, unknown = [], []
    for name in sorted(overrides):
        if node.has_parameter(name) or name.startswith(_ROS_OWN_PREFIXES):
            continue
        if name in renamed:
            errors.append(f"{name!r} was renamed: use {renamed[name]!r}")
        else:
            unknown.append(name)
    return errors, unknown


def declare_parameters(node, cls: type[T], prefix: str = "", renamed: Mapping[str, str] | None = None) -> T:
    """Declare every field of ``cls`` on ``node`` and return an instance filled with the values.

    A value given under a parameter's old name (``renamed``: old -> new) stops the node with the new
    name; a value for a name the node does not have is logged as a warning (a params file with ``/**:``
    may serve several nodes, so it is not an error).
    """
    values: dict[str, Any] = {}
    bad: list[str] = []
    for name, f, tp in parameter_fields(cls, prefix):
        default = _ros_value(_default_of(f))
        desc = ParameterDescriptor(description=describe(f), read_only=bool(f.metadata.get("read_only", False)))
        number = isinstance(default, float) or tp is float
        if number:
            # `-p tracking_grace:=1` is an integer to ROS: accept it for a float parameter (checked below)
            desc.dynamic_typing = True
            default = float(default)
        try:
            if isinstance(default, list) and not default:
                param = node.declare_parameter(name, _empty_list_type(tp), desc)
            else:
                param = node.declare_parameter(name, default, desc)
        except Exception as exc:  # noqa: BLE001 - rclpy's InvalidParameterTypeException (a string for an integer): named below
            bad.append(f"{name} has the wrong type ({exc})")
            continue
        # A list parameter declared empty (typed, no default value) reads back as None, not [].
        values[name] = default if param.value is None and isinstance(default, list) else param.value
        if number:
            if isinstance(values[name], bool) or not isinstance(values[name], (int, float)):
                bad.append(f"{name} must be a number, got {values[name]!r}")
                continue
            values[name] = float(values[name])
        why = check_value(name, values[name], f.metadata)
        if why:
            bad.append(why)
    errors, unknown = unknown_overrides(node, renamed)
    bad.extend(errors)
    if bad:
        raise ValueError("invalid parameters: " + "; ".join(bad))
    if unknown:
        node.get_logger().warning(
            f"ignoring parameter values for names this node does not have: {', '.join(unknown)} "
            "(misspelt? `ros2 param list` on the node or docs/parameters.md lists its parameters)")
    return build_from_values(cls, values, prefix)


def build_from_values(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name, Any)
        name = f"{prefix}{f.name}"
        if _is_dataclass_type(tp):
            kwargs[f.name] = build_from_values(tp, values, prefix=f"{name}.")
        elif name in values:
            v = values[name]
            origin = typing.get_origin(tp)
            if origin is tuple and v is not None:
                v = tuple(v)
            elif origin is list and v is not None:
                v = list(v)
            kwargs[f.name] = v
    return cls(**kwargs)


def as_parameter_dict(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dataclass instance -> flat {dotted name: value} (for params files and the graph description)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out.update(as_parameter_dict(v, prefix=f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = _ros_value(v)
    return out
