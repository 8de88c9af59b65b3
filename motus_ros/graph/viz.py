"""Visualisation part of the graph: predicted futures, trajectory markers, the ghost robot, rviz.

Two kinds of nodes:

* ``viz_nodes``: this package's nodes (the visualizer, optionally the MCAP recorder); started by the
  launch files and by ``motus-launch`` alike.
* ``launch_only_nodes``: nodes of other ROS 2 packages that pip cannot install (C++ / Qt):
  ``robot_state_publisher`` for the robot (tf + /robot_description for rviz's RobotModel), a second
  one for the ghost robot (namespace ``ghost``, frames prefixed ``ghost/``, fed by the visualizer's
  ``/ghost/joint_states``), a static transform that puts the ghost where the robot stands, and
  ``rviz2`` with ``config/motus.rviz``. Only ``ros2 launch`` starts them (when installed); where they
  are missing, ``mcap_viz_recorder`` writes the robot model and tf into its MCAP file instead.
"""
from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from motus_core.robot_profile import ProfileError, config_dir, load_profile
from motus_core.viz.rviz_config import rviz_config_path

from .spec import Argument, NodeSpec, as_bool

GHOST_PREFIX = "ghost"

ARGUMENTS = (
    Argument("viz", "false", "also start the visualizer node (always on in the policy and viz graphs)"),
    Argument("rviz", "false", "launch files only: also start rviz2 with config/motus.rviz"),
    Argument("robot_state_publisher", "auto",
             "launch files only: robot_state_publisher for the robot model; auto = with the simulated robot when "
             "the visualizer or rviz runs (a real robot's bringup usually runs its own)", choices=("auto", "true", "false")),
    Argument("viz_mcap", "", "record the visualisation into this MCAP file for Foxglove (works without rviz)"),
)


def viz_nodes(args: dict[str, str]) -> list[NodeSpec]:
    nodes = [NodeSpec(name="visualizer", executable="visualizer_node", parameters=["visualizer.yaml", {"ghost_prefix": GHOST_PREFIX}])]
    if args.get("viz_mcap"):
        nodes.append(NodeSpec(name="mcap_viz_recorder", executable="mcap_viz_recorder",
                              parameters=[{"output": args["viz_mcap"], "ghost_prefix": GHOST_PREFIX}]))
    return nodes


def _robot_description(robot: str) -> tuple[str, str, str] | None:
    """(URDF text, root link, base frame) of the robot profile's URDF, or None without one."""
    try:
        profile = load_profile(robot)
    except ProfileError:
        return None
    if not profile.urdf:
        return None
    path = profile.resolve(profile.urdf)
    if not path.is_file():
        return None
    text = path.read_text()
    root = ET.fromstring(text)
    links = [link.get("name") for link in root.findall("link")]
    children = {j.find("child").get("link") for j in root.findall("joint") if j.find("child") is not None}
    roots = [name for name in links if name not in children]
    return text, (roots[0] if roots else profile.base_frame), profile.base_frame


def launch_only_nodes(args: dict[str, str], visualizer: bool) -> list[NodeSpec]:
    """Nodes from other ROS 2 packages, for ``ros2 launch`` only (see the module docstring)."""
    nodes: list[NodeSpec] = []
    desc = _robot_description(args["robot"])
    rsp = args.get("robot_state_publisher", "auto")
    if desc is not None:
        text, root, _ = desc
        if rsp == "true" or (rsp == "auto" and args.get("hardware") == "sim" and (visualizer or as_bool(args.get("rviz", "false")))):
            nodes.append(NodeSpec(name="robot_state_publisher", package="robot_state_publisher", executable="robot_state_publisher",
                                  parameters=[{"robot_description": text}]))
        if visualizer:
            nodes.append(NodeSpec(name="robot_state_publisher", namespace=GHOST_PREFIX, package="robot_state_publisher",
                                  executable="robot_state_publisher",
                                  parameters=[{"robot_description": text, "frame_prefix": f"{GHOST_PREFIX}/"}]))
            nodes.append(NodeSpec(name="ghost_anchor", package="tf2_ros", executable="static_transform_publisher",
                                  arguments=["--frame-id", root, "--child-frame-id", f"{GHOST_PREFIX}/{root}"]))
    if as_bool(args.get("rviz", "false")):
        profile = load_profile(args["robot"])
        # config/motus.rviz shows sim_aloha's cameras; another robot gets a copy with its camera topics
        config = rviz_config_path(config_dir() / "motus.rviz", profile, Path(tempfile.gettempdir()) / "motus_rviz")
        nodes.append(NodeSpec(name="rviz2", package="rviz2", executable="rviz2", arguments=["-d", str(config), "-f", profile.base_frame]))
    return nodes
