"""The node graph of motus-ros, described once.

``describe_graph(args)`` returns the nodes (names, executables, parameters, remappings) for a set of
argument values. The launch files in ``launch/`` turn them into ``launch_ros`` ``Node`` actions and
``motus-launch`` (``motus_ros.launcher``) starts the same nodes as processes where ``launch`` is not
installed (pip-only environments). Arguments are declared once, in ``ARGUMENTS``.

Each part of the graph lives in its own module (``hardware``, ``policy``, ``recording``, ``viz``).
"""
from __future__ import annotations

from .spec import Argument, NodeSpec, as_bool
from . import hardware, policy, recording, viz

GRAPHS = ("sim", "demo", "policy", "record", "viz")

ARGUMENTS: tuple[Argument, ...] = (
    Argument("graph", "demo", "which graph to start: " + ", ".join(GRAPHS), choices=GRAPHS),
    Argument("robot", "sim_aloha", "robot profile (config/robots/<robot>.yaml)"),
    Argument("hardware", "sim", "sim: start the simulated robot; none: the robot's drivers run separately", choices=("sim", "none")),
    Argument("use_sim_time", "auto", "use /clock: auto = true when hardware is sim", choices=("auto", "true", "false")),
    *hardware.ARGUMENTS,
    *policy.ARGUMENTS,
    *recording.ARGUMENTS,
    *viz.ARGUMENTS,
)

_ARG_NAMES = {a.name for a in ARGUMENTS}


def defaults() -> dict[str, str]:
    return {a.name: a.default for a in ARGUMENTS}


def resolve_arguments(values: dict[str, str] | None = None) -> dict[str, str]:
    """Defaults overridden by ``values``; unknown names and invalid choices are errors."""
    out = defaults()
    for k, v in (values or {}).items():
        if k not in _ARG_NAMES:
            raise ValueError(f"unknown graph argument {k!r}; known: {sorted(_ARG_NAMES)}")
        out[k] = str(v)
    for a in ARGUMENTS:
        if a.choices and out[a.name] not in a.choices:
            raise ValueError(f"argument {a.name}={out[a.name]!r} must be one of {a.choices}")
    if out["use_sim_time"] == "auto":
        out["use_sim_time"] = "true" if out["hardware"] == "sim" else "false"
    return out


def _visualizer_on(args: dict[str, str]) -> bool:
    return args["graph"] in ("policy", "viz") or as_bool(args.get("viz", "false"))


def describe_launch_only(values: dict[str, str] | None = None) -> list[NodeSpec]:
    """Nodes of other ROS 2 packages (robot_state_publisher, tf2_ros, rviz2) that only the launch files
    start, where those packages are installed; ``motus-launch`` (pip-only) names and skips them."""
    args = resolve_arguments(values)
    nodes = viz.launch_only_nodes(args, visualizer=_visualizer_on(args))
    nodes += hardware.realsense2_camera_nodes(args)
    for n in nodes:
        n.parameters.insert(0, {"use_sim_time": as_bool(args["use_sim_time"])})
    return nodes


def describe_graph(values: dict[str, str] | None = None) -> list[NodeSpec]:
    """The nodes to start for the given arguments (see ``ARGUMENTS``)."""
    args = resolve_arguments(values)
    graph = args["graph"]
    common = {"robot": args["robot"], "use_sim_time": as_bool(args["use_sim_time"])}
    nodes: list[NodeSpec] = []
    if args["hardware"] == "sim":
        nodes += hardware.sim_nodes(args)
    nodes += hardware.driver_nodes(args) + hardware.camera_nodes(args)
    if graph == "demo":
        nodes += hardware.demonstrator_nodes(args, required=True)
    elif graph == "policy":
        nodes += policy.policy_nodes(args)
    elif graph == "record":
        nodes += recording.recorder_nodes(args)
    if _visualizer_on(args):
        nodes += viz.viz_nodes(args)
    for n in nodes:
        n.parameters.insert(0, dict(common))
    names = [f"{n.namespace}/{n.name}" for n in nodes]
    dup = {x for x in names if names.count(x) > 1}
    if dup:
        raise ValueError(f"graph has duplicated node names: {sorted(dup)}")
    return nodes


__all__ = ["ARGUMENTS", "GRAPHS", "Argument", "NodeSpec", "describe_graph", "describe_launch_only", "resolve_arguments", "defaults",
           "as_bool"]
