"""motus_core: the ROS-free library of motus-ros.

Models (Motus, MoLA), the runtime logic of the closed loop (observation synchronisation, chunk
execution, safety), the simulated robot, and the data pipeline (episodes, converters, dataset
reader). Nothing in this package imports rclpy; the nodes in ``motus_ros`` are thin adapters.
"""

__version__ = "0.1.0"
