"""The video model of MoLA: Stable Video Diffusion (diffusers) conditioned on CLIP text (transformers).

Everything here uses the libraries' own classes: ``UNetSpatioTemporalConditionModel``,
``AutoencoderKLTemporalDecoder``, ``EulerDiscreteScheduler``, ``CLIPTokenizer`` and
``CLIPTextModelWithProjection``. What MoLA adds:

* **text conditioning** (the release): 20 CLIP tokens, ``last_hidden_state`` (B, 20, 512) repeated
  along channels to the UNet's cross-attention width (1024) in place of SVD's single CLIP-image token;
  the pooled, projected ``text_embeds`` (B, 512) is the action head's language goal;
* **the "one-step imagination" feature tap** (the release's ``diffusion_extract.py``): condition
  latents = VAE mode of the current frame repeated over the clip, noise at the first sigma of SVD's
  Euler schedule (sigma_max = 700), one UNet pass stopped after ``up_blocks[tap]``; the outputs of
  ``up_blocks[0..tap]`` are nearest-upsampled to the last one's grid and concatenated on channels
  (release: 1280 + 1280 = 2560 channels on a 16x16 grid for 256x256 frames);
* **stage I loss**: SVD's EDM v-prediction loss (ln sigma ~ N(0.7, 1.6^2), weight (sigma^2+1)/sigma^2);
* **imagined frames** for visualisation: the same noise continued with the Euler scheduler and decoded
  by the temporal VAE decoder.

:meth:`VideoModel.unet_pass` mirrors ``UNetSpatioTemporalConditionModel.forward`` block by block so it
can stop early; the tests check it against diffusers' own forward (intermediate and final outputs).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import SVD_SCHEDULER, MolaConfigError, VideoConfig
from .loading import WeightsError, check_loading_info, local_dir  # noqa: F401  (WeightsError re-exported)

log = logging.getLogger(__name__)


def svd_scheduler(config: dict, steps: int, device=None):
    """diffusers' EulerDiscreteScheduler with SVD's config, ``steps`` inference steps."""
    from diffusers import EulerDiscreteScheduler

    with warnings.catch_warnings():  # a numpy-2 deprecation inside diffusers' sigma computation, harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        sched = EulerDiscreteScheduler.from_config(config)
        sched.set_timesteps(steps, device=device)
    return sched


@dataclass
class TextEmbedding:
    tokens: torch.Tensor  # (B, L, cross_attention_dim) for the UNet
    pooled: torch.Tensor  # (B, goal_dim) for the action head


def load_unet_vae(pretrained: str, dtype=torch.float32):
    """Strictly load the SVD UNet and VAE from a local diffusers directory (subfolders unet/, vae/)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    root = local_dir(pretrained, "video model")
    out = []
    for cls, sub in ((UNetSpatioTemporalConditionModel, "unet"), (AutoencoderKLTemporalDecoder, "vae")):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"video model: {root} has no {sub}/ subfolder (expected a diffusers SVD layout)")
        model, info = cls.from_pretrained(str(root), subfolder=sub, local_files_only=True, output_loading_info=True,
                                          torch_dtype=dtype)
        check_loading_info(info, f"{root}/{sub}")
        out.append(model)
    return out[0], out[1]


def load_clip_text(path: str, dtype=torch.float32):
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    root = local_dir(path, "CLIP text encoder")
    model, info = CLIPTextModelWithProjection.from_pretrained(str(root), local_files_only=True, output_loading_info=True,
                                                              dtype=dtype)
    check_loading_info(info, str(root))
    tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    return model, tokenizer


class VideoModel(nn.Module):
    def __init__(self, cfg: VideoConfig, unet, vae, text_encoder, tokenizer):
        super().__init__()
        self.cfg = cfg
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler_config = dict(SVD_SCHEDULER)
        self._check_geometry()
        sched = svd_scheduler(self.scheduler_config, cfg.scheduler_steps)
        # the release's tap noise level: the first step of SVD's Euler schedule
        self.tap_sigma = float(sched.sigmas[0])
        self.tap_timestep = float(sched.timesteps[0])
        self.init_noise_sigma = float(sched.init_noise_sigma)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: VideoConfig) -> "VideoModel":
        """Random weights from the architecture in ``cfg`` (tests, benchmarks)."""
        from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        unet = UNetSpatioTemporalConditionModel(**(cfg.unet or {}))
        vae = AutoencoderKLTemporalDecoder(**(cfg.vae or {}))
        tokenizer = byte_level_clip_tokenizer()
        text_kwargs = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                       "pad_token_id": tokenizer.pad_token_id, **(cfg.text or {})}
        text_kwargs["vocab_size"] = max(int(text_kwargs.get("vocab_size", 0)), len(tokenizer))
        text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(**text_kwargs))
        return cls(cfg, unet, vae, text_encoder, tokenizer)

    @classmethod
    def from_pretrained(cls, cfg: VideoConfig, dtype=torch.float32) -> "VideoModel":
        if not cfg.pretrained or not cfg.text_encoder:
            raise MolaConfigError("video.pretrained and video.text_encoder must name local directories")
        unet, vae = load_unet_vae(cfg.pretrained, dtype)
        text_encoder, tokenizer = load_clip_text(cfg.text_encoder, dtype)
        return cls(cfg, unet, vae, text_encoder, tokenizer)

    @classmethod
    def build(cls, cfg: VideoConfig, dtype=torch.float32) -> "VideoModel":
        return cls.from_pretrained(cfg, dtype) if cfg.pretrained else cls.from_config(cfg).to(dtype)

    def _check_geometry(self) -> None:
        uc = self.unet.config
        if tuple(uc.block_out_channels) != self.cfg.block_out_channels:
            raise MolaConfigError(f"UNet block_out_channels {tuple(uc.block_out_channels)} differ from the config's "
                                  f"{self.cfg.block_out_channels} (set video.unet.block_out_channels)")
        hidden = self.text_encoder.config.hidden_size
        if uc.cross_attention_dim % hidden:
            raise MolaConfigError(f"UNet cross_attention_dim {uc.cross_attention_dim} is not a multiple of the CLIP "
                                  f"text width {hidden}")
        if uc.in_channels != 2 * self.vae.config.latent_channels:
            raise MolaConfigError(f"UNet in_channels {uc.in_channels} != 2 x VAE latent channels "
                                  f"{self.vae.config.latent_channels} (noisy + condition latents)")
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if factor != self.cfg.vae_scale_factor:
            raise MolaConfigError(f"VAE downsamples by {factor}, config says video.vae_scale_factor {self.cfg.vae_scale_factor}")

    @property
    def goal_dim(self) -> int:
        return int(self.text_encoder.config.projection_dim)

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_text(self, instructions: list[str]) -> TextEmbedding:
        inputs = self.tokenizer(list(instructions), padding="max_length", max_length=self.cfg.text_max_length,
                                truncation=True, return_tensors="pt").to(self.text_encoder.device)
        out = self.text_encoder(**inputs)
        hidden = out.last_hidden_state
        reps = self.unet.config.cross_attention_dim // hidden.shape[-1]
        tokens = torch.cat([hidden] * reps, dim=-1) if reps > 1 else hidden
        return TextEmbedding(tokens=tokens.to(self.dtype), pooled=out.text_embeds.float())

    # ------------------------------------------------------------------ images
    def encode_condition(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [0, 1] -> unscaled VAE mode latents (N, c, S/8, S/8) (as SVD conditions)."""
        x = images.to(device=self.device, dtype=self.vae.dtype) * 2.0 - 1.0
        return self.vae.encode(x).latent_dist.mode().to(self.dtype)

    def encode_video(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, F, 3, S, S) in [0, 1] -> scaled diffusion latents (N, F, c, S/8, S/8)."""
        n, f = frames.shape[:2]
        x = frames.flatten(0, 1).to(device=self.device, dtype=self.vae.dtype) * 2.0 - 1.0
        z = self.vae.encode(x).latent_dist.sample(generator) * self.vae.config.scaling_factor
        return z.view(n, f, *z.shape[1:]).to(self.dtype)

    def added_time_ids(self, n: int) -> torch.Tensor:
        ids = torch.tensor([self.cfg.fps_id, self.cfg.motion_bucket_id, self.cfg.noise_aug], dtype=self.dtype)
        return ids.to(self.device).expand(n, -1)

    # ------------------------------------------------------------------ the UNet pass
    def unet_pass(self, sample: torch.Tensor, timestep: torch.Tensor | float, encoder_hidden_states: torch.Tensor,
                  added_time_ids: torch.Tensor, stop_after: int | None = None):
        """Diffusers' SVD UNet forward, block by block.

        sample (N, F, 2c, h, w). Returns ``(taps, out)``: taps = the outputs of up_blocks[0..stop_after]
        (all up blocks when None), out = the final UNet output (None when stopped early).
        """
        unet = self.unet
        n, f = sample.shape[:2]
        t = torch.as_tensor(timestep, device=sample.device)
        t = (t[None] if t.dim() == 0 else t).to(sample.device).expand(n)
        emb = unet.time_embedding(unet.time_proj(t).to(sample.dtype))
        time_embeds = unet.add_time_proj(added_time_ids.flatten()).reshape(n, -1).to(emb.dtype)
        emb = emb + unet.add_embedding(time_embeds)
        x = sample.flatten(0, 1)
        emb = emb.repeat_interleave(f, dim=0)
        ehs = encoder_hidden_states.repeat_interleave(f, dim=0)
        x = unet.conv_in(x)
        indicator = torch.zeros(n, f, dtype=x.dtype, device=x.device)
        res = (x,)
        for block in unet.down_blocks:
            kw = {"encoder_hidden_states": ehs} if getattr(block, "has_cross_attention", False) else {}
            x, r = block(hidden_states=x, temb=emb, image_only_indicator=indicator, **kw)
            res += r
        x = unet.mid_block(hidden_states=x, temb=emb, encoder_hidden_states=ehs, image_only_indicator=indicator)
        taps = []
        upsample_size = None
        forward_upsample = any(s % 2**unet.num_upsamplers for s in sample.shape[-2:])
        for i, block in enumerate(unet.up_blocks):
            r = res[-len(block.resnets):]
            res = res[: -len(block.resnets)]
            if i < len(unet.up_blocks) - 1 and forward_upsample:
                upsample_size = res[-1].shape[2:]
            kw = {"encoder_hidden_states": ehs} if getattr(block, "has_cross_attention", False) else {}
            x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=r, upsample_size=upsample_size,
                      image_only_indicator=indicator, **kw)
            taps.append(x)
            if stop_after is not None and i == stop_after:
                return taps, None
        x = unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
        return taps, x.reshape(n, f, *x.shape[1:])

    @staticmethod
    def concat_taps(taps: list[torch.Tensor], n: int, f: int) -> torch.Tensor:
        """Nearest-upsample every tap to the last one's grid, concatenate on channels -> (N, F, C, h, w)."""
        last = taps[-1]
        feats = [F.interpolate(t, size=last.shape[-2:], mode="nearest") if t.shape[-2:] != last.shape[-2:] else t
                 for t in taps]
        x = torch.cat(feats, dim=1)
        return x.view(n, f, *x.shape[1:])

    def tap_inputs(self, images: torch.Tensor, generator: torch.Generator | None = None,
                   noise: torch.Tensor | None = None):
        """Condition latents + the scaled noisy latents of the first Euler step -> UNet input (N, F, 2c, h, w)."""
        cond = self.encode_condition(images)
        n = cond.shape[0]
        shape = (n, self.cfg.num_frames, *cond.shape[1:])
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=generator.device if generator is not None else self.device,
                                dtype=torch.float32)
        latents = noise.to(device=self.device, dtype=torch.float32) * self.init_noise_sigma
        scaled = (latents / (self.tap_sigma**2 + 1) ** 0.5).to(self.dtype)  # scheduler.scale_model_input
        sample = torch.cat([scaled, cond[:, None].expand(-1, self.cfg.num_frames, -1, -1, -1)], dim=2)
        return sample, cond, latents

    @torch.no_grad()
    def features(self, images: torch.Tensor, text_tokens: torch.Tensor, generator: torch.Generator | None = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """Truncated single pass: (N, 3, S, S) in [0, 1] + text tokens (N, L, D) -> (N, F, C, h, w)."""
        sample, _, _ = self.tap_inputs(images, generator, noise)
        n, f = sample.shape[:2]
        taps, _ = self.unet_pass(sample, self.tap_timestep, text_tokens.to(self.dtype), self.added_time_ids(n),
                                 stop_after=self.cfg.tap_up_block)
        return self.concat_taps(taps, n, f)

    @torch.no_grad()
    def features_and_frames(self, images: torch.Tensor, text_tokens: torch.Tensor, steps: int = 1,
                            generator: torch.Generator | None = None, noise: torch.Tensor | None = None):
        """Features of the same pass plus imagined frames (N, F, 3, S, S) in [0, 1] from ``steps`` Euler steps."""
        sample, cond, latents = self.tap_inputs(images, generator, noise)
        n, f = sample.shape[:2]
        ids = self.added_time_ids(n)
        text_tokens = text_tokens.to(self.dtype)
        sched = svd_scheduler(self.scheduler_config, max(1, int(steps)), self.device)
        feats = None
        cond_rep = cond[:, None].expand(-1, f, -1, -1, -1)
        for i, t in enumerate(sched.timesteps):
            model_in = torch.cat([sched.scale_model_input(latents, t).to(self.dtype), cond_rep], dim=2)
            taps, out = self.unet_pass(model_in, t, text_tokens, ids)
            if feats is None:
                feats = self.concat_taps(taps[: self.cfg.tap_up_block + 1], n, f)
            latents = sched.step(out.float(), t, latents).prev_sample
        frames = self.decode_latents(latents)
        return feats, frames

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        n, f = latents.shape[:2]
        z = (latents.flatten(0, 1) / self.vae.config.scaling_factor).to(self.vae.dtype)
        x = self.vae.decode(z, num_frames=f).sample
        return ((x.float().clamp(-1, 1) + 1) / 2).view(n, f, *x.shape[1:])

    # ------------------------------------------------------------------ stage I
    def training_loss(self, frames: torch.Tensor, text_tokens: torch.Tensor, *, generator: torch.Generator | None = None,
                      text_drop: float = 0.05, p_mean: float = 0.7, p_std: float = 1.6) -> torch.Tensor:
        """SVD's EDM loss on a clip (N, F, 3, S, S) in [0, 1]; frame 0 is the condition (VAE, frozen)."""
        dev = self.device
        with torch.no_grad():
            x0 = self.encode_video(frames, generator).float()
            cond = self.encode_condition(frames[:, 0])
        n, f = x0.shape[:2]
        gdev = generator.device if generator is not None else dev
        sigma = (torch.randn(n, generator=generator, device=gdev) * p_std + p_mean).exp().to(dev).view(n, 1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(dev)
        noisy = x0 + noise * sigma
        c_in = 1 / (sigma**2 + 1) ** 0.5
        c_skip = 1 / (sigma**2 + 1)
        c_out = -sigma / (sigma**2 + 1) ** 0.5
        weight = (sigma**2 + 1) / sigma**2
        if text_drop > 0:
            keep = (torch.rand(n, generator=generator, device=gdev) >= text_drop).to(dev).view(n, 1, 1)
            text_tokens = text_tokens * keep.to(text_tokens.dtype)
        model_in = torch.cat([(noisy * c_in).to(self.dtype), cond[:, None].expand(-1, f, -1, -1, -1)], dim=2)
        _, out = self.unet_pass(model_in, (sigma.view(n).log() / 4), text_tokens.to(self.dtype), self.added_time_ids(n))
        denoised = c_skip * noisy + c_out * out.float()
        return (weight * (denoised - x0) ** 2).mean()


def byte_level_clip_tokenizer():
    """A CLIP tokenizer with a byte-level vocabulary and no merges (514 tokens): no files needed."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])
