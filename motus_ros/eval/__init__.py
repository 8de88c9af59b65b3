"""``motus-eval``: a policy's success rate on a simulated task, measured through the ROS graph.

``cli`` (the command), ``graph`` (starting and supervising the sim + policy + executor processes),
``client`` (the ROS client that resets the sim and runs the policy through the executor's RunTask
action), ``report`` (results, Wilson interval, table, JSON; no ROS), ``video`` (MP4 of failures).
"""
