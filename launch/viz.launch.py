"""Shortcut for `motus.launch.py graph:=viz` (all graph arguments apply)."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource


def generate_launch_description():
    main = os.path.join(get_package_share_directory("motus_ros"), "launch", "motus.launch.py")
    return LaunchDescription([IncludeLaunchDescription(PythonLaunchDescriptionSource(main), launch_arguments={"graph": "viz"}.items())])
