"""The driver stand-ins' main loop: spin until SIGTERM (how the tests stop them), Ctrl-C or ``duration``
seconds, then write what they saw and shut down without a traceback."""
from __future__ import annotations

import signal
import time
from typing import Callable


def spin_until_stopped(node, write_out: Callable[[], None], duration: float = 0.0) -> None:
    import rclpy

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    start = time.monotonic()
    try:
        while rclpy.ok() and not stop:
            rclpy.spin_once(node, timeout_sec=0.05)
            if duration and time.monotonic() - start > duration:
                break
    except KeyboardInterrupt:
        pass
    finally:
        write_out()
        node.destroy_node()
        rclpy.try_shutdown()
