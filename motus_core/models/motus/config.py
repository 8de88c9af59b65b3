"""Configuration of the Motus model (our layout) and its mapping from the official configuration.

One :class:`MotusConfig` describes everything needed to build the tri-stream model: the diffusers
``WanTransformer3DModel`` arguments of the video stream, the widths of the action and understanding
experts, the chunk/frame geometry, and the sub-configs of the VAE (diffusers ``AutoencoderKLWan``),
the VLM (transformers ``Qwen3VLConfig``) and, optionally, the umT5 text encoder.

Facts followed (official Motus, ``models/motus.py``): ``action_chunk_size = num_video_frames *
video_action_freq_ratio``; finetune mode adds a state token and 4 registers to the action stream,
pretrain mode neither; the action-expert position table of a checkpoint has ``K + 2 + R`` rows in
finetune mode (one more than used) and ``K + R`` in pretrain mode; latent frames ``1 + F // 4``;
VAE stride 16 in space, patch (1, 2, 2).
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

TRAINING_MODES = ("finetune", "pretrain")

# Wan2.2-TI2V-5B transformer (diffusers names); text_dim / freq_dim / patch as in the released model.
WAN_TI2V_5B = dict(
    patch_size=[1, 2, 2], num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
    text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None,
    rope_max_seq_len=1024, pos_embed_seq_len=None,
)

# Wan2.2 VAE (diffusers AutoencoderKLWan). The 48 per-channel latent statistics are those of the
# released Wan2.2 VAE (constants of Wan's ``Wan2_2_VAE`` wrapper, also in the diffusers conversion).
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]
WAN22_VAE = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], dropout=0.0, is_residual=True, in_channels=12, out_channels=12,
    patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16,
    latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD,
)


@dataclass
class MotusConfig:
    """Everything that fixes the shapes of a Motus model (no weights, no paths)."""

    wan: dict = field(default_factory=lambda: copy.deepcopy(WAN_TI2V_5B))
    text_len: int = 512  # umT5 rows the context is zero-padded/truncated to
    state_dim: int = 14
    action_dim: int = 14
    action_expert_dim: int = 1024
    action_expert_ffn_dim: int = 4096
    action_expert_norm_eps: float = 1e-5
    und_expert_dim: int = 512
    und_expert_ffn_dim: int = 2048
    und_expert_norm_eps: float = 1e-5
    vlm_dim: int = 2048  # hidden size of the VLM's text model (input of the und adapter)
    num_video_frames: int = 8
    video_action_freq_ratio: int = 6
    video_height: int = 384
    video_width: int = 320
    training_mode: str = "finetune"
    video_loss_weight: float = 1.0
    action_loss_weight: float = 1.0
    num_inference_steps: int = 10
    train_shift: float = 5.0
    num_train_timesteps: int = 1000
    # Fraction of training samples whose video is held at pure noise (t = 1000), the condition the VLA
    # mode (the policy node's default) serves in. The official Stage 3 draws the video and action
    # timesteps independently (0 here): most samples then show the action expert partly denoised
    # future frames, from which the actions can be read off; only about a fifth (shift-5 table) see
    # futures that are 95 % noise or more and so must act from the current image.
    vla_train_fraction: float = 0.0
    vae: dict = field(default_factory=lambda: copy.deepcopy(WAN22_VAE))
    vlm: dict | None = None  # Qwen3VLConfig as a dict (None: und features must be given)

    # ------------------------------------------------------------------------------------ derived
    def __post_init__(self):
        if self.training_mode not in TRAINING_MODES:
            raise ValueError(f"training_mode must be one of {TRAINING_MODES}, got {self.training_mode!r}")
        if not 0.0 <= float(self.vla_train_fraction) <= 1.0:
            raise ValueError(f"vla_train_fraction must be within [0, 1], got {self.vla_train_fraction}")
        if self.num_video_frames % 4:
            raise ValueError(f"num_video_frames must be a multiple of 4 (VAE time stride), got {self.num_video_frames}")
        if self.video_height % 32 or self.video_width % 32:
            raise ValueError(f"video size must be a multiple of 32, got {self.video_height}x{self.video_width}")
        self.wan = dict(self.wan)
        self.wan["patch_size"] = list(self.wan.get("patch_size", [1, 2, 2]))

    @property
    def num_layers(self) -> int:
        return int(self.wan["num_layers"])

    @property
    def num_heads(self) -> int:
        return int(self.wan["num_attention_heads"])

    @property
    def head_dim(self) -> int:
        return int(self.wan["attention_head_dim"])

    @property
    def wan_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def action_chunk_size(self) -> int:
        return self.num_video_frames * self.video_action_freq_ratio

    @property
    def num_registers(self) -> int:
        return 4 if self.training_mode == "finetune" else 0

    @property
    def has_state_token(self) -> bool:
        return self.training_mode == "finetune"

    @property
    def action_tokens(self) -> int:
        return int(self.has_state_token) + self.action_chunk_size + self.num_registers

    @property
    def pos_embedding_length(self) -> int:
        # the official table is built for chunk_size (+1 state token in finetune) + 1 + registers
        return self.action_tokens + 1 if self.training_mode == "finetune" else self.action_tokens

    @property
    def latent_frames(self) -> int:
        return 1 + self.num_video_frames // 4

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.video_height // 16, self.video_width // 16

    @property
    def video_tokens(self) -> int:
        p = self.wan["patch_size"]
        h, w = self.latent_hw
        return (self.latent_frames // p[0]) * (h // p[1]) * (w // p[2])

    # ------------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MotusConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Motus config fields: {unknown}")
        return cls(**copy.deepcopy(dict(data)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "MotusConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


# ------------------------------------------------------------------------------ official mappings


def wan_config_from_original(cfg: Mapping[str, Any]) -> dict:
    """Original Wan ``WanModel`` arguments (its ``config.json``) -> diffusers ``WanTransformer3DModel`` kwargs."""
    dim = int(cfg.get("dim", 2048))
    heads = int(cfg.get("num_heads", 16))
    if dim % heads:
        raise ValueError(f"Wan dim {dim} is not divisible by num_heads {heads}")
    if not cfg.get("qk_norm", True) or not cfg.get("cross_attn_norm", True):
        raise ValueError("Motus needs a Wan model with qk_norm and cross_attn_norm (as Wan2.2-TI2V-5B)")
    if tuple(cfg.get("window_size", (-1, -1))) != (-1, -1):
        raise ValueError("windowed Wan attention is not supported")
    return dict(
        patch_size=list(cfg.get("patch_size", [1, 2, 2])),
        num_attention_heads=heads,
        attention_head_dim=dim // heads,
        in_channels=int(cfg.get("in_dim", 16)),
        out_channels=int(cfg.get("out_dim", 16)),
        text_dim=int(cfg.get("text_dim", 4096)),
        freq_dim=int(cfg.get("freq_dim", 256)),
        ffn_dim=int(cfg.get("ffn_dim", 8192)),
        num_layers=int(cfg.get("num_layers", 32)),
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=float(cfg.get("eps", 1e-6)),
        image_dim=None,
        added_kv_proj_dim=None,
        rope_max_seq_len=1024,
        pos_embed_seq_len=None,
    )


def vae_config_from_original(cfg: Mapping[str, Any], latents_mean, latents_std) -> dict:
    """Original ``WanVAE_`` arguments (+ the wrapper's 48 statistics) -> diffusers ``AutoencoderKLWan`` kwargs."""
    return dict(
        base_dim=int(cfg["dim"]),
        decoder_base_dim=int(cfg.get("dec_dim", cfg["dim"])),
        z_dim=int(cfg.get("z_dim", 48)),
        dim_mult=list(cfg.get("dim_mult", [1, 2, 4, 4])),
        num_res_blocks=int(cfg.get("num_res_blocks", 2)),
        attn_scales=list(cfg.get("attn_scales", [])),
        temperal_downsample=list(cfg.get("temperal_downsample", [False, True, True])),
        dropout=float(cfg.get("dropout", 0.0)),
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
        latents_mean=[float(x) for x in latents_mean],
        latents_std=[float(x) for x in latents_std],
    )


def from_official(
    wan_config: Mapping[str, Any],
    motus: Mapping[str, Any],
    *,
    text_len: int | None = None,
    vae: Mapping[str, Any] | None = None,
    vlm: Mapping[str, Any] | None = None,
) -> MotusConfig:
    """Build our config from the official pieces.

    ``wan_config``: the original Wan ``config.json`` (``dim``, ``num_heads``, ...). ``motus``: the
    official ``MotusConfig`` field names (``action_expert_dim``, ``und_expert_hidden_size``,
    ``num_video_frames``, ...; missing fields take the official defaults of the shipped yamls).
    """
    wan = wan_config_from_original(wan_config)
    layers = int(motus.get("num_layers", wan["num_layers"]))
    if layers != wan["num_layers"]:
        raise ValueError(f"Motus num_layers {layers} differs from the Wan model's {wan['num_layers']}")
    a_dim = int(motus.get("action_expert_dim", 1024))
    u_dim = int(motus.get("und_expert_hidden_size", 512))
    projector = motus.get("vlm_adapter_projector_type", "mlp3x_silu")
    if projector != "mlp3x_silu":
        raise ValueError(f"unsupported VLM adapter projector {projector!r} (Motus uses mlp3x_silu)")
    if int(motus.get("action_state_dim", 14)) != int(motus.get("action_dim", 14)):
        raise ValueError("state and action dimensions must be equal (Motus uses absolute joint positions as actions)")
    return MotusConfig(
        wan=wan,
        text_len=int(text_len if text_len is not None else wan_config.get("text_len", 512)),
        state_dim=int(motus.get("action_state_dim", 14)),
        action_dim=int(motus.get("action_dim", 14)),
        action_expert_dim=a_dim,
        action_expert_ffn_dim=a_dim * int(motus.get("action_expert_ffn_dim_multiplier", 4)),
        action_expert_norm_eps=float(motus.get("action_expert_norm_eps", 1e-5)),
        und_expert_dim=u_dim,
        und_expert_ffn_dim=u_dim * int(motus.get("und_expert_ffn_dim_multiplier", 4)),
        und_expert_norm_eps=float(motus.get("und_expert_norm_eps", 1e-5)),
        vlm_dim=int(motus.get("vlm_adapter_input_dim", 2048)),
        num_video_frames=int(motus.get("num_video_frames", 8)),
        video_action_freq_ratio=int(motus.get("video_action_freq_ratio", 6)),
        video_height=int(motus.get("video_height", 384)),
        video_width=int(motus.get("video_width", 320)),
        training_mode=str(motus.get("training_mode", "finetune")),
        video_loss_weight=float(motus.get("video_loss_weight", 1.0)),
        action_loss_weight=float(motus.get("action_loss_weight", 1.0)),
        num_inference_steps=int(motus.get("num_inference_timesteps", motus.get("num_inference_steps", 10))),
        vae=dict(vae) if vae is not None else copy.deepcopy(WAN22_VAE),
        vlm=dict(vlm) if vlm is not None else None,
    )


# ------------------------------------------------------------------------------------ presets


def tiny_config(*, action_chunk: int = 48, frames: int = 8, image_hw=(64, 64), vlm: bool = True) -> MotusConfig:
    """A tiny Motus (random weights in tests/demos): the real architecture with small widths."""
    if action_chunk % frames:
        raise ValueError("action_chunk must be a multiple of the frame count")
    return MotusConfig(
        wan=dict(WAN_TI2V_5B, num_attention_heads=2, attention_head_dim=32, text_dim=32, ffn_dim=64, num_layers=2),
        text_len=16,
        action_expert_dim=32, action_expert_ffn_dim=64,
        und_expert_dim=32, und_expert_ffn_dim=64,
        vlm_dim=32,
        num_video_frames=frames, video_action_freq_ratio=action_chunk // frames,
        video_height=image_hw[0], video_width=image_hw[1],
        num_inference_steps=10,
        vae=dict(WAN22_VAE, base_dim=8, decoder_base_dim=8, num_res_blocks=1,
                 latents_mean=[0.0] * 48, latents_std=[1.0] * 48),
        vlm=tiny_vlm_config(hidden=32) if vlm else None,
    )


def tiny_vlm_config(hidden: int = 32, layers: int = 1, vision_hidden: int = 32, vision_depth: int = 1, vocab: int = 512) -> dict:
    """A tiny Qwen3-VL config (same token-id conventions as the fixtures: image 1000-style ids inside vocab)."""
    heads = 2
    head_dim = hidden // heads
    half = head_dim // 2
    sec_t = half - 2 * (half // 3)
    section = [sec_t, half // 3, half // 3]
    return dict(
        model_type="qwen3_vl",
        image_token_id=vocab - 6, video_token_id=vocab - 5, vision_start_token_id=vocab - 4,
        vision_end_token_id=vocab - 3, tie_word_embeddings=True,
        text_config=dict(
            model_type="qwen3_vl_text", vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=1, head_dim=head_dim,
            hidden_act="silu", max_position_embeddings=4096, rms_norm_eps=1e-6,
            rope_scaling=dict(rope_type="default", mrope_section=section, mrope_interleaved=True),
            rope_theta=5000000.0, attention_bias=False, tie_word_embeddings=True,
            bos_token_id=vocab - 2, eos_token_id=vocab - 1,
        ),
        vision_config=dict(
            model_type="qwen3_vl", depth=vision_depth, hidden_size=vision_hidden, hidden_act="gelu_pytorch_tanh",
            intermediate_size=2 * vision_hidden, num_heads=2, in_channels=3, patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=hidden, num_position_embeddings=64,
            deepstack_visual_indexes=list(range(vision_depth)),
        ),
    )


def reduced_config() -> MotusConfig:
    """Real geometry (384x320, 8 frames, 48 actions, 512 text rows) with reduced widths: CPU benchmarks."""
    return MotusConfig(
        wan=dict(WAN_TI2V_5B, num_attention_heads=8, attention_head_dim=64, ffn_dim=2048, num_layers=4, text_dim=512),
        text_len=512,
        action_expert_dim=256, action_expert_ffn_dim=1024,
        und_expert_dim=128, und_expert_ffn_dim=512,
        vlm_dim=256,
        vae=dict(WAN22_VAE, base_dim=32, decoder_base_dim=48, num_res_blocks=1),
        vlm=tiny_vlm_config(hidden=256, layers=2, vision_hidden=128, vision_depth=2, vocab=4096),
    )


# Qwen3-VL-2B-Instruct (public config.json values; token ids of the Qwen tokenizer)
QWEN3_VL_2B = dict(
    model_type="qwen3_vl", image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
    vision_end_token_id=151653, tie_word_embeddings=True,
    text_config=dict(
        model_type="qwen3_vl_text", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
        num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128, hidden_act="silu",
        max_position_embeddings=262144, rms_norm_eps=1e-6,
        rope_scaling=dict(rope_type="default", mrope_section=[24, 20, 20], mrope_interleaved=True),
        rope_theta=5000000.0, attention_bias=False, tie_word_embeddings=True,
        bos_token_id=151643, eos_token_id=151645,
    ),
    vision_config=dict(
        model_type="qwen3_vl", depth=24, hidden_size=1024, hidden_act="gelu_pytorch_tanh", intermediate_size=4096,
        num_heads=16, in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
        out_hidden_size=2048, num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17],
    ),
)


def full_config() -> MotusConfig:
    """The released real-world Motus (Wan2.2-TI2V-5B + Qwen3-VL-2B, 48 actions, 8 frames at 384x320)."""
    return MotusConfig(vlm=copy.deepcopy(QWEN3_VL_2B))


def reduced_sim_config() -> MotusConfig:
    """A reduced-width Motus for the simulated robot, trained from scratch on a CPU (``reduced_sim`` recipe).

    The real architecture (three streams, joint attention, Wan blocks, AdaLN, VAE, Qwen3-VL) with
    3 layers, a 128-wide video stream, a 96x128 (WxH) image, 4 predicted frames (48 actions at
    ratio 12, i.e. frames every 0.4 s at 30 Hz), the tiny umT5's 32-wide text embedding and tiny
    random frozen VAE and VLM: a batch-8 step well under a second and a 10-step chunk in ~0.1 s on
    one CPU thread.
    """
    return MotusConfig(
        wan=dict(WAN_TI2V_5B, num_attention_heads=4, attention_head_dim=32, text_dim=32, ffn_dim=512, num_layers=3),
        text_len=64,
        action_expert_dim=128, action_expert_ffn_dim=512,
        und_expert_dim=64, und_expert_ffn_dim=256,
        vlm_dim=64,
        num_video_frames=4, video_action_freq_ratio=12,
        video_height=128, video_width=96,
        num_inference_steps=10,
        vae=dict(WAN22_VAE, base_dim=8, decoder_base_dim=8, num_res_blocks=1,
                 latents_mean=[0.0] * 48, latents_std=[1.0] * 48),
        vlm=tiny_vlm_config(hidden=64, layers=1, vision_hidden=32, vision_depth=1),
    )


PRESETS = {"tiny": tiny_config, "reduced": reduced_config, "reduced_sim": reduced_sim_config, "full": full_config}


def from_fixture(cfg: Mapping[str, Any], latents_mean, latents_inv_std) -> MotusConfig:
    """Our config from a parity fixture's ``config`` (official field names) and its VAE statistics."""
    std = [1.0 / float(x) for x in latents_inv_std]
    vae = vae_config_from_original(cfg["vae"], latents_mean, std)
    c = from_official(cfg["wan"], cfg["motus"], text_len=cfg["wan"].get("text_len"), vae=vae, vlm=cfg.get("vlm"))
    c.num_inference_steps = int(cfg.get("num_inference_steps", c.num_inference_steps))
    sched = cfg.get("train_schedule", {})
    c.train_shift = float(sched.get("shift", c.train_shift))
    c.num_train_timesteps = int(sched.get("num_train_timesteps", c.num_train_timesteps))
    w = cfg.get("loss_weights", {})
    c.video_loss_weight = float(w.get("video", c.video_loss_weight))
    c.action_loss_weight = float(w.get("action", c.action_loss_weight))
    return c
