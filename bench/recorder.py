"""Recorder + converter benchmark: 3 cameras 480x640 rgb8 @ 30 Hz + joint states @ 200 Hz across processes.

    python bench/recorder.py [--duration 60] [--storage mcap] [--keep DIR]

Processes: the recorder node (``motus_ros.nodes.recorder_node``) and a synthetic robot
(``test/nodes/fake_robot.py``: 3 x Image 640x480 rgb8 + CameraInfo at 30 Hz, follower and leader
JointState at 200 Hz each, instruction at 1 Hz). This process starts an episode, lets the robot
publish for ``--duration`` seconds, stops the episode and compares messages published with
messages written to the bag, per topic. Then it converts the episode to the Motus layout
(in-process, no text encoder) and times it.

Final JSON line: ``published``/``recorded`` per topic, ``lost_messages`` (target 0),
``recorder_cpu_pct`` (percent of one core, averaged over the episode), ``write_mb_s`` (bag bytes /
episode seconds), ``max_queued_mb``, ``dropped_by_recorder``, ``converter_realtime_factor``
(seconds of episode per second of conversion, target >= 5), ``converter_s``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

import motus_ros  # noqa: E402,F401  (DDS environment before rclpy; children inherit it)


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of publishing (default 60)")
    ap.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--keep", type=Path, help="keep the episodes and dataset in this directory")
    ap.add_argument("--no-convert", action="store_true")
    ap.add_argument("--best-effort", action="store_true",
                    help="BEST_EFFORT publishers (default: RELIABLE, like ros2_control and most camera drivers)")
    args = ap.parse_args()

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from motus_msgs.msg import RecorderStatus
    from motus_msgs.srv import StartEpisode, StopEpisode

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    work.mkdir(parents=True, exist_ok=True)
    episodes = work / "episodes"
    rec = _spawn([sys.executable, "-m", "motus_ros.nodes.recorder_node", "--ros-args", "-p", f"output_dir:={episodes}",
                  "-p", f"storage:={args.storage}", "-p", "task:=bench", "-p", "instruction:=bench", "-p", "min_free_mb:=1024.0"],
                 work / "recorder.log")
    robot = None
    rclpy.init()
    node = rclpy.create_node("bench_recorder")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    start = node.create_client(StartEpisode, "/recorder/start_episode")
    stop = node.create_client(StopEpisode, "/recorder/stop_episode")
    max_queued = [0]
    node.create_subscription(RecorderStatus, "/recorder/status", lambda m: max_queued.__setitem__(0, max(max_queued[0], m.queued_bytes)), 10)

    def call(client, req, timeout=300.0):
        if not client.wait_for_service(timeout_sec=60.0):
            raise RuntimeError(f"{client.srv_name} not available (see {work / 'recorder.log'})")
        fut = client.call_async(req)
        ex.spin_until_future_complete(fut, timeout_sec=timeout)
        if not fut.done():
            raise RuntimeError(f"{client.srv_name} did not answer")
        return fut.result()

    try:
        go = work / "go"
        go.unlink(missing_ok=True)
        robot = _spawn([sys.executable, str(ROOT / "test" / "nodes" / "fake_robot.py"), "--duration", str(args.duration),
                        "--height", str(args.height), "--width", str(args.width), "--go-file", str(go),
                        *([] if args.best_effort else ["--reliable"])], work / "robot.log")
        deadline = time.monotonic() + 60.0
        while "READY" not in (work / "robot.log").read_text():
            ex.spin_once(timeout_sec=0.1)
            if time.monotonic() > deadline or robot.poll() is not None:
                raise RuntimeError(f"the synthetic robot did not start (see {work / 'robot.log'})")
        if not args.best_effort:
            # the recorder (qos_reliability auto) re-subscribes RELIABLE once it has seen the publishers
            deadline = time.monotonic() + 30.0
            while (work / "recorder.log").read_text().count("is now RELIABLE") < 9 and time.monotonic() < deadline:
                ex.spin_once(timeout_sec=0.1)
        r = call(start, StartEpisode.Request(task="bench", instruction="bench"))
        if not r.success:
            raise RuntimeError(r.message)
        proc = psutil.Process(rec.pid)
        cpu0, t0 = proc.cpu_times(), time.monotonic()
        go.touch()
        while robot.poll() is None:
            ex.spin_once(timeout_sec=0.1)
        end = time.monotonic() + 2.0  # messages in flight
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.1)
        cpu1, t1 = proc.cpu_times(), time.monotonic()
        r = call(stop, StopEpisode.Request(outcome=StopEpisode.Request.OUTCOME_SUCCESS))
        lines = (work / "robot.log").read_text().splitlines()
        published = json.loads(next(x for x in reversed(lines) if x.startswith("{")))["published"]
        recorded = {t.topic: int(t.written) for t in r.topics}
        dropped = {t.topic: int(t.dropped) for t in r.topics if t.dropped}
        lost = sum(max(0, n - recorded.get(t, 0)) for t, n in published.items())
        cpu_pct = 100.0 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (t1 - t0)
        episode_dir = Path(r.path)
        meta = json.loads((episode_dir / "episode.json").read_text())
        result = {
            "duration_s": args.duration, "storage": args.storage, "publisher_qos": "best_effort" if args.best_effort else "reliable",
            "load_avg_1m": round(os.getloadavg()[0], 2), "image_hw": [args.height, args.width],
            "published": published, "recorded": {t: recorded.get(t, 0) for t in published},
            "lost_messages": lost, "dropped_by_recorder": dropped,
            "recorder_cpu_pct": round(cpu_pct, 1),
            "write_mb_s": round(meta["bytes_written"] / 1e6 / args.duration, 1),
            "max_queued_mb": round(max_queued[0] / 2**20, 1),
            "bag_gb": round(sum(f.stat().st_size for f in (episode_dir / "bag").iterdir()) / 1e9, 2),
        }
    except BaseException:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if robot is not None:
            _stop(robot)
        _stop(rec)
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()

    if not args.no_convert:
        from motus_core.data.convert import ConvertConfig, Converter

        os.sync()  # the bag's dirty pages reach the disk first: the converter is timed on its own
        t = time.perf_counter()
        summary = Converter(ConvertConfig(episodes_dir=episodes, output_dir=work / "dataset", progress=False)).run()
        conv_s = time.perf_counter() - t
        ep = summary.episodes[0]
        report = json.loads((work / "dataset" / "sync_reports" / f"{ep.episode_id}.json").read_text())
        result.update({"converter_status": ep.status, "converter_frames": ep.frames, "converter_s": round(conv_s, 2),
                       "converter_realtime_factor": round(report["duration_s"] / conv_s, 2)})
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
