"""Closed-loop part of the graph: the policy node (GPU) and the chunk executor.

Topics between them (fixed names, see docs/runtime.md): ``/policy/action_chunk``, ``/policy/status``
(liveliness heartbeat), ``/policy/predicted_future``, ``/executor/plan`` (chunk request + RTC prefix),
``/executor/status``. With ``run_time`` > 0 the executor stops the robot after that many seconds,
prints a summary and exits, which ends the graph (it is then the required node).
"""
from __future__ import annotations

from motus_core.runtime.strategies import strategy_names

from .spec import Argument, NodeSpec

ARGUMENTS = (
    Argument("policy", "", "policy: tiny_motus, replay:<file.npy|file.pt|dataset#episode>, or a checkpoint directory "
             "(default tiny_motus in the simulator; required on real hardware)"),
    Argument("policy_options", "", "policy options, space separated key=value (e.g. 'align=state perturb=0.01' for replay)"),
    Argument("device", "cpu", "policy device (cpu, cuda, cuda:1)"),
    Argument("strategy", "", "chunk execution strategy ('' = executor.yaml's, else the executor's default rtc)", choices=("",) + strategy_names()),
    Argument("instruction", "transfer the cube to the other arm", "language instruction"),
    Argument("run_time", "0", "policy graph: seconds of closed-loop control before stopping (0 = until interrupted)"),
    Argument("command_interface", "", "executor output: auto (the profile's first), joint_trajectory, joint_state, follow_joint_trajectory "
             "('' = executor.yaml's, else auto)", choices=("", "auto", "joint_trajectory", "joint_state", "follow_joint_trajectory")),
    Argument("summary_file", "", "policy graph: the executor writes its run summary (JSON) here"),
)


SIM_DEFAULT_POLICY = "tiny_motus"


def policy_nodes(args: dict[str, str]) -> list[NodeSpec]:
    sim = args.get("hardware", "sim") == "sim"
    policy = args["policy"] or (SIM_DEFAULT_POLICY if sim else "")
    if not policy:
        # a random-weight test model must never drive a real robot by default
        raise ValueError("argument 'policy' is required with a real robot (hardware:=none): pass policy:=<checkpoint "
                         "directory | replay:...>; only the simulator defaults to tiny_motus")
    policy_params = {"policy": policy, "instruction": args["instruction"], "device": args["device"]}
    options = args.get("policy_options", "").split()
    if options:
        policy_params["options"] = options
    run_time = float(args["run_time"])
    # real hardware: the executor starts disabled and waits for ~/enable (or a RunTask goal with enable)
    executor_params = {"run_time": run_time, "hardware": "sim" if sim else "real"}
    # arguments left empty were not given: the YAML (or the dataclass default) decides, never the argument's default
    for name in ("strategy", "command_interface"):
        if args.get(name):
            executor_params[name] = args[name]
    if args.get("summary_file"):
        executor_params["summary_file"] = args["summary_file"]
    return [
        NodeSpec(name="policy", executable="policy_node", parameters=["policy.yaml", policy_params]),
        NodeSpec(name="executor", executable="executor_node", parameters=["executor.yaml", executor_params], required=run_time > 0),
    ]
