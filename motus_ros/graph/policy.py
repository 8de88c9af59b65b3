"""Closed-loop part of the graph: policy node (GPU) and chunk executor."""
from __future__ import annotations

from .spec import Argument, NodeSpec

ARGUMENTS = (
    Argument("policy", "tiny_motus", "policy: tiny_motus, replay, or a checkpoint directory"),
    Argument("strategy", "rtc", "chunk execution strategy", choices=("sync", "temporal_ensemble", "rtc")),
    Argument("instruction", "transfer the cube to the other arm", "language instruction"),
    Argument("run_time", "0", "policy graph: seconds to run before stopping (0 = until interrupted)"),
)


def policy_nodes(args: dict[str, str]) -> list[NodeSpec]:
    return [
        NodeSpec(name="policy", executable="policy_node", parameters=["policy.yaml", {"policy": args["policy"], "instruction": args["instruction"]}]),
        NodeSpec(name="executor", executable="executor_node", parameters=["executor.yaml", {"strategy": args["strategy"], "run_time": float(args["run_time"])}]),
    ]
