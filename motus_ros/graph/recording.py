"""Recording part of the graph: the episode recorder."""
from __future__ import annotations

from .spec import Argument, NodeSpec

ARGUMENTS = (
    Argument("output_dir", "episodes", "recorder: directory of recorded episodes"),
    Argument("storage", "mcap", "recorder: rosbag2 storage plugin", choices=("mcap", "sqlite3")),
)


def recorder_nodes(args: dict[str, str]) -> list[NodeSpec]:
    return [
        NodeSpec(name="recorder", executable="recorder_node", parameters=["recorder.yaml", {"output_dir": args["output_dir"], "storage": args["storage"]}]),
    ]
