"""MoLA model-level checks that need no video model: the paper's sizes at full size (meta device),
the release key map in both directions with strict loading, config validation and YAML round trip."""
from __future__ import annotations

import pytest
import torch

from motus_core.models.mola.checkpoint import (
    CheckpointError,
    load_strict,
    net_key_to_release,
    split_release_state_dict,
)
from motus_core.models.mola.config import MolaConfig, MolaConfigError
from motus_core.models.mola.model import MolaNet
from motus_core.models.mola.config import tiny_config


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_parameter_counts_match_the_paper():
    with torch.device("meta"):
        net = MolaNet(MolaConfig.official_calvin())
    assert _count(net.moidm.idms) == 90_583_488  # paper Table 8: MoIDM 90.58 M
    assert _count(net.head) == 22_897_927  # paper Table 8: action head 22.90 M
    assert _count(net.video_former) == 17_713_536
    assert _count(net.moidm.idm_input) == 2560 * 1024 + 1024 + 1024 * 1024 + 1024 + 2 * 1024
    cfg = MolaConfig.official_calvin()
    assert cfg.video.feature_channels == 2560 and cfg.video.tokens_per_frame == 256 and cfg.context_length == 249


def test_our_robot_configuration_sizes():
    cfg = MolaConfig.aloha()
    with torch.device("meta"):
        net = MolaNet(cfg)
    assert _count(net.moidm.idms) == 90_583_488  # same IDMs
    assert cfg.context_length == 1 + 224 + 1 + 24  # language, video, proprioception, latent actions
    # chunk 15 at 30 Hz = frame 5 of the 3-step-stride clip: the IDM gap is one chunk
    assert cfg.idm.frames[1] * cfg.frame_stride == cfg.chunk_length
    assert abs(1 / cfg.step_period - 30.0) < 1e-9
    three = MolaConfig.from_dict({**cfg.to_dict(), "idm": {**cfg.to_dict()["idm"], "cameras": list(cfg.cameras)}})
    assert three.num_latent_tokens == 72


def test_release_key_map_round_trip_is_strict():
    cfg = tiny_config()
    torch.manual_seed(0)
    ours = MolaNet(cfg).state_dict()
    release = {net_key_to_release(k): v for k, v in ours.items()}
    assert "latent_flow_motion_tokenizer.m_former.encoder.layer.0.attention.attention.query.weight" in release
    assert "model.inner_model.decoder.blocks.0.adaLN_zero.modulation.1.weight" in release
    assert "Video_Former.layers.0.1.qkv.weight" in release and "goal_emb.0.weight" in release
    release["TVP_encoder.pipeline.unet.conv_in.weight"] = torch.zeros(1)
    release["TVP_encoder.pipeline.image_encoder.x"] = torch.zeros(1)  # SVD's image encoder: ignored
    release["language_goal.clip_rn50.x"] = torch.zeros(1)  # OpenAI-format CLIP copy: ignored
    net_state, video, ignored = split_release_state_dict(release)
    assert set(video["unet"]) == {"conv_in.weight"} and len(ignored) == 2
    fresh = MolaNet(cfg)
    load_strict(fresh, net_state, "round trip")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in ours.items())
    # LIBERO names of the release map onto the same IDMs
    libero = {k.replace("latent_flow_", "latent_cotracker_").replace("latent_semantic_", "latent_segment_"): v
              for k, v in release.items()}
    assert split_release_state_dict(libero)[0].keys() == net_state.keys()

    with pytest.raises(CheckpointError, match="unexpected key"):
        split_release_state_dict({**release, "some_new_module.weight": torch.zeros(1)})
    missing = dict(net_state)
    missing.pop("head.action_pred.weight")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_strict(MolaNet(cfg), missing, "ckpt")
    bad = dict(net_state)
    bad["head.action_pred.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_strict(MolaNet(cfg), bad, "ckpt")


def test_config_validation_and_yaml_round_trip(tmp_path):
    cfg = tiny_config()
    cfg.save(tmp_path / "c.yaml")
    assert MolaConfig.load(tmp_path / "c.yaml") == cfg
    with pytest.raises(MolaConfigError, match="unknown keys"):
        MolaConfig.from_dict({"head": {"objectiv": "edm"}})
    with pytest.raises(MolaConfigError, match="idm.frames"):
        tiny_config(idm__frames=[0, 9])
    with pytest.raises(MolaConfigError, match="camera"):
        tiny_config(cameras=["top"])
    with pytest.raises(MolaConfigError, match="objective"):
        tiny_config(head__objective="ddpm")
    with pytest.raises(MolaConfigError, match="proprio_dim"):
        tiny_config(head__proprio_dim=7)


def test_shipped_stage_configs_parse():
    from motus_core.models.mola.train.common import load_yaml_config
    from motus_core.models.mola.train.stages import parse_stage_config
    from motus_core.robot_profile import config_dir

    for stage in (1, 2, 3):
        raw = load_yaml_config(config_dir() / "mola" / f"stage{stage}.yaml", [f"model.video.pretrained=runs/s{stage}"])
        setup = parse_stage_config(raw, stage)
        assert setup.model.video.pretrained == f"runs/s{stage}"  # the override reached the model file's values
        setup.model.video.pretrained = setup.model.video.text_encoder = ""
        assert setup.model == MolaConfig.aloha()  # the shipped model file is the documented default
        assert setup.train.steps > 0


def test_per_camera_images_from_the_mosaic():
    import numpy as np

    from motus_core.preprocessing import PreprocessingError, make_mosaic, mosaic_camera_images, mosaic_layout_of

    for h, w in ((240, 320), (241, 320), (480, 640)):
        cams = [np.full((h, w, 3), v, np.uint8) for v in (10, 120, 250)]
        mosaic = make_mosaic(*cams)
        assert mosaic_layout_of(mosaic.shape[:2]).high_hw == (h, w)
        out = mosaic_camera_images(mosaic, ["high", "left_wrist", "right_wrist"], (32, 32))
        assert out.shape == (3, 3, 32, 32) and out.dtype == np.float32
        # letterboxed (4:3 -> square: black bars top and bottom), camera content preserved in the centre
        assert np.allclose(out[:, :, 16, 16], np.array([10, 120, 250])[:, None] / 255.0, atol=1 / 255)
        assert np.all(out[:, :, 0, 16] == 0)
    with pytest.raises(PreprocessingError, match="mosaic"):
        mosaic_layout_of((101, 320))  # H + H//2 skips 101 (66 -> 99, 67 -> 100, 68 -> 102)
