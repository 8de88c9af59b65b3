"""Hardware part of the graph: the simulated robot and the scripted demonstrator (teleop stand-in); on a
real robot (``hardware:=none``) the nodes between the vendor drivers and the suite: the ARX bridge (AC one)
and the cameras of the profile (``driver: realsense`` with a serial number): ``realsense2_camera`` per camera
where it is installed, else the pyrealsense2 node (``cameras`` argument)."""
from __future__ import annotations

from .spec import Argument, NodeSpec

CAMERA_MODES = ("auto", "realsense2_camera", "pyrealsense2", "none")
ARX_MODES = ("remote_slave", "joint_control_v1", "normal")

ARGUMENTS = (
    Argument("task", "transfer_cube", "simulated task", choices=("transfer_cube", "insertion")),
    Argument("episodes", "3", "demonstrator: number of episodes to perform (demo and record graphs)"),
    Argument("seed", "0", "first seed of the simulator's object poses"),
    Argument("image_height", "", "simulated camera image height ('' = sim.yaml's; 0: the robot profile's, 240 for sim_aloha)"),
    Argument("image_width", "", "simulated camera image width ('' = sim.yaml's; 0: the robot profile's, 320 for sim_aloha)"),
    Argument("camera_rate", "", "simulated camera rate (Hz of sim time; '' = sim.yaml's, 30)"),
    Argument("real_time_factor", "", "simulation speed relative to the wall clock ('' = sim.yaml's, 1.0)"),
    Argument("disturbance", "", "rad, RMS push on the simulated follower arms' setpoints, seeded per episode (recovery "
             "demonstrations; '' = sim.yaml's, 0 = off)"),
    Argument("disturbance_until", "", "episode s by which the push has faded out ('' = sim.yaml's; 0 = the whole episode)"),
    Argument("placement_margin", "", "m the simulated task's placement box is widened by on every side (demonstrations; "
             "'' = sim.yaml's, 0 = the task's box)"),
    Argument("cameras", "auto", "real robot (hardware:=none), policy/record graphs: who publishes the profile's RealSense cameras "
             "(those with a serial): auto = realsense2_camera where installed, else the pyrealsense2 node; none = your own drivers",
             choices=CAMERA_MODES),
    Argument("arx_driver_mode", "remote_slave", "AC one: the ARX followers' arm_control_type the ARX bridge speaks to", choices=ARX_MODES),
)


# arguments that default to '' (not given): only a given value overrides sim.yaml
_OPTIONAL_SIM = {"image_height": int, "image_width": int, "camera_rate": float, "real_time_factor": float,
                 "disturbance": float, "disturbance_until": float, "placement_margin": float}
# launch argument -> the sim node's (nested) parameter
_SIM_PARAMETER = {"disturbance": "disturbance.amplitude", "disturbance_until": "disturbance.until"}


def sim_params(args: dict[str, str]) -> dict:
    params = {"task": args["task"], "seed": int(args["seed"])}
    for name, kind in _OPTIONAL_SIM.items():
        if args.get(name, "") != "":
            params[_SIM_PARAMETER.get(name, name)] = kind(args[name])
    return params


def sim_nodes(args: dict[str, str]) -> list[NodeSpec]:
    return [
        NodeSpec(
            name="sim",
            executable="sim_node",
            parameters=["sim.yaml", sim_params(args)],
            env={"MUJOCO_GL": "egl"},
        )
    ]


RECORDER_NODE = "recorder"  # name of the recorder node in the record graph (recording.py)


def demonstrator_nodes(args: dict[str, str], required: bool = False, recorder: str = "") -> list[NodeSpec]:
    """The scripted teleoperator. ``recorder`` names a recorder node it drives (start_episode before,
    stop_episode with the outcome after each demonstration); in the record graph that is the recorder."""
    params = {"episodes": int(args["episodes"]), "task": args["task"], "seed": int(args["seed"]), "sim_node": "sim"}
    if not recorder and args.get("graph") == "record":
        recorder = RECORDER_NODE
    if recorder:
        params["recorder"] = recorder
    return [
        NodeSpec(
            name="demonstrator",
            executable="demonstrator",
            parameters=[params],
            required=required,
            env={"MUJOCO_GL": "egl"},
        )
    ]


def _profile(args: dict[str, str]):
    from motus_core.robot_profile import ProfileError, load_profile

    try:
        return load_profile(args["robot"])
    except ProfileError:
        return None  # the nodes report a bad profile themselves


def realsense2_installed() -> bool:
    try:
        from ament_index_python.packages import get_package_share_directory

        get_package_share_directory("realsense2_camera")
        return True
    except Exception:  # noqa: BLE001 - PackageNotFoundError, or no ament index at all (pip-only)
        return False


def camera_mode(args: dict[str, str]) -> str:
    """Which camera driver the graph starts ('none' in the simulator and the graphs without cameras)."""
    if args.get("hardware") != "none" or args.get("graph") not in ("policy", "record"):
        return "none"
    mode = args.get("cameras", "auto")
    if mode == "auto":
        mode = "realsense2_camera" if realsense2_installed() else "pyrealsense2"
    return mode


def _realsense_cameras(args: dict[str, str]):
    profile = _profile(args)
    if profile is None:
        return []
    return [c for c in profile.cameras.values() if c.driver == "realsense" and c.serial]


def camera_nodes(args: dict[str, str]) -> list[NodeSpec]:
    """pyrealsense2 camera nodes (this package), one per RealSense camera of the profile."""
    if camera_mode(args) != "pyrealsense2":
        return []
    return [NodeSpec(name=f"camera_{c.role}", executable="realsense_node", parameters=[{"role": c.role}])
            for c in _realsense_cameras(args)]


def realsense2_camera_nodes(args: dict[str, str]) -> list[NodeSpec]:
    """``realsense2_camera`` nodes (launch files only), one per camera, on the profile's topics.

    The wrapper's own topics are ``<namespace>/color/image_raw`` up to 4.54 and ``<namespace>/<name>/color/...``
    (``/camera/camera/...`` by default) from 4.55 on: both forms are remapped onto the profile's topics."""
    if camera_mode(args) != "realsense2_camera":
        return []
    nodes = []
    for c in _realsense_cameras(args):
        remaps = []
        for stream, target in (("color/image_raw", c.topic), ("color/camera_info", c.info_topic)):
            remaps += [(f"~/{stream}", target), (stream, target)]
        nodes.append(NodeSpec(
            name=f"camera_{c.role}", package="realsense2_camera", executable="realsense2_camera_node",
            parameters=[{
                "serial_no": c.serial, "enable_color": True, "enable_depth": False, "enable_infra1": False, "enable_infra2": False,
                "rgb_camera.color_profile": f"{c.width}x{c.height}x{int(round(c.fps))}", "rgb_camera.color_format": "RGB8",
                "camera_name": f"camera_{c.role}", "publish_tf": False, "initial_reset": True, "reconnect_timeout": 6.0,
            }],
            remappings=remaps))
    return nodes


def driver_nodes(args: dict[str, str]) -> list[NodeSpec]:
    """Bridges between a real robot's vendor driver and the suite's JointState interfaces."""
    profile = _profile(args)
    if args.get("hardware") != "none" or profile is None or profile.driver.kind != "arx_x5":
        return []
    return [NodeSpec(name="arx_bridge", executable="arx_bridge_node", parameters=[{"driver_mode": args.get("arx_driver_mode", "remote_slave")}])]
