"""Parameters of the visualizer (declared as ROS parameters by the visualizer node, once)."""
from __future__ import annotations

from dataclasses import dataclass, field


def _p(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass
class VisualizerConfig:
    robot: str = _p("sim_aloha", "robot profile (config/robots/<robot>.yaml): cameras, joints, frames, URDF")
    urdf: str = _p("", "URDF for forward kinematics; empty: the profile's 'urdf'")
    action_chunk_topic: str = _p("/policy/action_chunk", "motus_msgs/ActionChunk input (the policy node's ~/action_chunk)")
    predicted_future_topic: str = _p("/policy/predicted_future", "motus_msgs/PredictedFuture input (the policy node's ~/predicted_future)")
    executor_status_topic: str = _p(
        "/executor/status", "motus_msgs/ExecutorStatus input: which chunk runs and its time shift, so the executed part "
        "greys as the executor actually runs it (without it: by the chunk's own action times)")
    output_prefix: str = _p("/motus/viz", "namespace of the published images and markers")
    ghost_prefix: str = _p("ghost", "the ghost robot's JointState goes to /<ghost_prefix>/joint_states (for a second robot_state_publisher)")
    subscribe_live: bool = _p(True, "subscribe to the profile's camera topics (needed for the comparison and predicted-vs-actual sheets)")
    predicted_schedule: str = _p(
        "on_time", "on_time: publish each predicted frame when the clock reaches the time it predicts; immediate: all on arrival")
    match_tolerance: float = _p(0.04, "largest |live stamp - predicted time| (s) for a live frame to count as the same time")
    live_history: float = _p(2.0, "seconds of live frames kept per camera for matching")
    max_wait: float = _p(1.0, "settle a predicted frame this long (s) after its time even if a camera is silent")
    marker_rate_hz: float = _p(10.0, "rate of marker updates (greying of the executed part) and of scheduled frames")
    comparison_tile_height: int = _p(180, "height (px) of each view in the side-by-side comparison")
    contact_sheet_tile_width: int = _p(160, "width (px) of each view in the contact sheet")
    line_width: float = _p(0.006, "width (m) of the predicted end-effector paths")
    sphere_diameter: float = _p(0.010, "diameter (m) of the gripper-state spheres along the paths")
    gripper_offset: float = _p(0.015, "height (m) of the gripper-state spheres above the path, so they do not hide its time colours")
    log_period: float = _p(30.0, "seconds between summaries of received/rejected messages in the log")


@dataclass
class VizRecorderConfig:
    robot: str = _p("sim_aloha", "robot profile: its camera and joint-state topics are recorded with the visualisation")
    urdf: str = _p("", "URDF of the robot model written into the recording; empty: the profile's 'urdf'")
    output: str = _p("viz.mcap", "MCAP file to write (Foxglove opens it; ROS 2 CDR messages with ros2msg schemas)")
    duration: float = _p(0.0, "stop after this many seconds of wall time (0: until interrupted)")
    overwrite: bool = _p(True, "replace an existing output file")
    viz_prefix: str = _p("/motus/viz", "output_prefix of the visualizer node")
    ghost_prefix: str = _p("ghost", "ghost_prefix of the visualizer node")
    action_chunk_topic: str = _p("/policy/action_chunk", "action chunks")
    predicted_future_topic: str = _p("/policy/predicted_future", "predicted futures")
    record_live: bool = _p(True, "also record the profile's camera and joint-state topics (for predicted-vs-actual sheets)")
    extra_topics: list[str] = field(default_factory=list, metadata={"help": "more topics to record (any type with a .msg definition)"})
    robot_description: bool = _p(True, "write the profile's URDF as /robot_description when no node publishes it")
    tf_from_joint_states: bool = _p(
        True, "when nothing publishes /tf (pip-only installs have no robot_state_publisher), write the robot's and the ghost's link "
              "transforms computed from the URDF and the joint states, so Foxglove can draw the robot model")
    png_dir: str = _p("", "also save every contact sheet as PNG in this directory (empty: off)")
