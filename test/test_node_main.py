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
