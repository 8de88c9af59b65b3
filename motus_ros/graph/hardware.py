"""Hardware part of the graph: the simulated robot and the scripted demonstrator (teleop stand-in)."""
from __future__ import annotations

from .spec import Argument, NodeSpec

ARGUMENTS = (
    Argument("task", "transfer_cube", "simulated task", choices=("transfer_cube", "insertion")),
    Argument("episodes", "3", "demonstrator: number of episodes to perform (demo and record graphs)"),
    Argument("seed", "0", "first seed of the simulator's object poses"),
    Argument("image_height", "", "simulated camera image height ('' = sim.yaml's; 0: the robot profile's, 240 for sim_aloha)"),
    Argument("image_width", "", "simulated camera image width ('' = sim.yaml's; 0: the robot profile's, 320 for sim_aloha)"),
    Argument("camera_rate", "", "simulated camera rate (Hz of sim time; '' = sim.yaml's, 30)"),
    Argument("real_time_factor", "", "simulation speed relative to the wall clock ('' = sim.yaml's, 1.0)"),
)


# arguments that default to '' (not given): only a given value overrides sim.yaml
_OPTIONAL_SIM = {"image_height": int, "image_width": int, "camera_rate": float, "real_time_factor": float}


def sim_params(args: dict[str, str]) -> dict:
    params = {"task": args["task"], "seed": int(args["seed"])}
    for name, kind in _OPTIONAL_SIM.items():
        if args.get(name, "") != "":
            params[name] = kind(args[name])
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
