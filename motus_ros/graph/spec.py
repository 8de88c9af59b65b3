"""Data types of the node-graph description (no ROS imports: used by launch files and the launcher)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Argument:
    """A graph argument: a launch argument of the launch files and an option of ``motus-launch``."""

    name: str
    default: str
    help: str
    choices: tuple[str, ...] = ()


@dataclass
class NodeSpec:
    """One node of the graph, as both ``launch_ros.actions.Node`` and the pip-only launcher start it."""

    name: str
    executable: str  # key of motus_ros.executables.EXECUTABLES
    package: str = "motus_ros"
    namespace: str = ""
    # Parameter files (paths relative to the package's config/ dir) and/or dicts of parameter values,
    # applied in order (later wins), as in launch_ros.
    parameters: list[Any] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    # The graph ends when a required node exits (launch: on_exit=Shutdown()); its exit code is the result.
    required: bool = False
    # Extra command-line arguments before --ros-args.
    arguments: list[str] = field(default_factory=list)
    # Environment variables the node needs (e.g. MUJOCO_GL for the simulator).
    env: dict[str, str] = field(default_factory=dict)


GroupFn = Callable[[dict[str, str]], list[NodeSpec]]


def as_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")
