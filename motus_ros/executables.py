"""Executables of the motus_ros package: name -> "module:function".

The one table used by setup.py (console scripts, installed to lib/motus_ros for ``ros2 run``),
by the launch files (``Node(executable=name)``) and by the pip-only launcher (``python -m module``).
Pure data: no imports, so setup.py can read it without the package's dependencies.
"""

EXECUTABLES = {
    # hardware
    "sim_node": "motus_ros.nodes.sim_node:main",
    "demonstrator": "motus_ros.nodes.demonstrator_node:main",
    "piper_enable": "motus_ros.nodes.piper_enable:main",
    "arx_bridge_node": "motus_ros.nodes.arx_bridge_node:main",
    "realsense_node": "motus_ros.nodes.realsense_node:main",
    # closed loop
    "policy_node": "motus_ros.nodes.policy_node:main",
    "executor_node": "motus_ros.nodes.executor_node:main",
    # recording
    "recorder_node": "motus_ros.nodes.recorder_node:main",
    "recorder_cli": "motus_ros.nodes.recorder_cli:main",
    # visualisation
    "visualizer_node": "motus_ros.nodes.visualizer_node:main",
    "mcap_viz_recorder": "motus_ros.nodes.mcap_viz_recorder:main",
}

# Command-line tools that are not ROS nodes (installed to bin/). ROS-free tools live in
# motus_core/cli/<tool>.py (thin argparse mains over library code), ROS tools in motus_ros/.
TOOLS = {
    "motus-launch": "motus_ros.launcher:main",
    "motus-eval": "motus_ros.eval.cli:main",
    "motus-convert-checkpoint": "motus_core.cli.convert_checkpoint:main",
    "motus-convert": "motus_core.cli.convert:main",
    "motus-train": "motus_core.cli.motus_train:main",
    "motus-sim-dataset": "motus_core.cli.sim_dataset:main",
    "mola-train-stage1": "motus_core.cli.mola_train:stage1_main",
    "mola-train-stage2": "motus_core.cli.mola_train:stage2_main",
    "mola-train-stage3": "motus_core.cli.mola_train:stage3_main",
    "mola-convert-checkpoint": "motus_core.cli.mola_convert_checkpoint:main",
}
