"""The ``main()`` of every node: init, build, spin, clean up — one place for the shutdown rules.

* Ctrl-C (SIGINT), SIGTERM and an external ``rclpy.shutdown`` end the node quietly, exit code 0
  (an interrupted required node, e.g. the demonstrator, reports its own code through ``spin``).
* Ctrl-C can tear the context down while rclpy is taking a message, which raises an RCL error inside
  the executor: after shutdown that is not an error (rclpy race), before shutdown it is re-raised.
  rclpy's signal handler shuts the context down from another thread, so the error can surface a
  moment before ``rclpy.ok()`` turns false: wait up to ``SHUTDOWN_GRACE`` s for it before deciding.
* ``on_exit(node)`` runs before the node is destroyed (summaries, closing files), also after errors.
  Further SIGINTs are ignored while it and the clean-up run: Ctrl-C under ``ros2 launch`` reaches every
  node twice (the terminal signals the whole process group, then launch forwards SIGINT), and a second
  KeyboardInterrupt inside the clean-up would print a traceback and end the process by the signal
  (launch: "process has died ... exit code -2").
* A Ctrl-C that lands in a finalizer or weakref callback (where Python prints and drops exceptions)
  is delivered again right after it, without a traceback (``_interrupt_once``).
* A node that cannot be built from its parameters (``ValueError``/``SystemExit`` in its constructor)
  prints why and exits with 2 instead of a traceback.
"""
from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
from typing import Callable, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException

N = TypeVar("N")
SHUTDOWN_GRACE = 0.5  # s
REDELIVER_DELAY = 0.01  # s


def _shutting_down(grace: float = SHUTDOWN_GRACE) -> bool:
    end = time.monotonic() + grace
    while rclpy.ok():
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)
    return True


def log_summary(node, text: str) -> None:
    """Log a node's closing summary: to /rosout while the context lives, else to stderr (after
    Ctrl-C the context, and /rosout with it, is already gone)."""
    if node.context.ok():
        node.get_logger().info(text)
    else:
        print(text, file=sys.stderr, flush=True)


def _ignore_sigint() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt_once() -> None:
    """SIGINT raises KeyboardInterrupt the first time only (installed before rclpy, whose own handler
    shuts the context down and then chains to this one).

    A KeyboardInterrupt raised while Python runs a finalizer or a weakref callback (garbage
    collection: rclpy's Task ``__del__``, importlib's module-lock callback while a model is being
    imported) cannot propagate: Python prints it as "Exception ignored in ..." and drops it, and a
    policy that was loading would go on loading. The unraisable hook catches exactly that case,
    prints nothing, and delivers the interrupt again in the main thread once the callback is over.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    state = {"raised": False, "owed": False}

    def handler(signum, frame):
        if state["raised"] and not state["owed"]:
            return  # a second Ctrl-C (launch forwards the terminal's)
        state["raised"], state["owed"] = True, False
        raise KeyboardInterrupt

    def redeliver():
        time.sleep(REDELIVER_DELAY)  # from the main thread it would run at once, inside the hook
        _thread.interrupt_main()  # ``handler`` again (not rclpy's: its context is already shut down)

    # every other unraisable exception goes to the hook that was there before (ours replaces an earlier one of ours)
    previous = getattr(sys.unraisablehook, "previous", sys.unraisablehook)

    def unraisable(info):
        if isinstance(info.exc_value, KeyboardInterrupt) and state["raised"]:
            state["owed"] = True
            threading.Thread(target=redeliver, name="redeliver-ctrl-c", daemon=True).start()
            return
        if state["raised"] and getattr(info.object, "__module__", "") == "rclpy.task":
            return  # a Future the Ctrl-C cut short in its __init__ fails in its __del__ (no _exception): nothing lost
        previous(info)

    unraisable.previous = previous
    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = unraisable


def _default_spin(node) -> int:
    rclpy.spin(node)
    return 0


def run_node(make_node: Callable[[], N], args=None, *, spin: Callable[[N], int | None] | None = None,
             on_exit: Callable[[N], None] | None = None, interrupted_code: int = 0) -> int:
    _interrupt_once()
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        try:
            node = make_node()
        except (ValueError, SystemExit) as exc:
            if isinstance(exc, SystemExit) and isinstance(exc.code, int):
                return exc.code
            print(f"{sys.argv[0] if sys.argv else 'node'}: {exc}", file=sys.stderr, flush=True)
            return 2
        code = int((spin or _default_spin)(node) or 0)
    except (KeyboardInterrupt, ExternalShutdownException):
        code = interrupted_code
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception:  # noqa: BLE001 - decided below
        if not _shutting_down():
            raise
        code = interrupted_code  # Ctrl-C tore the context down while a message was being taken
    finally:
        _ignore_sigint()
        if node is not None:
            try:
                if on_exit is not None:
                    on_exit(node)
            finally:
                node.destroy_node()
        rclpy.try_shutdown()
    return code
