"""Configuration of a MoLA model: one dataclass tree, read from / written to YAML.

Three presets:

* :meth:`MolaConfig.official_calvin` - the released CALVIN model (2 cameras, 7-dim relative actions,
  chunk 10, EDM head, causal cross-attention as in the release). Its MoIDM has 90,583,488 and its
  action head 22,897,927 parameters (paper Table 8), which the tests check on the meta device.
* :meth:`MolaConfig.aloha` - our default for the dual-arm robots: 3 cameras, 14 absolute joint
  positions at 30 Hz, a proprioception token, flow matching (see docs/mola.md for every choice).
* :meth:`MolaConfig.tiny` - a few-hundred-kB model for CPU tests, benchmarks and demos (tiny SVD UNet /
  VAE / CLIP from the ``TINY_*`` configs below; the tiny SVD UNet keeps the release's geometry that
  matters: three resolution levels, so ``up_blocks[0]`` is upsampled x2 before it is concatenated
  with ``up_blocks[1]``).

Sizes that follow from other sizes (feature channels of the UNet tap, tokens per frame, number of
context tokens of the head) are derived properties, so a config can never contradict itself.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

IDM_NAMES = ("flow", "depth", "semantic")  # the release's concatenation order
CAMERA_ROLES = ("high", "left_wrist", "right_wrist")

# SVD img2vid UNet (diffusers class defaults): what the released video model uses.
SVD_BLOCK_OUT_CHANNELS = (320, 640, 1280, 1280)
# SVD's EulerDiscreteScheduler (scheduler/scheduler_config.json of stable-video-diffusion-img2vid).
SVD_SCHEDULER = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "v_prediction", "sigma_max": 700.0, "sigma_min": 0.002,
    "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "continuous", "trained_betas": None,
    "use_karras_sigmas": True,
}


class MolaConfigError(ValueError):
    """A MoLA configuration (or a checkpoint against it) is inconsistent."""


@dataclass
class VideoConfig:
    """The frozen (after stage I) video model: SVD UNet + temporal VAE + CLIP text encoder."""

    pretrained: str = ""  # local diffusers SVD directory with unet/ and vae/ (stage-I output or the SVD release)
    text_encoder: str = ""  # local CLIP directory (CLIPTokenizer + CLIPTextModelWithProjection), e.g. clip-vit-base-patch32
    # Random-initialised architecture, used only when ``pretrained``/``text_encoder`` are empty (tests, benchmarks).
    unet: dict | None = None  # UNetSpatioTemporalConditionModel kwargs; None = SVD img2vid class defaults
    vae: dict | None = None  # AutoencoderKLTemporalDecoder kwargs; None = SVD defaults
    text: dict | None = None  # CLIPTextConfig kwargs; None = CLIP ViT-B/32 text tower
    image_size: int = 256  # per-camera square input (letterboxed)
    num_frames: int = 16  # frames of the imagined clip
    tap_up_block: int = 1  # features = concat(up_blocks[0..tap]) (release: extract_layer_idx 1, use_all_layer)
    scheduler_steps: int = 20  # Euler schedule the tap noise level comes from (first sigma = sigma_max whatever N)
    fps_id: int = 4  # added_time_ids[0]: the release taps with 4 (trains with 7); we use one value for both
    motion_bucket_id: int = 127
    noise_aug: float = 0.0
    text_max_length: int = 20  # CLIP tokens for the UNet cross-attention
    vae_scale_factor: int = 8  # pixels per latent cell (SVD VAE: 8)

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        return tuple((self.unet or {}).get("block_out_channels", SVD_BLOCK_OUT_CHANNELS))

    @property
    def feature_channels(self) -> int:
        rev = list(reversed(self.block_out_channels))
        return int(sum(rev[: self.tap_up_block + 1]))

    @property
    def feature_hw(self) -> int:
        """Side of the tapped feature grid (up_blocks[tap] output)."""
        nb = len(self.block_out_channels)
        latent = self.image_size // self.vae_scale_factor
        side = latent / 2 ** (nb - 1) * 2 ** (self.tap_up_block + 1)
        if side != int(side) or side < 1:
            raise MolaConfigError(f"image_size {self.image_size} does not give an integer tap grid")
        return int(side)

    @property
    def tokens_per_frame(self) -> int:
        return self.feature_hw**2


@dataclass
class VideoFormerConfig:
    """VPP's 3-D perceiver resampler over all cameras' features (release: 384, 6 layers, 14 latents/frame)."""

    dim: int = 384
    depth: int = 6
    heads: int = 8
    dim_head: int = 64
    latents_per_frame: int = 14
    ff_mult: int = 4


@dataclass
class IdmConfig:
    """The three inverse-dynamics models (M-Former + VQ + resamplers) and their input projection."""

    names: tuple[str, ...] = IDM_NAMES
    input_dim: int = 1024  # D_in of the input projection (goal_emb) = M-Former input width
    hidden: int = 768
    layers: int = 4
    heads: int = 12
    intermediate: int = 3072
    queries: int = 8
    codebook_size: int = 128
    code_dim: int = 32
    beta: float = 0.25  # legacy form: beta weights the codebook term
    layer_norm_eps: float = 1e-12
    frames: tuple[int, int] = (0, 5)  # imagined frames read by the IDMs (current, one chunk ahead)
    cameras: tuple[str, ...] = ("high",)  # cameras the IDMs run on (release: the static camera only)


@dataclass
class HeadConfig:
    """MDT-style encoder-decoder DiT action head."""

    embed_dim: int = 384
    enc_layers: int = 4
    dec_layers: int = 4
    heads: int = 8
    mlp_ratio: int = 4
    attn_pdrop: float = 0.3
    resid_pdrop: float = 0.1
    mlp_pdrop: float = 0.05
    embed_pdrop: float = 0.0
    lang_drop: float = 0.0  # probability of zeroing the language condition in training (release: 0)
    goal_dim: int = 512  # CLIP projection width
    proprio_dim: int = 14
    use_proprio: bool = True  # ours: one qpos token (release: proprio_emb exists but is never fed)
    causal_cross_attention: bool = False  # release: True (action row i sees context tokens 0..i); see docs
    keep_release_unused: bool = True  # goal_emb / pos_emb (and proprio_emb when unused): kept for strict loading
    objective: str = "flow"  # "flow" (paper) | "edm" (release)
    sampling_steps: int = 10
    # EDM (release recipe)
    sigma_data: float = 0.5
    sigma_min: float = 0.001
    sigma_max: float = 80.0
    sample_sigma_min: float = 1.0  # the release's evaluation configs sample sigma 80 -> 1.0 (training-time 0.001)
    # flow matching (ours): t ~ 0.001 + 0.999 * Beta(1.5, 1) emphasises the noisy end (pi0 / GR00T recipe)
    flow_beta_a: float = 1.5
    flow_beta_b: float = 1.0
    flow_time_scale: float = 1000.0  # noise-level input of the sinusoid = t * scale


@dataclass
class MolaConfig:
    video: VideoConfig = field(default_factory=VideoConfig)
    video_former: VideoFormerConfig = field(default_factory=VideoFormerConfig)
    idm: IdmConfig = field(default_factory=IdmConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    cameras: tuple[str, ...] = CAMERA_ROLES  # cameras the video model sees, one batched call
    action_dim: int = 14
    chunk_length: int = 15  # H: 0.5 s at 30 Hz = the IDM gap (frame 5 at a 3-step stride)
    frame_stride: int = 3  # control steps between imagined frames (16 frames = 1.6 s at 30 Hz)
    step_period: float = 1.0 / 30.0
    commit_weight: float = 0.1  # stage III: L = L_action + 0.1 * sum of the IDMs' commitment losses

    # ------------------------------------------------------------------ derived sizes
    @property
    def num_video_tokens(self) -> int:
        return self.video.num_frames * self.video_former.latents_per_frame

    @property
    def num_latent_tokens(self) -> int:
        return len(self.idm.names) * len(self.idm.cameras) * self.idm.queries

    @property
    def context_length(self) -> int:
        return 1 + self.num_video_tokens + int(self.head.use_proprio) + self.num_latent_tokens

    def validate(self) -> "MolaConfig":
        v, i, h = self.video, self.idm, self.head
        if v.tap_up_block < 0 or v.tap_up_block >= len(v.block_out_channels) - 1:
            raise MolaConfigError(f"video.tap_up_block {v.tap_up_block} must name a non-final up block")
        _ = v.feature_hw
        if max(i.frames) >= v.num_frames or min(i.frames) < 0 or len(i.frames) != 2:
            raise MolaConfigError(f"idm.frames {i.frames} must be two frames of the {v.num_frames}-frame clip")
        for cam in (*self.cameras, *i.cameras):
            if cam not in CAMERA_ROLES:
                raise MolaConfigError(f"unknown camera role {cam!r}; known: {CAMERA_ROLES}")
        missing = [c for c in i.cameras if c not in self.cameras]
        if missing:
            raise MolaConfigError(f"idm.cameras {missing} are not among the video cameras {self.cameras}")
        unknown = [n for n in i.names if n not in IDM_NAMES]
        if unknown or len(set(i.names)) != len(i.names) or not i.names:
            raise MolaConfigError(f"idm.names must be distinct names from {IDM_NAMES}, got {i.names}")
        if i.hidden % i.heads or self.video_former.dim % self.video_former.heads or h.embed_dim % h.heads:
            raise MolaConfigError("widths must be divisible by their head counts")
        if h.objective not in ("flow", "edm"):
            raise MolaConfigError(f"head.objective must be 'flow' or 'edm', got {h.objective!r}")
        if h.use_proprio and h.proprio_dim != self.action_dim:
            raise MolaConfigError(f"head.proprio_dim {h.proprio_dim} must equal action_dim {self.action_dim}")
        if self.chunk_length < 1 or self.action_dim < 1:
            raise MolaConfigError("chunk_length and action_dim must be positive")
        return self

    # ------------------------------------------------------------------ presets
    @classmethod
    def official_calvin(cls) -> "MolaConfig":
        """The released CALVIN ABC->D model (policy_conf/VPP_Calvinabc_train.yaml + m_former yaml)."""
        return cls(
            head=HeadConfig(proprio_dim=8, use_proprio=False, causal_cross_attention=True, objective="edm"),
            cameras=("high", "left_wrist"),  # static + gripper camera
            action_dim=7, chunk_length=10, frame_stride=2, step_period=1.0 / 30.0,
        ).validate()

    @classmethod
    def aloha(cls) -> "MolaConfig":
        return cls().validate()

    @classmethod
    def tiny(cls, **overrides) -> "MolaConfig":
        return tiny_config(**overrides)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "MolaConfig":
        return dataclass_from_dict(cls, dict(data or {}), "mola").validate()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> "MolaConfig":
        p = Path(path)
        if not p.is_file():
            raise MolaConfigError(f"MoLA config not found: {p}")
        return cls.from_dict(yaml.safe_load(p.read_text()))


def _to_plain(obj):
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def dataclass_from_dict(cls, data: dict, where: str):
    """Dataclass from a dict; unknown keys are errors (a typo must not silently fall back to a default)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise MolaConfigError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            kwargs[name] = dataclass_from_dict(type(default), dict(value), f"{where}.{name}")
        elif isinstance(default, tuple) and isinstance(value, (list, tuple)):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def set_dotted(data: dict, key: str, value) -> None:
    """``data["a"]["b"]["c"] = value`` for ``key = "a.b.c"`` (intermediate mappings are created)."""
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise MolaConfigError(f"override {key!r}: {p!r} is not a mapping")
    node[parts[-1]] = value


def merge_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` command-line overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides or []:
        if "=" not in item:
            raise MolaConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        set_dotted(data, key, yaml.safe_load(raw))
    return data


# ------------------------------------------------------------------ the tiny preset

TINY_UNET = dict(
    sample_size=8, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=[32, 32, 64], addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
    layers_per_block=1, cross_attention_dim=32, transformer_layers_per_block=1, num_attention_heads=[2, 2, 4],
    num_frames=6,
)
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
                block_out_channels=[32, 32, 32], layers_per_block=1, latent_channels=4, sample_size=32,
                scaling_factor=0.18215)
TINY_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, projection_dim=24,
                 max_position_embeddings=32)


def tiny_config(**overrides) -> MolaConfig:
    """Tiny MoLA (``overrides``: ``head__objective="edm"`` style): 32x32 images -> 8x8 latents -> 8x8 tap grid
    (64 tokens/frame), 7 frames at a 2-step stride, IDM frames 0 and 5, chunk 10."""
    cfg = MolaConfig(
        video=VideoConfig(unet=dict(TINY_UNET), vae=dict(TINY_VAE), text=dict(TINY_TEXT), image_size=32,
                          num_frames=7, vae_scale_factor=4, text_max_length=8),
        video_former=VideoFormerConfig(dim=32, depth=1, heads=2, dim_head=16, latents_per_frame=2, ff_mult=2),
        idm=IdmConfig(input_dim=32, hidden=32, layers=1, heads=2, intermediate=64, queries=4, codebook_size=16,
                      code_dim=4),
        head=HeadConfig(embed_dim=32, enc_layers=1, dec_layers=1, heads=2, goal_dim=24, proprio_dim=14,
                        attn_pdrop=0.0, resid_pdrop=0.0, mlp_pdrop=0.0, sampling_steps=4),
        chunk_length=10, frame_stride=2,
    )
    data = cfg.to_dict()
    for key, value in overrides.items():  # head__objective="edm" -> data["head"]["objective"]
        set_dotted(data, key.replace("__", "."), value)
    return MolaConfig.from_dict(data)
