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


def test_ctrl_c_inside_a_finalizer_is_not_raised_there():
    """A KeyboardInterrupt raised inside ``__del__`` (rclpy's Task during garbage collection) is printed as
    "Exception ignored" and lost: the handler leaves it to rclpy's context shutdown there, and raises it
    anywhere else."""
    import signal
    import sys

    from motus_ros import node_main

    before = signal.getsignal(signal.SIGINT)
    try:
        node_main._interrupt_once()
        handler = signal.getsignal(signal.SIGINT)
        raised = []

        class Collected:
            def __del__(self):
                try:
                    handler(signal.SIGINT, sys._getframe())
                except KeyboardInterrupt:
                    raised.append("in __del__")

        Collected().__del__()
        assert raised == []
        node_main._interrupt_once()  # a fresh "first" interrupt
        handler = signal.getsignal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, sys._getframe())
        handler(signal.SIGINT, sys._getframe())  # the second one is ignored (launch forwards Ctrl-C again)
    finally:
        signal.signal(signal.SIGINT, before)


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
