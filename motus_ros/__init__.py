"""motus_ros: rclpy nodes of the motus-ros suite (thin adapters around ``motus_core``).

Importing this package (which every node module does first) fixes the DDS environment before
rclpy is imported:

* ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` unless the user set it: discovery stays on loopback.
  A multi-machine set-up (GPU server) sets it explicitly, see docs/remote_gpu.md.
* Fast DDS gets the project's shared-memory profile (16 MB segments, UDP on 127.0.0.1 only) unless
  the user chose a profile: the default transport loses 20-45 % of 640x480 frames across processes.
"""
import os as _os

DDS_PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def configure_ros_environment(env: dict | None = None) -> dict:
    """Apply the project's DDS defaults to ``env`` (default: this process's environment)."""
    env = _os.environ if env is None else env
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if DDS_PROFILE_ENV not in env and env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") == "rmw_fastrtps_cpp":
        from motus_core.robot_profile import config_dir

        profile = config_dir() / "dds" / "fastdds_shm_loopback.xml"
        if profile.is_file():
            env[DDS_PROFILE_ENV] = str(profile)
    return env


configure_ros_environment()
