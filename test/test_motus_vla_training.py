"""``vla_train_fraction``: a share of the training samples holds the video at pure noise (the VLA
mode's condition) without changing the official draws of the others."""
import dataclasses

import pytest
import torch

from motus_core.models.motus.config import MotusConfig, tiny_config
from motus_core.models.motus.loading import build_motus_model


def _losses(fraction: float, seed: int = 3, b: int = 64):
    cfg = dataclasses.replace(tiny_config(action_chunk=16, frames=4), vla_train_fraction=fraction)
    torch.manual_seed(0)
    m = build_motus_model(cfg, None, seed=0).eval()
    h, w = cfg.latent_hw
    clean = torch.randn(b, int(cfg.vae["z_dim"]), cfg.latent_frames, h, w)
    actions = torch.rand(b, cfg.action_chunk_size, cfg.action_dim) * 2 - 1
    state = torch.rand(b, cfg.state_dim) * 2 - 1
    vlm_hidden = torch.randn(b, 6, cfg.vlm_dim)
    t5 = torch.randn(b, cfg.text_len, int(cfg.wan["text_dim"]))
    with torch.no_grad():
        return m.stage3_loss(clean, clean[:, :, :1], actions, state, m.conditioning(vlm_hidden, t5),
                             generator=torch.Generator().manual_seed(seed)), clean


def test_fraction_zero_is_the_official_draw_and_a_fraction_only_moves_video_times_to_pure_noise():
    official, _ = _losses(0.0)
    half, clean = _losses(0.5)
    # the action stream's draws are the official ones whatever the fraction
    torch.testing.assert_close(half["t_action"], official["t_action"])
    torch.testing.assert_close(half["noisy_actions"], official["noisy_actions"])
    moved = half["t_video"] != official["t_video"]
    assert torch.all(half["t_video"][moved] == 1000.0)
    assert 16 <= int((half["t_video"] == 1000.0).sum()) <= 48  # ~half of 64 (+ the table's own t = 1000 draws)
    torch.testing.assert_close(half["t_video"][~moved], official["t_video"][~moved])
    everything, clean = _losses(1.0)
    assert torch.all(everything["t_video"] == 1000.0)
    # pure noise: the future latent frames carry nothing of the clean video; frame 0 stays the condition
    noisy = everything["noisy_video_latent"]
    torch.testing.assert_close(noisy[:, :, :1], clean[:, :, :1])
    assert torch.corrcoef(torch.stack([noisy[:, :, 1:].flatten(), clean[:, :, 1:].flatten()]))[0, 1].abs() < 0.05


def test_fraction_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="vla_train_fraction"):
        MotusConfig(vla_train_fraction=1.5)
