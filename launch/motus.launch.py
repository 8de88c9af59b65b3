"""Launch the motus-ros graph (same description as ``motus-launch``; see motus_ros/graph).

    ros2 launch motus_ros motus.launch.py graph:=demo episodes:=3
    ros2 launch motus_ros motus.launch.py graph:=policy hardware:=none robot:=aloha_agilex_2 policy:=/ckpt/motus rviz:=true
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from motus_ros.graph import ARGUMENTS, as_bool, describe_graph, resolve_arguments


def _resolve_parameters(parameters, config_dir):
    out = []
    for p in parameters:
        out.append(p if isinstance(p, dict) else os.path.join(config_dir, p))
    return out


def _graph(context, *_, **__):
    share = get_package_share_directory("motus_ros")
    config_dir = os.path.join(share, "config")
    values = resolve_arguments({a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS})
    actions = []
    for spec in describe_graph(values):
        node = Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace or None,
            parameters=_resolve_parameters(spec.parameters, config_dir),
            remappings=list(spec.remappings),
            arguments=list(spec.arguments),
            additional_env=dict(spec.env),
            output="screen",
        )
        actions.append(node)
        if spec.required:
            actions.append(RegisterEventHandler(OnProcessExit(target_action=node, on_exit=[EmitEvent(event=Shutdown(reason=f"{spec.name} exited"))])))
    if as_bool(values.get("rviz", "false")):
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", os.path.join(config_dir, "motus.rviz")], output="screen"))
    return actions


def generate_launch_description():
    args = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.help) for a in ARGUMENTS]
    return LaunchDescription(args + [OpaqueFunction(function=_graph)])
