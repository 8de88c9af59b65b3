"""``make demo``: run the main job on the simulated robot and print what happened.

--mode scripted  the scripted demonstrator performs episodes on the simulated robot (default)
--mode policy    the closed loop (synchronizer, policy node, chunk executor) drives the simulated robot
"""
from __future__ import annotations

import argparse
import sys

from motus_ros.graph import describe_graph
from motus_ros.launcher import run_graph


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("scripted", "policy"), default="scripted")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--task", default="transfer_cube", choices=("transfer_cube", "insertion"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-time", type=float, default=30.0, help="policy mode: seconds of closed-loop control")
    ns = p.parse_args(argv)
    if ns.mode == "scripted":
        nodes = describe_graph({"graph": "demo", "episodes": str(ns.episodes), "task": ns.task, "seed": str(ns.seed)})
    else:
        nodes = describe_graph({"graph": "policy", "task": ns.task, "seed": str(ns.seed), "run_time": str(ns.run_time)})
    return run_graph(nodes)


if __name__ == "__main__":
    sys.exit(main())
