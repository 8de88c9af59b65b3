"""The simulated dual-arm robot (MuJoCo, ViperX 300 x 2 from gym-aloha's assets), ROS-free.

* :mod:`.model`        the scene (cameras, TCP sites, fast rendering) and the 14-dim joint vector map
* :mod:`.simulator`    :class:`AlohaSim`: physics at 2 ms, servos, resets, tasks
* :mod:`.tasks`        transfer_cube / insertion: seeded object poses, stages, success
* :mod:`.trajectory`   joint_trajectory_controller semantics (:class:`JointTrajectoryFollower`)
* :mod:`.commands`     validation of commands in a robot profile's names/units (:class:`CommandInterpreter`)
* :mod:`.render`       EGL offscreen cameras (:class:`CameraRenderer`), intrinsics
* :mod:`.kinematics`   FK (:func:`ee_positions`) and damped-least-squares IK
* :mod:`.demonstrator` scripted demonstrations in joint space (closed-loop IK)
* :mod:`.urdf_export`  MJCF -> URDF converter (``urdf/sim_aloha.urdf``)

Importing this package selects EGL offscreen rendering (``MUJOCO_GL=egl``) unless a backend was
chosen, which must happen before ``mujoco`` is first imported.
"""
import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")

from .model import (  # noqa: E402
    CAMERA_NAMES,
    GRIPPER_INDICES,
    SIM_JOINT_NAMES,
    JointLayout,
    build_model,
    finger_to_gripper,
    gripper_to_finger,
)
from .kinematics import Kinematics, ee_poses, ee_positions  # noqa: E402
from .simulator import DEFAULT_HOME, AlohaSim, ObjectPose, SimulationError  # noqa: E402
from .tasks import TASKS, get_task  # noqa: E402
from .trajectory import CommandRejected, JointTrajectoryFollower, TrajectoryGoal  # noqa: E402

__all__ = [
    "AlohaSim", "CAMERA_NAMES", "CommandRejected", "DEFAULT_HOME", "GRIPPER_INDICES", "JointLayout", "JointTrajectoryFollower",
    "Kinematics", "ObjectPose", "SIM_JOINT_NAMES", "SimulationError", "TASKS", "TrajectoryGoal", "build_model", "ee_poses",
    "ee_positions", "finger_to_gripper", "get_task", "gripper_to_finger",
]
