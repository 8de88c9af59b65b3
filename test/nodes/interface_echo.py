"""Second process of the interface round-trip test.

* every motus_msgs message type: subscribes ``/rt/in/<Type>`` and republishes what it got on ``/rt/out/<Type>``;
* every service: ``/rt/srv/<Type>`` answers ``fill(Response)`` if the request equals ``fill(Request)``,
  else an empty response;
* the RunTask action: ``/rt/action/RunTask`` checks the goal, sends a filled feedback (three times, once
  the client's feedback reader is seen), returns a filled result.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import motus_ros  # noqa: E402,F401  (DDS environment before rclpy)
import rclpy  # noqa: E402
from rclpy.action import ActionServer  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy  # noqa: E402

import motus_msgs.action as actions  # noqa: E402
import motus_msgs.msg as msgs  # noqa: E402
import motus_msgs.srv as srvs  # noqa: E402
from motus_ros.node_main import run_node  # noqa: E402
from test.msg_fill import fill  # noqa: E402

MSG_TYPES = ["ActionChunk", "PredictedFuture", "StageTiming", "PolicyStatus", "TopicStats", "RecorderStatus", "ExecutorStatus"]
SRV_TYPES = ["SetInstruction", "StartEpisode", "StopEpisode", "DiscardEpisode", "ResetSim"]


def build_node():
    node = rclpy.create_node("interface_echo")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    keep = []
    for t in MSG_TYPES:
        cls = getattr(msgs, t)
        pub = node.create_publisher(cls, f"/rt/out/{t}", qos)
        keep.append(node.create_subscription(cls, f"/rt/in/{t}", lambda m, p=pub: p.publish(m), qos))

    for t in SRV_TYPES:
        cls = getattr(srvs, t)

        def handle(req, resp, cls=cls):
            return fill(cls.Response()) if req == fill(cls.Request()) else cls.Response()

        keep.append(node.create_service(cls, f"/rt/srv/{t}", handle))

    def execute(goal_handle):
        ok = goal_handle.request == fill(actions.RunTask.Goal())
        # Feedback is volatile: one published before the client's feedback reader is matched is lost
        # (seen once in CI under load, after the goal and result services had matched).
        deadline = time.monotonic() + 10.0
        while node.count_subscribers("/rt/action/RunTask/_action/feedback") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(3):  # the graph can list a reader a moment before its writer-reader match
            goal_handle.publish_feedback(fill(actions.RunTask.Feedback()))
            time.sleep(0.1)
        goal_handle.succeed()
        return fill(actions.RunTask.Result()) if ok else actions.RunTask.Result()

    keep.append(ActionServer(node, actions.RunTask, "/rt/action/RunTask", execute))
    node.keep = keep  # the entities live as long as the node
    print("interface_echo ready", flush=True)
    return node


def main():
    # run_node: the products' spin and Ctrl-C handling (quiet when the interrupt tears the context down under spin)
    sys.exit(run_node(build_node))


if __name__ == "__main__":
    main()
