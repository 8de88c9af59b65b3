"""Visualisation costs: FK per chunk, marker/image building, and the visualizer node's CPU under load.

    python bench/viz.py [--seconds 10] [--no-node] [--urdf PATH]

Prints readable lines, then a final JSON line with:
  fk_ms_per_chunk            batched URDF chain FK of a 48-step chunk, both end effectors (ChainFK)
  fk_ms_per_chunk_yourdfpy   the same with yourdfpy's update_cfg + get_transform per configuration
  markers_ms_per_chunk       chunk -> path -> marker geometry -> visualization_msgs/MarkerArray
  unmosaic_ms_per_prediction 8 predicted 384x320 frames -> 3 camera views each
  contact_sheet_ms           predicted-vs-actual contact sheet of 8 frames x 3 cameras (Pillow)
  comparison_ms              one side-by-side live | predicted image
  node_cpu_percent           visualizer_node process CPU (% of one core) while fed 3 cameras at 30 Hz
                             (240x320), joint states at 30 Hz, 2 chunks/s and 2 predictions/s of 8 frames,
                             with a viewer subscribed to every output (the node renders images only for subscribers)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MUJOCO_GL", "egl")

import motus_ros  # noqa: E402,F401  (DDS environment before rclpy)
import numpy as np  # noqa: E402

from motus_core.preprocessing import MOSAIC_ROLES  # noqa: E402
from motus_core.robot_profile import load_profile  # noqa: E402
from test.viz_data import camera_image, fixed_chunk, model_frame, regions  # noqa: E402


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def bench_library(profile, urdf_override: str = "") -> dict:
    from motus_core.viz.compare import FrameMatcher
    from motus_core.viz.frames import split_prediction
    from motus_core.viz.render import chunk_contact_sheet, side_by_side

    out = {}
    q = fixed_chunk(profile, 48)
    urdf = Path(urdf_override) if urdf_override else profile.resolve(profile.urdf)
    if urdf.is_file():
        import yourdfpy

        from motus_core.viz.kinematics import chain_fk_for_profile, urdf_joint_names_for_profile
        from motus_core.viz.markers import TrajectoryMarkers
        from motus_ros.viz_msgs import marker_array_msg, sec_to_stamp

        fk = chain_fk_for_profile(profile, urdf)
        out["fk_ms_per_chunk"] = _median_ms(lambda: fk.positions(q), 50)
        y = yourdfpy.URDF.load(str(urdf), load_meshes=False, build_collision_scene_graph=False, load_collision_meshes=False)
        names = urdf_joint_names_for_profile(profile)

        def yourdfpy_chunk():
            for row in q:
                y.update_cfg({names[c]: float(v) for c, v in zip(profile.joint_names, row) if names[c] in y.actuated_joint_names})
                for link in profile.ee_links.values():
                    y.get_transform(link, profile.base_frame)

        out["fk_ms_per_chunk_yourdfpy"] = _median_ms(yourdfpy_chunk, 3)
        tm = TrajectoryMarkers(profile, fk)

        def markers():
            path = tm.path(q, joint_names=profile.joint_names, stamp=0.0, step_period=1 / 30)
            marker_array_msg(tm.markers(path, 10), sec_to_stamp(0.0))

        out["markers_ms_per_chunk"] = _median_ms(markers, 30)
    frames = [model_frame(j + 1) for j in range(8)]
    kwargs = dict(chunk_id=1, stamp=0.0, layout="motus_t_mosaic", camera_names=list(MOSAIC_ROLES), regions=regions(),
                  frames=frames, frame_times=[0.2 * (j + 1) for j in range(8)], high_hw=(240, 320))
    out["unmosaic_ms_per_prediction"] = _median_ms(lambda: split_prediction(**kwargs), 10)
    views, _ = split_prediction(**kwargs)
    m = FrameMatcher(list(MOSAIC_ROLES))
    m.add_prediction(views)
    for i, t in enumerate(np.arange(0.0, 2.5, 1 / 30)):
        for r in MOSAIC_ROLES:
            m.add_live(r, float(t), camera_image(r, i))
    settled, done = m.poll()
    out["contact_sheet_ms"] = _median_ms(lambda: chunk_contact_sheet(done[0]), 5)
    out["comparison_ms"] = _median_ms(lambda: side_by_side(settled[0]), 10)
    return out


def bench_node(profile, seconds: float, urdf_override: str = "") -> dict:
    """Feed a visualizer_node process at realistic rates and measure its CPU use."""
    import psutil
    import rclpy
    from builtin_interfaces.msg import Duration
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState, RegionOfInterest

    from motus_msgs.msg import ActionChunk, PredictedFuture
    from motus_ros.viz_msgs import rgb_to_image_msg, sec_to_stamp
    from test.helpers import node_process, reserve_domain_id, stop_process

    os.environ.setdefault("ROS_DOMAIN_ID", str(reserve_domain_id()))
    proc = node_process("motus_ros.nodes.visualizer_node", *(("-p", f"urdf:={urdf_override}") if urdf_override else ()))
    ctx = Context()
    rclpy.init(context=ctx)
    node = Node("viz_bench_driver", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    cams = {r: node.create_publisher(Image, c.topic, 10) for r, c in profile.cameras.items()}
    js_pub = node.create_publisher(JointState, "/joint_states", 10)
    chunk_pub = node.create_publisher(ActionChunk, "/policy/action_chunk", 10)
    pred_pub = node.create_publisher(PredictedFuture, "/policy/predicted_future", 10)
    from visualization_msgs.msg import MarkerArray

    received = {"images": 0, "markers": 0}
    # a viewer: the node renders comparison / contact sheets only for subscribers
    for topic in ("/motus/viz/comparison", "/motus/viz/contact_sheet", "/motus/viz/contact_sheet_vs_actual",
                  *(f"/motus/viz/predicted/{r}" for r in profile.cameras)):
        node.create_subscription(Image, topic, lambda _m: received.__setitem__("images", received["images"] + 1), 10)
    node.create_subscription(MarkerArray, "/motus/viz/trajectory", lambda _m: received.__setitem__("markers", received["markers"] + 1), 10)
    imgs = {r: [rgb_to_image_msg(camera_image(r, i), sec_to_stamp(0.0)) for i in range(30)] for r in profile.cameras}
    frames = [rgb_to_image_msg(model_frame(j + 1), sec_to_stamp(0.0)) for j in range(8)]
    q = fixed_chunk(profile, 48)
    state = {"i": 0}

    def now():
        return node.get_clock().now().nanoseconds * 1e-9

    def live():
        t = sec_to_stamp(now())
        for r, pub in cams.items():
            msg = imgs[r][state["i"] % 30]
            msg.header.stamp = t
            pub.publish(msg)
        js = JointState(name=list(profile.joint_names), position=list(profile.home))
        js.header.stamp = t
        js_pub.publish(js)
        state["i"] += 1

    def policy():
        t = now()
        c = ActionChunk(chunk_id=state["i"], joint_names=list(profile.joint_names), num_steps=48,
                        positions=[float(v) for v in q.reshape(-1)], step_period=Duration(sec=0, nanosec=33_333_333))
        c.header.stamp = sec_to_stamp(t)
        chunk_pub.publish(c)
        p = PredictedFuture(chunk_id=state["i"], layout="motus_t_mosaic", camera_names=list(MOSAIC_ROLES),
                            camera_regions=[RegionOfInterest(x_offset=r.x, y_offset=r.y, width=r.width, height=r.height) for r in regions()],
                            frames=frames, frame_times=[sec_to_stamp(t + 0.2 * (j + 1)) for j in range(8)])
        p.header.stamp = sec_to_stamp(t)
        pred_pub.publish(p)

    try:
        deadline = time.monotonic() + 30
        while chunk_pub.get_subscription_count() < 1 or cams["high"].get_subscription_count() < 1:
            ex.spin_once(timeout_sec=0.05)
            if time.monotonic() > deadline:
                raise RuntimeError("visualizer_node did not subscribe")
        node.create_timer(1 / 30, live)
        node.create_timer(0.5, policy)
        ps = psutil.Process(proc.pid)
        end = time.monotonic() + 2.0  # warm-up
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.01)
        c0, t0 = ps.cpu_times(), time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.01)
        c1, t1 = ps.cpu_times(), time.monotonic()
        cpu = 100 * ((c1.user - c0.user) + (c1.system - c0.system)) / (t1 - t0)
    finally:
        out = stop_process(proc)
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    summary = [line for line in out.splitlines() if "Visualizer:" in line]
    return {"node_cpu_percent": cpu, "viewer_images_received": received["images"], "viewer_marker_arrays_received": received["markers"],
            "node_summary": summary[-1] if summary else out[-500:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--no-node", action="store_true")
    ap.add_argument("--urdf", default="", help="URDF to use instead of the profile's")
    ns = ap.parse_args()
    profile = load_profile("sim_aloha")
    res = bench_library(profile, ns.urdf)
    if not ns.no_node:
        res.update(bench_node(profile, ns.seconds, ns.urdf))
    for k, v in res.items():
        print(f"{k:>28}: {v:.2f}" if isinstance(v, float) else f"{k:>28}: {v}")
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
