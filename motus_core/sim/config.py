"""Parameters of the simulated robot node (declared as ROS parameters from this dataclass, once)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .disturbance import DisturbanceConfig


@dataclass
class SimConfig:
    robot: str = field(default="sim_aloha", metadata={"help": "robot profile whose topics, joint names and units the sim speaks (config/robots/<robot>.yaml)"})
    task: str = field(default="transfer_cube", metadata={"help": "task of the first episode: transfer_cube or insertion"})
    seed: int = field(default=0, metadata={"help": "seed of the first episode's object poses; resets without a seed continue from it"})
    image_width: int = field(default=0, metadata={"help": "camera image width in pixels (0: the profile's camera width)"})
    image_height: int = field(default=0, metadata={"help": "camera image height in pixels (0: the profile's camera height)"})
    camera_rate: float = field(default=30.0, metadata={"help": "camera frames per second of sim time (all three cameras)"})
    joint_state_rate: float = field(default=100.0, metadata={"help": "joint states (and object poses, success) per second of sim time"})
    clock_rate: float = field(default=200.0, metadata={"help": "/clock messages per second of sim time"})
    real_time_factor: float = field(default=1.0, metadata={"help": "sim seconds per wall second (e.g. 0.5: half speed, 2: twice as fast)"})
    physics_dt: float = field(default=0.002, metadata={"help": "physics time step in s"})
    follow_leader: bool = field(default=True, metadata={"help": "the follower arms track the profile's leader topics (a leader-follower teleop rig)"})
    allow_partial_goals: bool = field(default=False, metadata={"help": "accept commands that name only some joints of their topic (the others hold)"})
    out_of_limits: str = field(default="clamp", metadata={"help": "positions outside the profile's joint limits: clamp (logged, counted) or reject"})
    skip_late_frames: bool = field(default=False, metadata={"help": "do not render a frame whose deadline already passed (keeps real time; counted as dropped)"})
    max_lag: float = field(default=0.5, metadata={"help": "wall seconds the sim may fall behind its real-time schedule before sim time is let slip"})
    image_reliability: str = field(default="best_effort", metadata={"help": "QoS reliability of the image topics: best_effort (sensor data) or reliable"})
    success_hold: float = field(default=0.5, metadata={"help": "seconds the task's final stage must hold for the episode to count as a success"})
    status_rate: float = field(default=1.0, metadata={"help": "/diagnostics messages per wall second"})
    speed_limit_scale: float = field(default=1.0, metadata={"help": (
        "arm joint speeds saturate at this x the profile's velocity limits (the servos' no-load speed; without it the "
        "sim's undamped servos overshoot the commanded speed ~2x); 0 = no limit")})
    render_mesh_cell: float = field(default=0.002, metadata={"help": "grid (m) of the render-only mesh decimation; 0 renders the original meshes"})
    placement_margin: float = field(default=0.0, metadata={"min": 0.0, "max": 0.1, "help": (
        "m each object's placement box (the task's x/y ranges) is widened by on every side: demonstrations that cover "
        "the edges of the evaluation's box from both sides; keep 0 for evaluation")})
    disturbance: DisturbanceConfig = field(default_factory=DisturbanceConfig, metadata={"help": (
        "push the follower arms off the commanded setpoints (seeded per episode; recovery demonstrations, "
        "motus_core/sim/disturbance.py); keep it off for evaluation")})
