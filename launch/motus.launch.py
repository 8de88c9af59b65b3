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

from motus_ros.graph import ARGUMENTS, describe_graph, describe_launch_only, resolve_arguments
from motus_ros.shm_cleanup import clean_and_describe

# s between the SIGINT launch sends on shutdown and its SIGTERM (launch's default is 5 s): a node that
# summarises, closes its files and releases a model can take longer on a loaded machine, and SIGTERM
# would cut that short ("process has died ... exit code -15").
SIGTERM_TIMEOUT = "30"


def _resolve_parameters(parameters, config_dir):
    out = []
    for p in parameters:
        out.append(p if isinstance(p, dict) else os.path.join(config_dir, p))
    return out


def _graph(context, *_, **__):
    share = get_package_share_directory("motus_ros")
    config_dir = os.path.join(share, "config")
    values = resolve_arguments({a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS})
    cleaned = clean_and_describe()  # as motus-launch: what killed processes left in /dev/shm (motus_ros/shm_cleanup.py)
    if cleaned:
        print(f"[motus.launch.py] {cleaned}")
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
            sigterm_timeout=SIGTERM_TIMEOUT,
        )
        actions.append(node)
        if spec.required:
            actions.append(RegisterEventHandler(OnProcessExit(target_action=node, on_exit=[EmitEvent(event=Shutdown(reason=f"{spec.name} exited"))])))
    # robot_state_publisher (robot + ghost), the ghost's anchor transform and rviz2: other packages' nodes
    for spec in describe_launch_only(values):
        if not _installed(spec.package):
            print(f"[motus.launch.py] not starting {spec.namespace + '/' if spec.namespace else ''}{spec.name}: "
                  f"ROS 2 package {spec.package!r} is not installed")
            continue
        actions.append(Node(package=spec.package, executable=spec.executable, name=spec.name, namespace=spec.namespace or None,
                            parameters=list(spec.parameters), remappings=list(spec.remappings), arguments=list(spec.arguments),
                            output="screen"))
    return actions


def _installed(package):
    try:
        get_package_share_directory(package)
        return True
    except Exception:  # noqa: BLE001 - PackageNotFoundError, or no ament index at all
        return False


def generate_launch_description():
    args = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.help) for a in ARGUMENTS]
    return LaunchDescription(args + [OpaqueFunction(function=_graph)])
