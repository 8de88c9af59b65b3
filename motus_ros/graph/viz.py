"""Visualisation part of the graph: predicted futures and trajectory markers."""
from __future__ import annotations

from .spec import Argument, NodeSpec

ARGUMENTS = (
    Argument("viz", "false", "also start the visualizer node (always on in the policy and viz graphs)"),
    Argument("rviz", "false", "launch files only: also start rviz2 with config/motus.rviz"),
)


def viz_nodes(args: dict[str, str]) -> list[NodeSpec]:
    return [NodeSpec(name="visualizer", executable="visualizer_node", parameters=["visualizer.yaml"])]
