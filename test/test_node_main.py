"""run_node's shutdown rules: an RCL error raised while the context is being torn down (rclpy's
signal handler does that from another thread, a moment later) ends the node quietly; the same error
on a live context is a real error and propagates."""
from __future__ import annotations

import threading

import pytest

import motus_ros  # noqa: F401  (DDS environment before rclpy)
from motus_ros.node_main import run_node


class _Node:
    def destroy_node(self) -> None:
        pass


def test_error_during_shutdown_is_quiet():
    import rclpy

    def spin(node):
        threading.Timer(0.1, rclpy.try_shutdown).start()  # the signal handler's shutdown, slightly later
        raise RuntimeError("Unable to convert call argument '0' to Python object")

    assert run_node(_Node, [], spin=spin, interrupted_code=0) == 0


def test_error_on_a_live_context_propagates():
    def spin(node):
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):
        run_node(_Node, [], spin=spin)


_FINALIZER_SCRIPT = """
import signal, sys, time, weakref
from motus_ros import node_main

node_main._interrupt_once()

def ctrl_c_inside(where):
    signal.raise_signal(signal.SIGINT)  # the handler runs at the next bytecode: still inside the callback
    for _ in range(1000):
        pass

class Collected:
    def __del__(self):
        ctrl_c_inside("__del__")

class Target:
    pass

for case in ("finalizer", "weakref callback", "second ctrl-c"):
    try:
        if case == "finalizer":
            Collected()
        elif case == "weakref callback":
            ref = weakref.ref(Target(), lambda r: ctrl_c_inside("callback"))
        else:
            signal.raise_signal(signal.SIGINT)
        time.sleep(1.0)  # the interrupt is delivered during the main code's next bytecodes (at most ~10 ms)
        print(case, "not delivered", flush=True)
    except KeyboardInterrupt:
        print(case, "delivered", flush=True)
    if case == "finalizer":
        node_main._interrupt_once()  # a fresh "first" interrupt for the next case

import rclpy.task

half_built = rclpy.task.Future.__new__(rclpy.task.Future)  # as when the Ctrl-C lands in Future.__init__
del half_built  # its __del__ fails (no _exception) once the interrupt was raised: nothing to report

class Broken:
    def __del__(self):
        raise ValueError("any other error in a finalizer is still reported")

Broken()
"""


def test_ctrl_c_inside_a_finalizer_or_weakref_callback_is_delivered_after_it():
    """A KeyboardInterrupt raised inside ``__del__`` or a weakref callback (rclpy's Task, importlib's
    module lock while a policy loads) would be printed as "Exception ignored" and lost; it reaches the
    main code right after the callback instead, quietly. The second Ctrl-C (launch forwards it) is ignored."""
    import os
    import subprocess
    import sys

    from test.helpers import ROOT

    res = subprocess.run([sys.executable, "-c", _FINALIZER_SCRIPT], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["finalizer delivered", "weakref callback delivered", "second ctrl-c not delivered"], res.stdout
    # nothing about the interrupts; another exception in a finalizer is reported as Python always does
    assert res.stderr.count("Exception ignored") == 1 and "KeyboardInterrupt" not in res.stderr, res.stderr
    assert "ValueError: any other error in a finalizer is still reported" in res.stderr, res.stderr


def test_policy_node_exit_does_not_import_a_half_imported_torch(monkeypatch):
    """Ctrl-C during ``import torch`` (model load) leaves a partial module; the exit used to import it
    again, which failed half-way with a traceback."""
    import sys
    import types

    from motus_ros.nodes.policy_node import PolicyNode

    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))  # no attributes: a broken import

    class Logger:
        def debug(self, msg):
            pass

    node = PolicyNode.__new__(PolicyNode)
    node.loop, node._subs, node._timers, node._pubs, node._srv = None, [], [], [], None
    node.get_logger = lambda: Logger()
    PolicyNode._release(node)
    assert node.policy is None
