"""Round trip of every motus_msgs type (messages, services, the action) between two processes."""
from __future__ import annotations

import time

import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

import motus_msgs.action as actions
import motus_msgs.msg as msgs
import motus_msgs.srv as srvs
from test.helpers import node_process, stop_process, wait_until
from test.msg_fill import fill
from test.nodes.interface_echo import MSG_TYPES, SRV_TYPES


@pytest.fixture
def echo_process():
    proc = node_process("test.nodes.interface_echo")
    yield proc
    out = stop_process(proc)
    assert "Traceback" not in out, out


def _spin_until(ex, predicate, timeout):
    return wait_until(predicate, timeout, spin=lambda: ex.spin_once(timeout_sec=0.05))


def test_every_interface_round_trips_across_processes(ros_context, echo_process):
    node = rclpy.create_node("interface_roundtrip_test", context=ros_context)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    try:
        received = {}
        pubs = {}
        for t in MSG_TYPES:
            cls = getattr(msgs, t)
            pubs[t] = node.create_publisher(cls, f"/rt/in/{t}", qos)
            node.create_subscription(cls, f"/rt/out/{t}", lambda m, t=t: received.setdefault(t, m), qos)
        # discovery: both directions matched for every type
        assert _spin_until(ex, lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 20.0), "echo process not discovered"
        assert _spin_until(ex, lambda: all(node.count_publishers(f"/rt/out/{t}") > 0 for t in MSG_TYPES), 20.0)
        # Matched on this side does not mean matched on the echo's side yet (its writer may not know our
        # reader, and a volatile sample sent before that is gone): send again until each echo is back.
        deadline = time.monotonic() + 20.0
        while len(received) < len(MSG_TYPES) and time.monotonic() < deadline:
            for t in MSG_TYPES:
                if t not in received:
                    pubs[t].publish(fill(getattr(msgs, t)(), seed=1))
            _spin_until(ex, lambda: len(received) == len(MSG_TYPES), 0.5)
        assert len(received) == len(MSG_TYPES), f"missing echoes: {set(MSG_TYPES) - set(received)}"
        for t in MSG_TYPES:
            expected = fill(getattr(msgs, t)(), seed=1)
            assert received[t] == expected, f"{t} changed in the round trip"
            assert received[t] != getattr(msgs, t)(), f"{t}: the filled message equals the default one"

        for t in SRV_TYPES:
            cls = getattr(srvs, t)
            client = node.create_client(cls, f"/rt/srv/{t}")
            assert _spin_until(ex, client.service_is_ready, 15.0), f"service {t} not available"
            future = client.call_async(fill(cls.Request()))
            assert _spin_until(ex, future.done, 10.0), f"service {t} did not answer"
            assert future.result() == fill(cls.Response()), f"service {t}: request or response changed in transit"

        client = ActionClient(node, actions.RunTask, "/rt/action/RunTask")
        assert _spin_until(ex, client.server_is_ready, 15.0)
        feedback = []
        goal_future = client.send_goal_async(fill(actions.RunTask.Goal()), feedback_callback=lambda fb: feedback.append(fb.feedback))
        assert _spin_until(ex, goal_future.done, 10.0)
        handle = goal_future.result()
        assert handle.accepted
        result_future = handle.get_result_async()
        assert _spin_until(ex, result_future.done, 10.0)
        assert result_future.result().result == fill(actions.RunTask.Result())
        assert _spin_until(ex, lambda: len(feedback) > 0, 5.0)
        assert feedback[0] == fill(actions.RunTask.Feedback())
        client.destroy()
    finally:
        ex.shutdown()
        node.destroy_node()
