"""Keyboard control of the episode recorder for the operator.

    recorder_cli [--recorder /recorder] [--task NAME] [--instruction TEXT] [--operator NAME]

Keys (single key presses in a terminal; in a pipe or a plain console, one key per line):

    s  start an episode          g  stop, success (good)      f  stop, failure
    d  discard (the running episode, else the last kept one)  q  quit

The status line shows the episode, its elapsed time, the live rate of every recorded topic, the
write queue and the disk write speed, from the recorder's ``~/status`` (RecorderStatus). Topics
that are silent are flagged, and at stop the recorder's answer lists topics never received.
"""
from __future__ import annotations

import argparse
import os
import select
import sys
import time

import motus_ros  # noqa: F401  (DDS environment before rclpy)
import rclpy
from rclpy.node import Node

from motus_msgs.msg import RecorderStatus
from motus_msgs.srv import DiscardEpisode, StartEpisode, StopEpisode

STATE_NAMES = {RecorderStatus.STATE_IDLE: "idle", RecorderStatus.STATE_RECORDING: "REC",
               RecorderStatus.STATE_FINALIZING: "saving", RecorderStatus.STATE_ERROR: "ERROR"}
HELP = "keys: [s]tart  [g]ood/success  [f]ailure  [d]iscard  [q]uit"


class _Keys:
    """Non-blocking key reader: cbreak mode on a terminal, line mode otherwise (pipes, IDE consoles)."""

    def __init__(self, stream=sys.stdin):
        self.stream = stream
        self.fd = stream.fileno()
        self.tty = os.isatty(self.fd)
        self._saved = None
        self._buf = ""
        self.closed = False
        if self.tty:
            import termios
            import tty

            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)

    def restore(self) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def poll(self, timeout: float) -> list[str]:
        if self.closed:
            time.sleep(timeout)
            return []
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        data = os.read(self.fd, 1024).decode(errors="ignore")
        if not data:
            self.closed = True  # stdin closed (end of a pipe): keep showing status until 'q' was seen
            return []
        if self.tty:
            return [c.lower() for c in data if not c.isspace()]
        self._buf += data
        keys = []
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            if line.strip():
                keys.append(line.strip()[0].lower())
        return keys


def format_status(st: RecorderStatus | None, now_age: float) -> str:
    if st is None:
        return "waiting for the recorder's status..."
    state = STATE_NAMES.get(st.state, str(st.state))
    parts = [f"[{state}]"]
    if st.state in (RecorderStatus.STATE_RECORDING, RecorderStatus.STATE_FINALIZING):
        m, s = divmod(st.elapsed, 60.0)
        parts.append(f"{st.episode_id} {int(m):02d}:{s:04.1f}")
    parts.append(f"kept {st.episodes_recorded}")
    rates = []
    for t in st.topics:
        name = t.topic.rsplit("/", 2)[-2] if t.topic.count("/") >= 2 else t.topic.strip("/")
        if t.age < 0 or t.age > 2.0:
            rates.append(f"{name}:SILENT")
        elif t.topic.endswith("camera_info"):
            continue
        else:
            rates.append(f"{name}:{t.rate_hz:.0f}Hz")
        if t.dropped:
            rates[-1] += f"(drop {t.dropped})"
    parts.append(" ".join(rates))
    parts.append(f"queue {st.queued_bytes / 2**20:.1f}MB write {st.write_mb_s:.0f}MB/s")
    if st.message:
        parts.append(st.message)
    if now_age > 3.0:
        parts.append(f"(status {now_age:.0f}s old: is the recorder running?)")
    return " | ".join(parts)


class RecorderCli(Node):
    def __init__(self, args):
        super().__init__("recorder_cli")
        ns = args.recorder.rstrip("/")
        self.args = args
        self.start_cli = self.create_client(StartEpisode, f"{ns}/start_episode")
        self.stop_cli = self.create_client(StopEpisode, f"{ns}/stop_episode")
        self.discard_cli = self.create_client(DiscardEpisode, f"{ns}/discard_episode")
        self.status: RecorderStatus | None = None
        self.status_time = 0.0
        self.create_subscription(RecorderStatus, f"{ns}/status", self._on_status, 10)
        self.pending: list[tuple[str, object]] = []

    def _on_status(self, msg: RecorderStatus) -> None:
        self.status = msg
        self.status_time = time.monotonic()

    @property
    def recording(self) -> bool:
        return self.status is not None and self.status.state == RecorderStatus.STATE_RECORDING

    def _call(self, what: str, client, request) -> None:
        if not client.service_is_ready() and not client.wait_for_service(timeout_sec=2.0):
            print(f"\n{what}: the recorder's service {client.srv_name} is not available", flush=True)
            return
        self.pending.append((what, client.call_async(request)))

    def key(self, k: str) -> bool:
        """Handle one key; False means quit."""
        if k == "s":
            self._call("start", self.start_cli, StartEpisode.Request(task=self.args.task, instruction=self.args.instruction,
                                                                     operator_name=self.args.operator))
        elif k in ("g", "y"):
            self._call("stop (success)", self.stop_cli, StopEpisode.Request(outcome=StopEpisode.Request.OUTCOME_SUCCESS))
        elif k in ("f", "n"):
            self._call("stop (failure)", self.stop_cli, StopEpisode.Request(outcome=StopEpisode.Request.OUTCOME_FAILURE))
        elif k == "d":
            self._call("discard", self.discard_cli, DiscardEpisode.Request(discard_last=not self.recording, reason="operator"))
        elif k == "q":
            return False
        elif k in ("h", "?"):
            print("\n" + HELP, flush=True)
        else:
            print(f"\nunknown key {k!r}; {HELP}", flush=True)
        return True

    def report_done(self) -> None:
        still = []
        for what, fut in self.pending:
            if not fut.done():
                still.append((what, fut))
                continue
            res = fut.result()
            ok = "ok" if getattr(res, "success", False) else "FAILED"
            line = f"{what}: {ok}: {res.message}"
            missing = list(getattr(res, "missing_topics", []) or [])
            if missing:
                line += f"\n  WARNING topics never received in this episode: {', '.join(missing)}"
            print("\n" + line, flush=True)
        self.pending = still


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="recorder_cli", description=__doc__.split("\n\n")[0])
    ap.add_argument("--recorder", default="/recorder", help="the recorder node's name (its services and status live under it)")
    ap.add_argument("--task", default="", help="task of the episodes (default: the recorder's 'task' parameter)")
    ap.add_argument("--instruction", default="", help="instruction (default: the instruction topic / the recorder's parameter)")
    ap.add_argument("--operator", default="", help="operator name stored with each episode")
    ap.add_argument("--quit-timeout", type=float, default=30.0, help="at quit, wait this long for pending requests")
    ap.add_argument("--status-every", type=float, default=0.0,
                    help="seconds between status lines (default: 0.5 on a terminal, 5 otherwise)")
    argv = sys.argv[1:] if argv is None else argv
    ros_args = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    args = ap.parse_args(argv)
    rclpy.init(args=["recorder_cli", *ros_args])
    node = RecorderCli(args)
    keys = _Keys()
    tty = keys.tty
    print(HELP, flush=True)
    last_line = 0.0
    quitting = None
    try:
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.0)
            for k in keys.poll(0.05):
                if not node.key(k):
                    quitting = time.monotonic()
                    if node.recording:
                        print("\nthe episode is still recording in the recorder; stop (g/f) or discard (d) it there", flush=True)
            node.report_done()
            now = time.monotonic()
            if quitting is not None and (not node.pending or now - quitting > args.quit_timeout):
                break
            if now - last_line >= (args.status_every or (0.5 if tty else 5.0)):
                line = format_status(node.status, now - node.status_time if node.status else 0.0)
                if tty:
                    width = os.get_terminal_size().columns if sys.stdout.isatty() else 200
                    sys.stdout.write("\r" + line[: width - 1].ljust(width - 1))
                else:
                    sys.stdout.write(line + "\n")
                sys.stdout.flush()
                last_line = now
    except KeyboardInterrupt:
        pass
    finally:
        keys.restore()
        print("", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
