"""rclpy API differences between the supported ROS 2 distributions (Humble, Jazzy, Kilted), in one place.

* ``SubscriptionEventCallbacks`` / ``PublisherEventCallbacks``: ``rclpy.event_handler`` from Iron on;
  Humble has them in ``rclpy.qos_event`` (Iron and Jazzy keep that as a deprecated alias, Kilted removed it).

Import from here, never from the distro-specific module; ``test/test_distro_compat.py`` scans motus_ros for
rclpy names Humble lacks.
"""
from __future__ import annotations

try:  # Iron and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
    EVENT_HANDLER_MODULE = "rclpy.event_handler"
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks  # type: ignore[no-redef]
    EVENT_HANDLER_MODULE = "rclpy.qos_event"

__all__ = ["EVENT_HANDLER_MODULE", "PublisherEventCallbacks", "SubscriptionEventCallbacks"]
