"""The rviz2 configuration for a robot profile.

``config/motus.rviz`` is written for ``sim_aloha``. For another profile the live camera displays
(named ``Live <role>``) must show that robot's camera topics and the fixed frame must be its base
frame; :func:`rviz_config_for_profile` rewrites just those values (the predicted views, comparison,
contact sheets and markers use the visualizer's topics, which do not depend on the robot).
"""
from __future__ import annotations

from pathlib import Path

import yaml


def _displays(tree):
    for d in tree:
        yield d
        if isinstance(d.get("Displays"), list):
            yield from _displays(d["Displays"])


def rviz_config_for_profile(template: str, profile, viz_prefix: str = "/motus/viz") -> str:
    """YAML text of the rviz config ``template`` adapted to ``profile`` (cameras, fixed frame)."""
    cfg = yaml.safe_load(template)
    manager = cfg["Visualization Manager"]
    manager["Global Options"]["Fixed Frame"] = profile.base_frame
    prefix = "/" + viz_prefix.strip("/")
    for d in _displays(manager["Displays"]):
        name = str(d.get("Name", ""))
        topic = d.get("Topic")
        if not isinstance(topic, dict):
            continue
        if name.startswith("Live "):  # a live camera display: "Live <role>"
            cam = profile.cameras.get(name[len("Live "):])
            if cam is not None:
                topic["Value"] = cam.topic  # a ".../compressed" topic makes rviz use the compressed transport
            else:
                d["Enabled"] = d["Value"] = False
        elif isinstance(topic.get("Value"), str) and topic["Value"].startswith("/motus/viz/"):
            topic["Value"] = prefix + topic["Value"][len("/motus/viz"):]
    return yaml.safe_dump(cfg, sort_keys=False, width=1000)


def rviz_config_path(template_path: Path, profile, out_dir: Path) -> Path:
    """``template_path`` itself when it fits the profile, else an adapted copy written to
    ``out_dir/motus_<robot>.rviz``."""
    text = template_path.read_text()
    adapted = rviz_config_for_profile(text, profile)
    if adapted == yaml.safe_dump(yaml.safe_load(text), sort_keys=False, width=1000):
        return template_path
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"motus_{profile.name}.rviz"
    out.write_text(adapted)
    return out
