"""Closed-loop runtime (ROS-free): observation synchronizer, chunk executor, trajectories, safety.

``motus_ros.nodes.policy_node`` embeds :mod:`.sync`; ``motus_ros.nodes.executor_node`` wraps
:mod:`.executor` (strategies in :mod:`.strategies`, splines in :mod:`.trajectory`, limits in
:mod:`.safety`). See docs/runtime.md.
"""
