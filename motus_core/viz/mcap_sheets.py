"""MCAP files for Foxglove, without ROS: message schemas, and predicted-vs-actual contact sheets.

* :func:`message_definition` gives the ``ros2msg`` schema text of a message type (rosbags'
  ``generate_msgdef``; types rosbags does not ship, such as ``motus_msgs``, are read from their
  ``.msg`` files). Foxglove and ``mcap_ros2`` decode ROS CDR with it.
* :func:`render_sheets` reads a recording (``mcap_viz_recorder`` output, or any MCAP with ROS 2
  messages) and writes one PNG per prediction: the predicted frames of each camera above the live
  frames of the same times, via the same un-mosaic/matching/rendering code as the live node.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator


from motus_core.preprocessing import Rect

from .compare import FrameMatcher
from .frames import VizInputError, split_prediction
from motus_core.images import image_msg_to_rgb
from .render import chunk_contact_sheet, save_png

PREDICTED_FUTURE_TYPE = "motus_msgs/msg/PredictedFuture"


class SchemaError(LookupError):
    """No message definition can be found for a type."""


def _share_dirs() -> list[Path]:
    dirs = [Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(sys.prefix) / "share")
    from motus_core.robot_profile import config_dir

    dirs.append(config_dir().parent)  # source tree: <repo>/motus_msgs/msg/*.msg
    return dirs


@lru_cache(maxsize=1)
def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


def _register_package(package: str) -> bool:
    from rosbags.typesys import get_types_from_msg

    store = _typestore()
    for base in _share_dirs():
        msg_dir = base / package / "msg"
        files = sorted(msg_dir.glob("*.msg")) if msg_dir.is_dir() else []
        if not files:
            continue
        types = {}
        for f in files:
            types.update(get_types_from_msg(f.read_text(), f"{package}/msg/{f.stem}"))
        store.register(types)
        return True
    return False


def normalize_type(type_name: str) -> str:
    """'pkg/Type' or 'pkg/msg/Type' -> 'pkg/msg/Type'."""
    parts = type_name.split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return type_name


def message_definition(type_name: str) -> str:
    """The ``ros2msg`` schema (the type's definition followed by its dependencies) of a ROS 2 type."""
    name = normalize_type(type_name)
    store = _typestore()
    if name not in store.types and not _register_package(name.split("/")[0]):
        raise SchemaError(f"no message definition for {name}: not known to rosbags and no .msg files found in {[str(d) for d in _share_dirs()]}")
    if name not in store.types:
        raise SchemaError(f"no message definition for {name}")
    text, _ = store.generate_msgdef(name, ros_version=2)
    return text


def decoded_messages(mcap_path: str | Path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, object]]:
    """(topic, decoded ROS 2 message) of an MCAP file in log-time order (mcap_ros2 decoder)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(mcap_path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, _message, decoded in reader.iter_decoded_messages(topics=list(topics) if topics else None):
            yield channel.topic, decoded


def _sec(t) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


def render_sheets(mcap_path: str | Path, out_dir: str | Path, profile, predicted_topic: str = "/policy/predicted_future",
                  tolerance: float = 0.04, tile_width: int = 160, camera_topics: dict[str, str] | None = None,
                  progress: bool = True) -> list[Path]:
    """Write ``chunk_<id>.png`` (predicted vs actual) for every prediction in an MCAP file.

    ``camera_topics``: role -> live topic (default: the profile's cameras). Returns the written paths.
    Malformed messages are skipped with a line on stderr.
    """
    from tqdm import tqdm

    cams = dict(camera_topics or {role: cam.topic for role, cam in profile.cameras.items()})
    by_topic = {t: r for r, t in cams.items()}
    topics = [predicted_topic, *cams.values()]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    matcher = FrameMatcher(list(cams), tolerance=tolerance, horizon=5.0, max_wait=1.0, max_pending=10_000)
    written: list[Path] = []
    high_hw = (profile.cameras["high"].height, profile.cameras["high"].width) if "high" in profile.cameras else None
    skipped = 0

    def flush(done: Iterable) -> None:
        for cc in done:
            path = out / f"chunk_{cc.prediction.chunk_id:06d}_{cc.prediction.stamp:.3f}.png"
            save_png(chunk_contact_sheet(cc, tile_width), path)
            written.append(path)

    last = None
    for topic, msg in tqdm(decoded_messages(mcap_path, topics), desc="reading", unit="msg", disable=not progress):
        try:
            if topic == predicted_topic:
                p = msg
                frames = [image_msg_to_rgb(f) for f in p.frames]
                regions = [Rect(int(r.x_offset), int(r.y_offset), int(r.width), int(r.height)) for r in p.camera_regions]
                views, _ = split_prediction(
                    chunk_id=p.chunk_id, stamp=_sec(p.header.stamp), layout=p.layout, camera_names=list(p.camera_names),
                    regions=regions, frames=frames, frame_times=[_sec(t) for t in p.frame_times], high_hw=high_hw,
                    condition_frame=image_msg_to_rgb(p.condition_frame) if p.condition_frame.height > 0 else None,
                    model=p.model, mode=p.mode)
                matcher.add_prediction(views)
            else:
                role = by_topic[topic]
                img = image_msg_to_rgb(msg)
                if role == "high":
                    high_hw = img.shape[:2]
                stamp = _sec(msg.header.stamp)
                matcher.add_live(role, stamp, img)
                last = stamp if last is None else max(last, stamp)
        except (VizInputError, ValueError) as exc:
            skipped += 1
            print(f"skipping a malformed message on {topic}: {exc}", file=sys.stderr)
            continue
        flush(matcher.poll(last)[1])
    flush(matcher.poll(float("inf"))[1])
    if skipped:
        print(f"{skipped} malformed messages skipped", file=sys.stderr)
    return written
