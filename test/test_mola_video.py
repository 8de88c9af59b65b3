"""MoLA's video model on diffusers/transformers (tiny configs): the truncated single-pass feature tap
equals the corresponding intermediates of diffusers' own UNet forward, the release's noise level and
text conditioning, and strict offline loading from local directories."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from motus_core.models.mola.config import MolaConfigError
from motus_core.models.mola.config import tiny_config
from motus_core.models.mola.testing import save_tiny_foundation
from motus_core.models.mola.video import VideoModel, WeightsError


@pytest.fixture(scope="module")
def video():
    torch.manual_seed(0)
    return VideoModel.from_config(tiny_config().video).eval()


@torch.no_grad()
def test_truncated_pass_equals_diffusers_unet_intermediates(video):
    n, f = 2, video.cfg.num_frames
    g = torch.Generator().manual_seed(1)
    images = torch.rand(n, 3, video.cfg.image_size, video.cfg.image_size, generator=g)
    text = video.encode_text(["pick up the cube", "hand it over"])
    lat = video.cfg.image_size // video.cfg.vae_scale_factor
    noise = torch.randn(n, f, video.vae.config.latent_channels, lat, lat, generator=g)
    sample, _, _ = video.tap_inputs(images, noise=noise)
    ids = video.added_time_ids(n)
    captured = {}
    hooks = [b.register_forward_hook(lambda m, a, o, i=i: captured.__setitem__(i, o)) for i, b in enumerate(video.unet.up_blocks)]
    try:
        ref = video.unet(sample, torch.tensor(video.tap_timestep), encoder_hidden_states=text.tokens,
                         added_time_ids=ids).sample
    finally:
        for h in hooks:
            h.remove()
    taps, out = video.unet_pass(sample, video.tap_timestep, text.tokens, ids, stop_after=video.cfg.tap_up_block)
    assert out is None and len(taps) == video.cfg.tap_up_block + 1
    for i, t in enumerate(taps):
        assert torch.allclose(t, captured[i], atol=1e-6, rtol=0), i
    taps_full, full = video.unet_pass(sample, video.tap_timestep, text.tokens, ids)
    assert torch.allclose(full, ref, atol=1e-6, rtol=0)

    feats = video.features(images, text.tokens, noise=noise)
    c0 = captured[0].shape[1]
    assert feats.shape == (n, f, video.cfg.feature_channels, video.cfg.feature_hw, video.cfg.feature_hw)
    up0 = captured[0].view(n, f, c0, *captured[0].shape[-2:])
    # up_blocks[0] is nearest-upsampled x2 onto up_blocks[1]'s grid, then concatenated on channels
    assert torch.allclose(feats[:, :, :c0], up0.repeat_interleave(2, -1).repeat_interleave(2, -2), atol=1e-6)
    assert torch.allclose(feats[:, :, c0:], captured[1].view(n, f, -1, *captured[1].shape[-2:]), atol=1e-6)


def test_tap_noise_level_and_text_conditioning(video):
    assert video.tap_sigma == pytest.approx(700.0, rel=1e-5)
    assert video.tap_timestep == pytest.approx(0.25 * math.log(700.0), rel=1e-5)
    text = video.encode_text(["open the drawer"])
    hidden = video.text_encoder.config.hidden_size
    assert text.tokens.shape == (1, video.cfg.text_max_length, video.unet.config.cross_attention_dim)
    # CLIP tokens repeated along channels up to the UNet's cross-attention width
    assert torch.equal(text.tokens[..., :hidden], text.tokens[..., hidden:2 * hidden])
    assert text.pooled.shape == (1, video.text_encoder.config.projection_dim)


def test_strict_offline_loading(tmp_path):
    cfg = save_tiny_foundation(tiny_config(), tmp_path)
    vm = VideoModel.from_pretrained(cfg.video)
    assert vm.unet.config.block_out_channels == list(cfg.video.block_out_channels)
    # a config whose architecture differs from the weights on disk
    with pytest.raises(MolaConfigError, match="block_out_channels"):
        VideoModel.from_pretrained(tiny_config(video__pretrained=cfg.video.pretrained, video__text_encoder=cfg.video.text_encoder,
                                               video__unet={"block_out_channels": [320, 640, 1280, 1280]}).video)
    wfile = tmp_path / "svd" / "vae" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(wfile))
    sd["decoder.unexpected.weight"] = torch.zeros(1)
    save_file(sd, str(wfile))
    with pytest.raises(WeightsError, match="unexpected"):
        VideoModel.from_pretrained(cfg.video)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        VideoModel.from_pretrained(tiny_config(video__pretrained=str(tmp_path / "nowhere"), video__text_encoder="x").video)
