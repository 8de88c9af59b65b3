"""Recording part of the graph: the robot (sim or real drivers) + the episode recorder.

``motus-launch graph:=record`` starts the recorder; with ``hardware:=sim`` the simulator and the
scripted demonstrator run too - the demonstrator plays the teleoperator (its joint targets are the
leader arms' commands). Operators drive episodes with ``recorder_cli`` (a terminal of its own: it
reads the keyboard, so it is not part of the launched graph).
"""
from __future__ import annotations

from . import hardware
from .spec import Argument, NodeSpec

ARGUMENTS = (
    Argument("output_dir", "episodes", "recorder: directory of recorded episodes"),
    Argument("storage", "mcap", "recorder: rosbag2 storage plugin", choices=("mcap", "sqlite3")),
    Argument("operator", "", "recorder: operator name stored with each episode"),
)


def recorder_nodes(args: dict[str, str]) -> list[NodeSpec]:
    params = {"output_dir": args["output_dir"], "storage": args["storage"], "operator": args.get("operator", "")}
    if args.get("hardware") == "sim":
        params["task"] = args["task"]
        params["instruction_topic"] = ""  # the scripted demonstrator sends the task's instruction with StartEpisode
    # No default instruction from the policy graph's argument: an episode without an explicit
    # instruction is refused (StartEpisode says why) rather than labelled with another task's text.
    nodes = [NodeSpec(name="recorder", executable="recorder_node", parameters=["recorder.yaml", params])]
    if args.get("hardware") == "sim":
        # the scripted teleoperator starts and stops each episode on the recorder (with its outcome)
        nodes += hardware.demonstrator_nodes(args, required=True, recorder="recorder")
    return nodes
