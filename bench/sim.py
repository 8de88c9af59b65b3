"""Simulator benchmark: tick cost, image delivery latency, scripted demonstration success rates.

    python bench/sim.py [--episodes 50] [--ticks 150] [--latency-seconds 8] [--skip-demos]

* ``tick_ms_240x320`` / ``tick_ms_480x640``: wall ms of one 30 Hz tick of the simulator as the sim
  node runs it (17 physics steps of 2 ms following a trajectory + the three cameras rendered),
  median over ``--ticks`` ticks, measured in a child process pinned to one CPU core with llvmpipe
  limited to one thread (``LP_NUM_THREADS=1``). Also the physics and render parts. Target: <= 25 ms
  at 240x320.
* ``image_latency_ms_p50/_p99`` with suffix ``_inproc`` (publisher and subscriber in one process)
  and ``_xproc`` (subscriber in another process; Fast DDS shared-memory profile of motus_ros): from
  the stamp taken just before the sim node's image conversion (``motus_ros.conversions.image_msg``)
  to the subscriber's callback, for 3 cameras at 240x320 rgb8, 30 Hz, best-effort QoS as the sim
  publishes them.
* ``demo_success_transfer_cube`` / ``demo_success_insertion``: success rate of the scripted
  demonstrator over ``--episodes`` seeded episodes (seeds 0..N-1) on the simulator without ROS
  (the same physics, commands held between 30 Hz ticks as the leader stream does).

CPU only on this machine; the figures depend on the load of the (shared) machine. The final line of
stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CAMERAS = ("high", "left_wrist", "right_wrist")


def _pct(values, q):
    import numpy as np

    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


# -- tick cost (child process, one core) ---------------------------------------------------------

TICK_CHILD = r"""
import json, os, sys, time
import numpy as np
import motus_core.sim
from motus_core.sim import AlohaSim
from motus_core.sim.commands import CommandInterpreter
from motus_core.robot_profile import load_profile
from motus_core.sim.render import CameraRenderer
w, h, ticks = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sim = AlohaSim("transfer_cube", offscreen_size=(w, h))
profile = load_profile("sim_aloha")
names = list(profile.joint_names)
target = np.array(profile.home) + np.r_[0.3, 0.2, -0.2, 0.2, 0.2, 0.2, 0.5, -0.3, 0.2, -0.2, -0.2, 0.2, -0.2, 0.5]
goal = CommandInterpreter(profile).trajectory({n: n for n in names}, names, [(ticks / 30.0 + 1.0, target, [], [])], start=0.0)
sim.command_trajectory(goal, start_now=True)  # the follower interpolates at every physics step
phys, rend, total = [], [], []
with CameraRenderer(sim.model, w, h) as r:
    out = {c: np.empty((h, w, 3), np.uint8) for c in ("high", "left_wrist", "right_wrist")}
    for k in range(ticks + 10):
        t0 = time.perf_counter()
        sim.step(17)
        sim.update_task()
        t1 = time.perf_counter()
        for c in out:
            r.render(sim.data, c, out=out[c])
        t2 = time.perf_counter()
        if k >= 10:  # warm-up: first frames compile shaders and upload meshes
            phys.append(t1 - t0); rend.append(t2 - t1); total.append(t2 - t0)
print(json.dumps({"physics": float(np.median(phys)) * 1e3, "render": float(np.median(rend)) * 1e3,
                  "total": float(np.median(total)) * 1e3, "total_p90": float(np.percentile(total, 90)) * 1e3,
                  "cpu": sorted(os.sched_getaffinity(0))}))
"""


def tick_cost(width: int, height: int, ticks: int) -> dict:
    env = dict(os.environ, LP_NUM_THREADS="1", MUJOCO_GL="egl", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cpu = sorted(os.sched_getaffinity(0))[-1]

    def pin():
        os.sched_setaffinity(0, {cpu})

    out = subprocess.run([sys.executable, "-c", TICK_CHILD, str(width), str(height), str(ticks)], env=env, cwd=ROOT,
                         capture_output=True, text=True, preexec_fn=pin, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"tick benchmark failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- image latency ---------------------------------------------------------------------------------

SUB_CHILD = r"""
import json, sys, time
import motus_ros
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
from sensor_msgs.msg import Image
seconds, out = float(sys.argv[1]), sys.argv[2]
rclpy.init()
node = rclpy.create_node("latency_sub")
lat = []
def cb(m):
    stamp = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
    lat.append((stamp, time.time() - stamp))
qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
for c in ("high", "left_wrist", "right_wrist"):
    node.create_subscription(Image, f"/bench_cam_{c}/image_raw", cb, qos)
print("ready", flush=True)
t0 = time.monotonic()
while time.monotonic() - t0 < seconds:
    rclpy.spin_once(node, timeout_sec=0.05)
json.dump(lat, open(out, "w"))
"""


def image_latency(seconds: float, cross_process: bool, width: int = 320, height: int = 240) -> dict:
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from motus_ros.conversions import image_msg, time_msg

    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    rclpy.init()
    pub_node = rclpy.create_node("latency_pub")
    pubs = {c: pub_node.create_publisher(Image, f"/bench_cam_{c}/image_raw", qos) for c in CAMERAS}
    lat: list[float] = []
    child = None
    tmp = tempfile.mkdtemp(prefix="simbench_")
    ex = SingleThreadedExecutor()
    if cross_process:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        child = subprocess.Popen([sys.executable, "-c", SUB_CHILD, str(seconds + 4.0), f"{tmp}/lat.json"], env=env, cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        child.stdout.readline()  # "ready"
    else:
        sub_node = rclpy.create_node("latency_sub")
        def cb(m):
            stamp = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
            lat.append((stamp, time.time() - stamp))

        for c in CAMERAS:
            sub_node.create_subscription(Image, f"/bench_cam_{c}/image_raw", cb, qos)
        ex.add_node(sub_node)
    deadline = time.monotonic() + 20.0
    while any(p.get_subscription_count() == 0 for p in pubs.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    rng = np.random.default_rng(0)
    frames = {c: rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for c in CAMERAS}
    stop = threading.Event()

    warmup = 1.0  # s of frames not counted: subscriber start-up, first-frame allocations
    t_count = time.time() + warmup

    def publish():
        period = 1.0 / 30.0
        nxt = time.monotonic()
        end = nxt + warmup + seconds
        while nxt < end and not stop.is_set():
            for c in CAMERAS:
                stamp = time_msg(time.time())  # the sim stamps, then converts and publishes
                pubs[c].publish(image_msg(frames[c], stamp, f"cam_{c}_optical"))
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))

    th = threading.Thread(target=publish)
    th.start()
    if cross_process:
        th.join()
        child.wait(timeout=seconds + 30)
        lat = json.loads(Path(f"{tmp}/lat.json").read_text())
    else:
        while th.is_alive():
            ex.spin_once(timeout_sec=0.05)
        t_end = time.monotonic() + 0.5
        while time.monotonic() < t_end:
            ex.spin_once(timeout_sec=0.05)
    stop.set()
    th.join()
    rclpy.shutdown()
    expected = int(round(seconds * 30)) * len(CAMERAS)
    ms = [1e3 * dt for stamp, dt in lat if stamp >= t_count]
    return {"p50": _pct(ms, 50), "p99": _pct(ms, 99), "received": len(ms), "sent": expected}


# -- scripted demonstrations ---------------------------------------------------------------------------

def demo_success(task: str, episodes: int) -> dict:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from tqdm import tqdm

    from motus_core.sim import AlohaSim
    from motus_core.sim.demonstrator import ScriptedDemonstrator, run_episode

    sim = AlohaSim(task)
    demo = ScriptedDemonstrator(task)
    ok = 0
    failed = []
    t0 = time.perf_counter()
    for seed in tqdm(range(episodes), desc=f"scripted {task}", file=sys.stderr):
        r = run_episode(sim, demo, seed)
        ok += r.success
        if not r.success:
            failed.append(seed)
    return {"rate": ok / max(episodes, 1), "failed_seeds": failed, "s_per_episode": (time.perf_counter() - t0) / max(episodes, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=50, help="seeded episodes per task for the success rates")
    p.add_argument("--ticks", type=int, default=150, help="30 Hz ticks timed per image size")
    p.add_argument("--latency-seconds", type=float, default=8.0, help="seconds of 3 x 30 Hz images per latency run")
    p.add_argument("--skip-demos", action="store_true", help="skip the success-rate part (the longest)")
    ns = p.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    import motus_ros  # noqa: F401  (DDS environment before rclpy; children inherit it)

    result: dict = {"device": "cpu (llvmpipe EGL)", "cpu_load_1min": os.getloadavg()[0]}
    for w, h in ((320, 240), (640, 480)):
        t = tick_cost(w, h, ns.ticks)
        key = f"{h}x{w}"
        result[f"tick_ms_{key}"] = round(t["total"], 2)
        result[f"tick_ms_{key}_p90"] = round(t["total_p90"], 2)
        result[f"physics_ms_{key}"] = round(t["physics"], 3)
        result[f"render_ms_{key}"] = round(t["render"], 2)
        print(f"tick {key}: {t['total']:.1f} ms (physics {t['physics']:.2f} + 3 cameras {t['render']:.1f}) on cpu {t['cpu']}", file=sys.stderr)
    for cross, suffix in ((False, "inproc"), (True, "xproc")):
        lat = image_latency(ns.latency_seconds, cross)
        result[f"image_latency_ms_p50_{suffix}"] = round(lat["p50"], 3)
        result[f"image_latency_ms_p99_{suffix}"] = round(lat["p99"], 3)
        result[f"images_received_{suffix}"] = f"{lat['received']}/{lat['sent']}"
        print(f"image latency {suffix}: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms ({lat['received']}/{lat['sent']} received)", file=sys.stderr)
    if not ns.skip_demos:
        for task in ("transfer_cube", "insertion"):
            d = demo_success(task, ns.episodes)
            result[f"demo_success_{task}"] = round(d["rate"], 3)
            result[f"demo_failed_seeds_{task}"] = d["failed_seeds"]
            result[f"demo_s_per_episode_{task}"] = round(d["s_per_episode"], 2)
        result["demo_episodes"] = ns.episodes
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
