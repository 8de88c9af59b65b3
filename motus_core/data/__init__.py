"""Recorded episodes (rosbag2), conversion to training layouts, and the Motus dataset reader.

ROS-free: bags are read and written with ``rosbags`` from raw CDR bytes, videos with PyAV.

* ``motus_layout``  the Motus real-robot layout: ``write_episode``, episode discovery, stat.json
* ``reader``        ``MotusDataset`` (official sample construction) and ``collate``
* ``video``         H.264 encode/decode
* ``episode``       episode metadata (state, outcome, counts) and the episode directory
* ``bag_writer``    ``EpisodeRecorder``: off-thread rosbag2 writer with back-pressure reporting
* ``bag_reader``    reading finished and unfinished (crashed) bags; repair
* ``sync``          time alignment of the streams on the high camera
* ``convert``       bags -> training datasets (library of ``motus-convert``, ``motus_core/cli/convert.py``)
* ``formats``       the converter's output formats, one registered module each (motus, robotwin, lerobot)
* ``text``          the ``TextEncoder`` protocol the writers take (never a model import) + ``EmbeddingCache``
* ``robotwin_layout``, ``lerobot_v3``  the RoboTwin 2.0 and LeRobot v3.0 layouts
"""
