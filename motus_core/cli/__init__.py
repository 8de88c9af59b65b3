"""ROS-free command-line tools (thin argparse mains over library code)."""
