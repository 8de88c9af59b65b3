"""Closed-loop pipeline benchmark: observation path, command-stream timing, chunk-boundary smoothness.

    python bench/pipeline.py                 # all three parts (about 1.5 min on the 2-core machine)
    python bench/pipeline.py --quick         # fewer iterations

1. Observation path (``obs_path_ms_*``): three 480x640 rgb8 ``sensor_msgs/Image`` messages and a
   ``JointState`` are handed to the policy node's own subscription callbacks (the real node, configured,
   in this process); the clock runs from the arrival of the last of them to the policy input tensors
   being ready: synchronizer snapshot (matching, lazy decoding of the three frames), the Motus mosaic,
   resize-with-padding to 384x320, [0, 1] CHW float32 torch tensor and the min-max-normalised state.
   Target: p99 <= 5 ms.
2. Command stream (``executor_period_err_ms_*``): the executor node runs as its own process at 200 Hz
   (holding a pose from a joint-state stream published here) while a CPU-heavy policy process (the tiny
   Motus model predicting chunks back to back, all torch threads) runs beside it; the error is
   |actual - nominal| tick period, measured inside the node's command loop. Target: p99 <= 1 ms.
3. Smoothness (``boundary_vel_jump_ratio_*``, ``rms_jerk_ratio_*``): the same replayed chunks (a
   smooth 14-joint motion, replay policy aligned on the robot's state, a deterministic 0.01 rad
   chunk-to-chunk perturbation) run through sync, temporal ensembling and RTC on an ideal robot with
   an injected inference delay of 10 actions; velocity jump = largest deviation of the commanded
   velocity from the pre-switch trajectory during a hand-over (motus_core.runtime.metrics), RMS jerk
   of the 200 Hz command positions; both as ratios to sync (lower is better).

The last line printed is the JSON result.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402


def _pct(x, q):
    return float(np.percentile(np.asarray(x), q))


# ------------------------------------------------------------------------------------ 1. obs path
def bench_obs_path(iters: int, rt_priority: int = 0) -> dict:
    import motus_ros  # noqa: F401
    import rclpy
    import torch
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image, JointState

    from motus_core.preprocessing import MinMaxNormalizer, motus_model_image, to_unit_chw
    from motus_core.runtime.offline import synthetic_motion
    from motus_core.robot_profile import load_profile
    from motus_ros.nodes.policy_node import PolicyNode
    from motus_ros.conversions import time_msg as sec_to_stamp

    profile = load_profile("aloha_agilex_2")  # real camera size: 3 x 640x480
    tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
    np.save(Path(tmp) / "m.npy", synthetic_motion(profile, 5.0))
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(os.environ.get("ROS_DOMAIN_ID", "0")))
    node = PolicyNode(context=ctx, parameter_overrides=[
        Parameter("robot", value="aloha_agilex_2"), Parameter("policy", value=f"replay:{tmp}/m.npy"),
        Parameter("autostart", value=False)])
    node.trigger_configure()
    normalizer = MinMaxNormalizer(profile.position_lower, profile.position_upper)
    rng = np.random.default_rng(0)
    frames = {}
    for role, cam in profile.cameras.items():
        m = Image(height=cam.height, width=cam.width, encoding="rgb8", step=cam.width * 3)
        m.data = rng.integers(0, 255, cam.height * cam.width * 3, dtype=np.uint8).tobytes()
        frames[role] = m
    callbacks = {role: node._image_cb(role) for role in profile.cameras}
    joint_cbs = [(src, node._joint_cb(src.topic)) for src in profile.state_sources]
    times, cpu = [], []
    torch.set_num_threads(1)
    if rt_priority > 0:  # as the policy node does with its realtime_priority parameter
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
    for k in range(iters + 20):
        t = 100.0 + k / 30.0
        stamp = sec_to_stamp(t)
        for src, cb in joint_cbs:
            js = JointState(name=list(src.names), position=rng.normal(0, 0.1, len(src.names)).tolist())
            js.header.stamp = sec_to_stamp(t + 0.001)
            cb(js)
        order = ("high", "left_wrist", "right_wrist")
        for role in order[:-1]:
            frames[role].header.stamp = stamp
            callbacks[role](frames[role])
        frames[order[-1]].header.stamp = stamp
        t0 = time.perf_counter()
        c0 = time.thread_time()
        callbacks[order[-1]](frames[order[-1]])  # the last arrival
        res = node.sync.snapshot(t + 0.002)
        obs = res.observation
        assert obs is not None, res.reason
        image = torch.from_numpy(to_unit_chw(motus_model_image(obs.images)))[None]
        state = torch.from_numpy(normalizer.normalize(obs.state)).float()[None]
        t1 = time.perf_counter()
        c1 = time.thread_time()
        assert image.shape == (1, 3, 384, 320) and state.shape == (1, 14)
        if k >= 20:
            times.append((t1 - t0) * 1000)
            cpu.append((c1 - c0) * 1000)
    if rt_priority > 0:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    node._release()
    node.destroy_node()
    rclpy.shutdown(context=ctx)
    return {"obs_path_ms_p50": _pct(times, 50), "obs_path_ms_p99": _pct(times, 99), "obs_path_ms_max": float(np.max(times)),
            "obs_path_cpu_ms_p50": _pct(cpu, 50), "obs_path_cpu_ms_p99": _pct(cpu, 99)}


# ------------------------------------------------------------------------------------ 2. executor
def burn_policy(seconds: float) -> None:
    """A CPU-heavy policy process: the tiny Motus model predicting chunks back to back."""
    import torch

    from motus_core.policy.base import Observation, PolicyRequest
    from motus_core.policies import load_policy
    from motus_core.robot_profile import load_profile

    torch.set_num_threads(os.cpu_count() or 2)
    profile = load_profile("sim_aloha")
    policy = load_policy("tiny_motus", profile=profile)
    policy.set_instruction("transfer the cube")
    images = {r: np.zeros((c.height, c.width, 3), np.uint8) for r, c in profile.cameras.items()}
    obs = Observation(images=images, state=np.asarray(profile.home), stamp=0.0)
    print("BURNING", flush=True)
    n = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            policy.predict(PolicyRequest(obs))
            n += 1
    except KeyboardInterrupt:
        pass
    print(f"burner: {n} chunks", flush=True)


def bench_executor(seconds: float, rt_priority: int) -> dict:
    import motus_ros
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from motus_core.robot_profile import load_profile
    from motus_ros.conversions import time_msg as sec_to_stamp

    env = motus_ros.configure_ros_environment(dict(os.environ))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    tmp = Path(tempfile.mkdtemp(prefix="bench_exec_"))
    summary = tmp / "summary.json"
    burner = subprocess.Popen([sys.executable, __file__, "--burn", str(seconds + 30)], env=env, stdout=subprocess.PIPE, text=True)
    assert burner.stdout.readline().strip() == "BURNING"
    profile = load_profile("sim_aloha")
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bench_joint_states", context=ctx)
    pub = node.create_publisher(JointState, "/joint_states", QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    execp = subprocess.Popen([sys.executable, "-m", "motus_ros.nodes.executor_node", "--ros-args", "-r", "__node:=executor",
                              "-p", f"summary_file:={summary}", "-p", "policy_lease:=0.0", "-p", f"realtime_priority:={rt_priority}"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        end = time.monotonic() + seconds
        home = list(profile.home)
        while time.monotonic() < end:
            msg = JointState(name=list(profile.joint_names), position=home)
            msg.header.stamp = sec_to_stamp(time.time())
            pub.publish(msg)
            time.sleep(0.01)
    finally:
        os.killpg(execp.pid, signal.SIGINT)
        out, _ = execp.communicate(timeout=30)
        burner.send_signal(signal.SIGINT)
        try:
            burner.wait(timeout=10)
        except subprocess.TimeoutExpired:
            burner.kill()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    if not summary.is_file():
        raise RuntimeError(f"the executor wrote no summary:\n{out}")
    s = json.loads(summary.read_text())
    return {"executor_period_err_ms_p50": s["command_period_error_ms_p50"], "executor_period_err_ms_p99": s["command_period_error_ms_p99"],
            "executor_command_rate_hz": s.get("command_rate_hz", 0.0), "tick_ms_p50": s.get("command_tick_ms_p50"), "tick_ms_p99": s.get("command_tick_ms_p99")}


# ------------------------------------------------------------------------------------ 3. smoothness
def bench_smoothness(duration: float) -> dict:
    from motus_core.policies.replay import ReplayPolicy
    from motus_core.robot_profile import load_profile
    from motus_core.runtime import metrics
    from motus_core.runtime.executor import ChunkExecutor, ExecutorConfig
    from motus_core.runtime.offline import run_closed_loop, synthetic_motion
    from motus_core.runtime.safety import JointLimits

    profile = load_profile("sim_aloha")
    limits = JointLimits.from_profile(profile, use_urdf=False)
    motion = synthetic_motion(profile, duration + 5.0)
    out = {}
    for strategy in ("sync", "temporal_ensemble", "rtc"):
        policy = ReplayPolicy(motion, align="state", perturb=0.01, seed=0)
        ex = ChunkExecutor(ExecutorConfig(strategy=strategy), limits)
        run = run_closed_loop(policy, ex, duration=duration, initial_state=motion[0], inference_delay=10.0 / 30.0)
        settle = 4.0  # past the start-up fade-in
        switches = [s for s in ex.switches if s[0] >= settle]
        jumps = metrics.switch_velocity_jumps(run.times, run.velocities, switches)
        m = run.times >= settle
        out[strategy] = {"vel_jump_max": float(jumps.max()), "vel_jump_mean": float(jumps.mean()),
                         "rms_jerk": metrics.rms_jerk(run.times[m], run.positions[m]), "chunks": len(switches),
                         "limit_hits": ex.guard.hits, "delay": run.delays[-1] if run.delays else 0}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--burn", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--rt-priority", type=int, default=50,
                    help="SCHED_FIFO priority of the executor's command loop and of the observation-path thread (0 = normal scheduling)")
    ns = ap.parse_args()
    if ns.burn:
        burn_policy(ns.burn)
        return 0
    if "ROS_DOMAIN_ID" not in os.environ:
        os.environ["ROS_DOMAIN_ID"] = str(50 + os.getpid() % 50)
    result = {}
    print("== observation path (3 x 480x640 rgb8 + joint state -> policy input tensors)", flush=True)
    obs = bench_obs_path(100 if ns.quick else 400, ns.rt_priority)
    print(f"   p50 {obs['obs_path_ms_p50']:.2f} ms, p99 {obs['obs_path_ms_p99']:.2f} ms, max {obs['obs_path_ms_max']:.2f} ms (target p99 <= 5 ms); "
          f"CPU time p50 {obs['obs_path_cpu_ms_p50']:.2f} ms, p99 {obs['obs_path_cpu_ms_p99']:.2f} ms; SCHED_FIFO priority {ns.rt_priority}", flush=True)
    print("== command stream at 200 Hz beside a CPU-heavy policy process", flush=True)
    ex = bench_executor(8.0 if ns.quick else 20.0, ns.rt_priority)
    print(f"   period error p50 {ex['executor_period_err_ms_p50']:.3f} ms, p99 {ex['executor_period_err_ms_p99']:.3f} ms "
          f"({ex['executor_command_rate_hz']:.1f} Hz; target p99 <= 1 ms)", flush=True)
    print("== chunk boundaries: same replayed chunks, inference delay 10 actions", flush=True)
    sm = bench_smoothness(12.0 if ns.quick else 25.0)
    for k, v in sm.items():
        print(f"   {k:18s} velocity jump max {v['vel_jump_max']:.3f} mean {v['vel_jump_mean']:.3f} rad/s, RMS jerk {v['rms_jerk']:.1f} rad/s^3, "
              f"{v['chunks']} chunks, delay {v['delay']} actions, limit hits {v['limit_hits']}", flush=True)
    s = sm["sync"]
    result.update({k: obs[k] for k in ("obs_path_ms_p50", "obs_path_ms_p99")})
    result.update({k: ex[k] for k in ("executor_period_err_ms_p50", "executor_period_err_ms_p99")})
    result["boundary_vel_jump_ratio_te"] = sm["temporal_ensemble"]["vel_jump_max"] / s["vel_jump_max"]
    result["boundary_vel_jump_ratio_rtc"] = sm["rtc"]["vel_jump_max"] / s["vel_jump_max"]
    result["rms_jerk_ratio_te"] = sm["temporal_ensemble"]["rms_jerk"] / s["rms_jerk"]
    result["rms_jerk_ratio_rtc"] = sm["rtc"]["rms_jerk"] / s["rms_jerk"]
    print(json.dumps({k: round(v, 4) for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
