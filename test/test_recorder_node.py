"""Recorder node across processes: services, status, topics never received, discard, SIGINT, SIGKILL, keyboard CLI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from motus_core.data.bag_reader import FINISHED, UNFINISHED, bag_state, count_messages, read_messages
from motus_core.data.episode import COMPLETE, DISCARDED, INCOMPLETE, RECORDING, list_episodes, read_metadata
from test.helpers import ROOT, node_process, stop_process, wait_until

FAKE_ROBOT = ROOT / "test" / "nodes" / "fake_robot.py"
CAM = "/cam_high/image_raw"


def _fake_robot(*extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(FAKE_ROBOT), "--duration", "120", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _recorder(out: Path, *params: str) -> subprocess.Popen:
    return node_process("motus_ros.nodes.recorder_node", "-p", f"output_dir:={out}", "-p", "flush_period_s:=0.2",
                        "-p", "min_free_mb:=1.0", *params)


def _kill(*procs):
    for p in procs:
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class _Client:
    def __init__(self, ctx):
        import rclpy
        from motus_msgs.msg import RecorderStatus
        from motus_msgs.srv import DiscardEpisode, StartEpisode, StopEpisode

        from rclpy.executors import SingleThreadedExecutor

        self.node = rclpy.create_node("recorder_test_client", context=ctx)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.node)
        self.start = self.node.create_client(StartEpisode, "/recorder/start_episode")
        self.stop = self.node.create_client(StopEpisode, "/recorder/stop_episode")
        self.discard = self.node.create_client(DiscardEpisode, "/recorder/discard_episode")
        self.status = None
        self.node.create_subscription(RecorderStatus, "/recorder/status", lambda m: setattr(self, "status", m), 10)
        self.types = (StartEpisode, StopEpisode, DiscardEpisode)

    def spin(self):
        self.executor.spin_once(timeout_sec=0.02)

    def call(self, client, request, timeout=60.0):
        assert client.wait_for_service(timeout_sec=30.0), f"{client.srv_name} not available"
        fut = client.call_async(request)
        assert wait_until(fut.done, timeout, spin=self.spin), f"{client.srv_name} did not answer"
        return fut.result()

    def rate(self, topic):
        if self.status is None:
            return 0.0
        return next((t.rate_hz for t in self.status.topics if t.topic == topic), 0.0)

    def received(self, topic):
        if self.status is None:
            return 0
        return next((t.received for t in self.status.topics if t.topic == topic), 0)


def test_services_status_missing_topics_discard_and_sigint(tmp_path, ros_context):
    out = tmp_path / "episodes"
    rec = _recorder(out, "-p", "task:=pick_cube")
    # the instruction is published once, before the episode: its value is still recorded in the episode
    robot = _fake_robot("--skip", "/cam_right_wrist/camera_info", "--instruction-period", "1000")
    client = _Client(ros_context)
    StartEpisode, StopEpisode, DiscardEpisode = client.types
    try:
        # live rates are published before any episode
        assert wait_until(lambda: client.rate(CAM) > 10 and client.rate("/joint_states") > 50, 60, spin=client.spin), \
            rec.stdout and "no status with live rates"
        r = client.call(client.start, StartEpisode.Request(instruction="", task="", operator_name="ann"))
        assert r.success, r.message
        first = r.episode_id
        assert Path(r.path) == out / first and read_metadata(out / first).state == RECORDING
        assert read_metadata(out / first).instruction == "pick up the cube"  # from the instruction topic
        assert wait_until(lambda: client.received(CAM) >= 20, 60, spin=client.spin)
        r = client.call(client.stop, StopEpisode.Request(outcome=StopEpisode.Request.OUTCOME_SUCCESS, notes="clean"))
        assert r.success, r.message
        # a topic of the profile that never arrived is reported at stop
        assert list(r.missing_topics) == ["/cam_right_wrist/camera_info"] and "never received" in r.message
        meta = read_metadata(out / first)
        assert meta.state == COMPLETE and meta.outcome == "success" and meta.operator == "ann" and meta.task == "pick_cube"
        counts = count_messages(out / first / "bag")
        written = {t.topic: t.written for t in r.topics if t.written}
        assert counts == written and counts[CAM] >= 20 and counts["/joint_states"] > counts[CAM]
        assert counts["/instruction"] == 1
        assert all(t.dropped == 0 for t in r.topics)
        raw = next(read_messages(out / first / "bag", {CAM}))
        from test.data_helpers import TS

        img = TS.deserialize_cdr(raw.data, raw.msgtype)
        assert (img.height, img.width, img.encoding) == (240, 320, "rgb8")

        # discard the running episode
        r = client.call(client.start, StartEpisode.Request(instruction="stack", task="stack"))
        assert r.success
        second = r.episode_id
        r = client.call(client.discard, DiscardEpisode.Request(discard_last=False, reason="bad grasp"))
        assert r.success and r.episode_id == second
        assert read_metadata(out / second).state == DISCARDED and not (out / second / "bag").exists()

        # SIGINT in the middle of an episode: the bag is closed, the episode kept as incomplete
        r = client.call(client.start, StartEpisode.Request(instruction="pick", task="pick"))
        third = r.episode_id
        assert wait_until(lambda: client.received(CAM) >= 10, 60, spin=client.spin)
        log = stop_process(rec, timeout=30)
        meta = read_metadata(out / third)
        assert meta.state == INCOMPLETE and "SIGINT" in meta.error, log
        assert bag_state(out / third / "bag") == FINISHED and count_messages(out / third / "bag")[CAM] >= 10
    finally:
        _kill(rec, robot)
        client.executor.shutdown()
        client.node.destroy_node()


def test_keyboard_cli_and_sigkill(tmp_path):
    out = tmp_path / "episodes"
    rec = _recorder(out, "-p", "storage:=sqlite3", "-p", "instruction:=pick up the cube")
    robot = _fake_robot()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cli = subprocess.Popen([sys.executable, "-m", "motus_ros.nodes.recorder_cli", "--task", "cli_task", "--operator", "bob",
                            "--status-every", "1"],
                           env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    lines: list[str] = []

    def read_line():
        import select

        r, _, _ = select.select([cli.stdout], [], [], 0.1)
        if r:
            line = cli.stdout.readline()
            if line:
                lines.append(line)

    def read_until(pred, timeout=60.0):
        return wait_until(pred, timeout, spin=read_line)

    def episodes():
        return {e.meta.episode_id: e for e in list_episodes(out)[0]} if out.is_dir() else {}

    try:
        # status lines show live rates (plain, non-tty output: a line every few seconds)
        assert read_until(lambda: any("[idle]" in x and "cam_high:" in x and "Hz" in x for x in lines)), "".join(lines)
        cli.stdin.write("s\n")
        cli.stdin.flush()
        assert read_until(lambda: any("start: ok" in x for x in lines)), "".join(lines)
        (first,) = episodes()
        assert wait_until(lambda: read_metadata(out / first).topics and bag_state(out / first / "bag") == UNFINISHED
                          and count_messages(out / first / "bag").get(CAM, 0) >= 10, 60)
        cli.stdin.write("g\n")
        cli.stdin.flush()
        assert read_until(lambda: any("stop (success): ok" in x for x in lines)), "".join(lines)
        meta = read_metadata(out / first)
        assert meta.state == COMPLETE and meta.outcome == "success" and meta.task == "cli_task" and meta.operator == "bob"
        assert meta.storage == "sqlite3" and bag_state(out / first / "bag") == FINISHED

        # second episode, then the recorder is killed without warning
        cli.stdin.write("s\n")
        cli.stdin.flush()
        assert read_until(lambda: sum("start: ok" in x for x in lines) == 2), "".join(lines)
        second = next(e for e in episodes() if e != first)
        assert wait_until(lambda: count_messages(out / second / "bag").get(CAM, 0) >= 10, 60)
        os.killpg(rec.pid, signal.SIGKILL)
        rec.wait()
        ep = episodes()[second]
        assert ep.meta.state == RECORDING and ep.effective_state == INCOMPLETE
        assert bag_state(ep.bag) == UNFINISHED and count_messages(ep.bag)[CAM] >= 10
        cli.stdin.write("q\n")
        cli.stdin.flush()
        assert cli.wait(30) == 0
    finally:
        _kill(rec, robot, cli)
