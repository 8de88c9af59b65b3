"""``make demo``: run the main job on the simulated robot and print what happened.

--mode scripted  the scripted demonstrator performs episodes on the simulated robot (default)
--mode policy    the closed loop (synchronizer, policy node, chunk executor) drives the simulated robot
                 for ``--run-time`` seconds, then prints a summary (rates, latencies, limit hits,
                 chunk-boundary smoothness, task success). ``--policy demo`` (default) replays a
                 scripted demonstration recorded on the spot (ROS-free, a few seconds) through the
                 whole pipeline, unless a proof run (``make proof``, bench/learn_transfer_cube.py) has
                 trained a Motus in ``--proof-dir``: then that checkpoint drives the robot (the demo
                 says which); ``--policy tiny_motus`` runs the tiny random-weight Motus-shaped model
                 (its random actions are mostly outside the joint limits: the executor rejects them
                 and the robot holds, which the summary shows); any other value is a policy spec.

    make demo MODE=policy
    python -m motus_ros.demo --mode policy --strategy temporal_ensemble --run-time 20
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

from motus_ros.graph import describe_graph
from motus_ros.launcher import run_graph
from motus_core.runtime.strategies import strategy_names


def record_demonstration(task: str, seed: int, out_dir: Path, robot: str = "sim_aloha") -> tuple[Path, int, dict]:
    """Record the scripted demonstrator's joint targets (30 Hz) for ``task`` / ``seed``, ROS-free.

    The targets (what the leader arms command) rather than the follower's measured joints: replayed
    as commands they reproduce the demonstration (the simulated wrist servos lag their targets, so
    replaying the measured joints would command a motion that falls short of the grasp).

    Returns (file, start index, info). The start index skips the beginning of the recording up to
    its last step larger than the profile's per-step limit (an IK branch switch of the scripted
    demonstrator): the executor would rightly reject chunks containing it.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    import numpy as np

    from motus_core.robot_profile import load_profile
    from motus_core.sim.demonstrator import ScriptedDemonstrator, run_episode
    from motus_core.sim.simulator import AlohaSim

    sim = AlohaSim(task)
    qs = []
    result = run_episode(sim, ScriptedDemonstrator(task), seed=seed, on_tick=lambda obs, cmd: qs.append(np.array(cmd, dtype=float)))
    q = np.asarray(qs)
    profile = load_profile(robot)
    steps = np.abs(np.diff(q, axis=0)) > np.asarray(profile.max_step)
    jumps = np.nonzero(steps.any(axis=1))[0]
    early = jumps[jumps < len(q) // 3]
    start = int(early[-1]) + 1 if early.size else 0
    path = out_dir / f"{task}_seed{seed}.npy"
    np.save(path, q)
    info = {"episode_success": bool(result.success), "frames": int(len(q)), "start_index": start,
            "steps_above_max_step": int(jumps.size)}
    return path, start, info


class _SuccessWatcher:
    """Watches the simulator's ~/success topic while the graph runs (a node in this process)."""

    def __init__(self):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import Bool

        self.success = False
        self._ctx = Context()
        rclpy.init(context=self._ctx)
        self._node = rclpy.create_node("demo_watcher", context=self._ctx)
        self._node.create_subscription(Bool, "/sim/success", self._on, 10)
        self._ex = SingleThreadedExecutor(context=self._ctx)
        self._ex.add_node(self._node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _on(self, msg) -> None:
        self.success = self.success or bool(msg.data)

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._ex.spin_once(timeout_sec=0.1)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=2)
        self._ex.shutdown()
        self._node.destroy_node()
        rclpy.shutdown(context=self._ctx)


def proof_checkpoint(proof_dir: str | Path) -> tuple[Path, dict] | None:
    """The final checkpoint of a proof run in ``proof_dir`` and what the run measured, or None."""
    root = Path(proof_dir).expanduser()
    final = root / "train" / "final"
    if not (final / "motus_policy.yaml").is_file():
        return None
    info = {}
    for name in ("proof_result.json", "eval/real_time_factor.json"):
        f = root / name
        if f.is_file():
            try:
                info.update(json.loads(f.read_text()))
            except (OSError, ValueError):
                pass
    return final, info


def policy_demo(ns) -> int:
    import motus_ros  # noqa: F401  (DDS environment before rclpy)

    tmp = Path(tempfile.mkdtemp(prefix="motus_demo_"))
    options = ""
    policy = ns.policy
    rtf = ns.real_time_factor
    trained = proof_checkpoint(ns.proof_dir) if policy == "demo" else None
    if trained is not None:
        final, info = trained
        policy = str(final)
        rtf = rtf or float(info.get("real_time_factor", 0.25))
        figures = (f": success rate {info['success_rate_rtc']:.2f} (RTC) on seeds {info['eval_seeds']} after {info['train_steps']} "
                   f"training steps on {info['demos']} demonstrations" if "success_rate_rtc" in info else "")
        print(f"Running the Motus policy trained by the proof run in {Path(ns.proof_dir).expanduser()}{figures}; "
              f"the simulator runs at real_time_factor {rtf:g} (CPU inference).", flush=True)
    elif policy == "demo":
        print(f"No proof run has trained a policy in {Path(ns.proof_dir).expanduser()} (`make proof` trains one); "
              "replaying a scripted demonstration instead.", flush=True)
    rtf = rtf or 1.0
    if policy == "demo":
        print(f"Recording a scripted {ns.task} demonstration (seed {ns.seed}) to replay through the closed loop ...", flush=True)
        path, start, info = record_demonstration(ns.task, ns.seed, tmp)
        print(f"  {info['frames']} frames at 30 Hz, scripted episode {'succeeded' if info['episode_success'] else 'failed'}; "
              f"replay starts at frame {start}", flush=True)
        policy = f"replay:{path}"
        options = f"align=time start_index={start}"
    summary_file = tmp / "executor_summary.json"
    nodes = describe_graph({"graph": "policy", "task": ns.task, "seed": str(ns.seed), "run_time": str(ns.run_time),
                            "policy": policy, "policy_options": options, "strategy": ns.strategy, "summary_file": str(summary_file),
                            "real_time_factor": str(rtf)})
    watcher = _SuccessWatcher()
    try:
        rc = run_graph(nodes)
    finally:
        watcher.close()
    print("\n=== Demo summary (policy mode) ===")
    print(f"policy {ns.policy} ({policy}), strategy {ns.strategy}, {ns.run_time:.0f} s of closed-loop control, task {ns.task}")
    if summary_file.is_file():
        s = json.loads(summary_file.read_text())
        print(f"chunks executed {s['chunks_received']}, rejected {s['chunks_rejected']}, watchdog stops {s['watchdog_stops']}, "
              f"final state {s['state']}")
        if "inference_latency_ms_p50" in s:
            print(f"inference latency (observation complete -> chunk published): p50 {s['inference_latency_ms_p50']:.0f} ms, "
                  f"p99 {s['inference_latency_ms_p99']:.0f} ms; measured delay {s['delay_actions']}")
        if "command_rate_hz" in s:
            print(f"command stream {s['command_rate_hz']:.0f} Hz (wall clock; {s.get('command_stamps_per_s', 0):.0f} distinct sim-time "
                  f"stamps per sim second), period error p99 {s.get('command_period_error_ms_p99', 0):.2f} ms; "
                  f"limit hits {s['limit_hits']}, peak velocity {100 * s['peak_velocity_ratio']:.0f} % / acceleration "
                  f"{100 * s['peak_acceleration_ratio']:.0f} % of the limits")
            print(f"chunk boundaries (largest step of the commanded stream per 5 ms tick): position {s['boundary_step_position']:.1e} rad, "
                  f"velocity {s['boundary_step_velocity']:.4f} rad/s, acceleration {100 * s['boundary_step_acceleration_ratio']:.1f} % of the limit; "
                  f"RMS jerk {s['rms_jerk']:.1f} rad/s^3")
            print(f"plan hand-over: velocity differs from the replaced plan by at most {s['boundary_velocity_jump_max']:.3f} rad/s "
                  f"(mean {s['boundary_velocity_jump_mean']:.3f}) while blending")
    else:
        print("the executor wrote no summary (see its log above)")
    print(f"task success reported by the simulator: {'yes' if watcher.success else 'no'}")
    print("(per-stage policy latency and synchronizer stream rates: the [policy] summary above)")
    return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("scripted", "policy"), default="scripted")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--task", default="transfer_cube", choices=("transfer_cube", "insertion"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-time", type=float, default=20.0, help="policy mode: seconds of closed-loop control")
    p.add_argument("--policy", default="demo", help="policy mode: demo (replay a scripted demonstration), tiny_motus, or a policy spec")
    p.add_argument("--proof-dir", default=os.environ.get("MOTUS_PROOF_DIR", "runs/proof"),
                   help="policy mode: workdir of a proof run (make proof); its trained checkpoint replaces the replay when present")
    p.add_argument("--real-time-factor", type=float, default=0.0,
                   help="policy mode: simulation speed (default 1, or the proof run's factor for its CPU-trained checkpoint)")
    p.add_argument("--strategy", default="rtc", choices=strategy_names(), help="policy mode: chunk execution strategy")
    ns = p.parse_args(argv)
    if ns.mode == "scripted":
        return run_graph(describe_graph({"graph": "demo", "episodes": str(ns.episodes), "task": ns.task, "seed": str(ns.seed)}))
    return policy_demo(ns)


if __name__ == "__main__":
    sys.exit(main())
