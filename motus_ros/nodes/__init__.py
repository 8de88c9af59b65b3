"""rclpy nodes of motus-ros (one module per executable; see motus_ros/executables.py)."""
