"""Hardware part of the graph: the simulated robot and the scripted demonstrator (teleop stand-in)."""
from __future__ import annotations

from .spec import Argument, NodeSpec, as_bool

ARGUMENTS = (
    Argument("task", "transfer_cube", "simulated task", choices=("transfer_cube", "insertion")),
    Argument("episodes", "3", "demonstrator: number of episodes to perform (demo and record graphs)"),
    Argument("seed", "0", "first seed of the simulator's object poses"),
    Argument("image_height", "240", "simulated camera image height"),
    Argument("image_width", "320", "simulated camera image width"),
    Argument("camera_rate", "30.0", "simulated camera rate (Hz)"),
    Argument("real_time_factor", "1.0", "simulation speed relative to the wall clock"),
)


def sim_nodes(args: dict[str, str]) -> list[NodeSpec]:
    return [
        NodeSpec(
            name="sim",
            executable="sim_node",
            parameters=[
                "sim.yaml",
                {
                    "task": args["task"],
                    "seed": int(args["seed"]),
                    "image_height": int(args["image_height"]),
                    "image_width": int(args["image_width"]),
                    "camera_rate": float(args["camera_rate"]),
                    "real_time_factor": float(args["real_time_factor"]),
                },
            ],
            env={"MUJOCO_GL": "egl"},
        )
    ]


def demonstrator_nodes(args: dict[str, str], required: bool = False) -> list[NodeSpec]:
    return [
        NodeSpec(
            name="demonstrator",
            executable="demonstrator",
            parameters=[{"episodes": int(args["episodes"]), "task": args["task"], "seed": int(args["seed"])}],
            required=required,
            env={"MUJOCO_GL": "egl"},
        )
    ]
