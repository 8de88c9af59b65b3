"""Motus as a :class:`motus_core.policy.base.Policy`: observation in, de-normalised action chunk out.

``create(checkpoint_dir, device=, profile=, options=)`` loads a converted checkpoint directory
(``motus-convert-checkpoint``); ``create_tiny(...)`` builds a tiny random-weight Motus with the same
code (tests, CPU demos, the ``tiny_motus`` registry kind).

One ``predict`` call:

1. checks the request (state length and finiteness, mode, prefix; camera roles, dtypes and sizes
   against the robot profile) - bad input raises :class:`PolicyError` naming the problem;
2. builds the model image with ``motus_core.preprocessing.motus_model_image`` (T mosaic +
   resize-with-padding to the model size, 384x320 for the released models) and min-max normalises
   the state (and prefix / given actions) with the robot's statistics (``load_stats``);
3. looks up the instruction's umT5 embedding (memory, then the on-disk :class:`EmbeddingCache`,
   then the text encoder if one is configured - it is never loaded when the embedding is cached);
4. runs the VLM once (the understanding tokens are fixed for the whole chunk), VAE-encodes the image,
   samples the requested mode (``sampler.sample``: one Euler sampler, per-modality timesteps, RTC
   prefix guidance), de-normalises the actions and, when asked, decodes the predicted frames;
5. returns an :class:`ActionChunk` with per-stage timing (``preprocess``, ``text``, ``vlm``,
   ``vae_encode``, ``denoise``, ``vae_decode``, ``total``; seconds).

Modes (``PolicyRequest.mode``): ``vla`` (default for robots), ``joint`` (the official inference),
``world_model`` (needs :class:`MotusRequest` ``actions``), ``idm`` (needs ``future_images``),
``video``. See docs/motus.md.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from motus_core.models.common import resolve_dtype
from motus_core.robot_profile import as_profile
from motus_core.policy.base import ActionChunk, Policy, PolicyError, PolicyRequest
from motus_core.preprocessing import (
    MinMaxNormalizer,
    PreprocessingError,
    check_rgb_image,
    load_stats,
    motus_model_image,
    to_unit_chw,
)

from .checkpoint import DEFAULT_FILES, load_weights, read_policy_file, resolve
from .config import MotusConfig, tiny_config
from .convert import CheckpointError
from .loading import build_motus_model, build_vae, build_vlm
from .model import Conditioning, MotusModel
from .sampler import MODE_SPECS, sample
from .text_encoder import EmbeddingCache, TextEncoder, build_tiny_text_encoder, load_text_encoder
from .vae import MotusVAE
from .vlm import ProcessorPrompt, TinyPrompt, VLMFeatures

log = logging.getLogger(__name__)

MODES = ("vla", "joint", "world_model", "idm", "video")
CAMERA_ROLES = ("high", "left_wrist", "right_wrist")
@dataclass
class MotusRequest(PolicyRequest):
    """A PolicyRequest with the extra inputs of the conditioned modes.

    ``actions``: (K, dof) joint units, the given actions of ``world_model`` mode.
    ``future_images``: F observations (camera role -> HxWx3 uint8, like ``Observation.images``) at the
    model's frame times, the observed future of ``idm`` mode.
    ``instruction_embedding``: a pre-computed umT5 embedding [L, text_dim] (bypasses the cache).
    """

    actions: np.ndarray | None = None
    future_images: Sequence[Mapping[str, np.ndarray]] | None = None
    instruction_embedding: torch.Tensor | np.ndarray | None = None


class MotusPolicy(Policy):
    name = "motus"
    modes = MODES
    supports_prefix = True

    def __init__(
        self,
        model: MotusModel,
        vae: MotusVAE,
        vlm: VLMFeatures,
        *,
        normalizer: MinMaxNormalizer,
        step_period: float,
        cache: EmbeddingCache,
        text_identity: str,
        text_encoder: TextEncoder | None = None,
        text_encoder_loader=None,
        profile=None,
        num_steps: int | None = None,
        seed: int = 0,
        name: str = "motus",
        max_guidance: float = 5.0,
        prefix_schedule: str = "exp",
        num_threads: int | None = None,
    ):
        self.model = model
        self.vae = vae
        self.vlm = vlm
        self.config: MotusConfig = model.config
        self.normalizer = normalizer
        self.profile = profile
        self.cache = cache
        self.text_identity = text_identity
        self._text_encoder = text_encoder
        self._text_encoder_loader = text_encoder_loader
        self.num_steps = int(num_steps or self.config.num_inference_steps)
        self.name = name
        self.dof = self.config.action_dim
        self.chunk_length = self.config.action_chunk_size
        self.step_period = float(step_period)
        self.max_guidance = float(max_guidance)
        self.prefix_schedule = prefix_schedule
        self.num_threads = num_threads
        self._generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self._embeddings: dict[str, torch.Tensor] = {}
        self._context: tuple[torch.Tensor, list] | None = None  # (embedding, per-layer cross-attention k/v)
        self._instruction = ""
        if normalizer.dim != self.dof:
            raise PolicyError(f"statistics {normalizer.name!r} have {normalizer.dim} dims, the model {self.dof}")
        if profile is not None and profile.dof != self.dof:
            raise PolicyError(f"robot profile {profile.name!r} has {profile.dof} joints, the model {self.dof}")

    # ------------------------------------------------------------------------------ instruction
    @property
    def device(self) -> torch.device:
        return self.model.device

    def _encoder(self) -> TextEncoder | None:
        if self._text_encoder is None and self._text_encoder_loader is not None:
            log.info("Loading the umT5 text encoder for an instruction that is not in the cache.")
            self._text_encoder = self._text_encoder_loader()
        return self._text_encoder

    def instruction_embedding(self, instruction: str) -> tuple[torch.Tensor, bool]:
        """(embedding [L, text_dim] on the CPU, came_from_cache). Raises PolicyError when unknown."""
        if instruction in self._embeddings:
            return self._embeddings[instruction], True
        emb = self.cache.get(instruction, self.text_identity)
        cached = emb is not None
        if emb is None:
            enc = self._encoder()
            if enc is None:
                raise PolicyError(
                    f"instruction {instruction!r} is not in the embedding cache {self.cache.directory} and this "
                    "policy has no text encoder: convert one with --umt5 or pre-encode the instruction")
            if enc.identity != self.text_identity:
                raise PolicyError(f"text encoder {enc.identity!r} differs from the checkpoint's {self.text_identity!r}")
            emb, cached = self.cache.get_or_compute(instruction, enc)
        if emb.ndim != 2 or emb.shape[1] != int(self.config.wan["text_dim"]):
            raise PolicyError(f"instruction embedding has shape {tuple(emb.shape)}, the model needs [L, {self.config.wan['text_dim']}]")
        self._embeddings[instruction] = emb
        return emb, cached

    def set_instruction(self, instruction: str) -> bool:
        with self._threads():
            _, cached = self.instruction_embedding(instruction)
        self._instruction = instruction
        return cached

    def _context_kv(self, instruction: str, embedding: torch.Tensor | None) -> list:
        """Per-layer cross-attention k/v of the instruction: computed once, reused while it does not change."""
        emb = embedding if embedding is not None else self.instruction_embedding(instruction)[0]
        if self._context is not None and self._context[0] is emb:
            return self._context[1]
        with torch.no_grad():
            kv = self.model.context_kv(self.model.text_context([emb]))
        self._context = (emb, kv)  # keyed by the embedding tensor itself (held here, so its identity is stable)
        return kv

    # ------------------------------------------------------------------------------ inputs
    def _model_image(self, images: Mapping[str, np.ndarray], what: str) -> np.ndarray:
        if not isinstance(images, Mapping):
            raise PolicyError(f"{what}: images must map camera roles to arrays")
        missing = [r for r in CAMERA_ROLES if r not in images]
        if missing:
            raise PolicyError(f"{what}: missing camera images {missing} (need {list(CAMERA_ROLES)})")
        for role in CAMERA_ROLES:
            img = images[role]
            try:
                check_rgb_image(img, f"{what} camera {role!r}")
            except PreprocessingError as exc:
                raise PolicyError(str(exc)) from exc
            if self.profile is not None and role in self.profile.cameras:
                cam = self.profile.cameras[role]
                if img.shape[:2] != (cam.height, cam.width):
                    raise PolicyError(f"{what} camera {role!r}: image is {img.shape[1]}x{img.shape[0]}, robot profile "
                                      f"{self.profile.name!r} says {cam.width}x{cam.height}")
        try:
            return motus_model_image(images, (self.config.video_height, self.config.video_width))
        except PreprocessingError as exc:
            raise PolicyError(f"{what}: {exc}") from exc

    def _normalize(self, x: np.ndarray, what: str) -> torch.Tensor:
        try:
            return torch.from_numpy(self.normalizer.normalize(np.asarray(x, dtype=np.float64))).float()
        except PreprocessingError as exc:
            raise PolicyError(f"{what}: {exc}") from exc

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------------------ predict
    @contextlib.contextmanager
    def _threads(self):
        """Run with ``num_threads`` torch threads (small models lose more to thread contention than they gain)."""
        before = torch.get_num_threads()
        if self.num_threads and self.num_threads != before:
            torch.set_num_threads(int(self.num_threads))
        try:
            yield
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    def predict(self, request: PolicyRequest) -> ActionChunk:
        with self._threads():
            return self._predict(request)

    def _predict(self, request: PolicyRequest) -> ActionChunk:
        t_start = time.perf_counter()
        timing: dict[str, float] = {}
        self.check_request(request)
        spec = MODE_SPECS[request.mode]
        obs = request.observation
        image = self._model_image(obs.images, "observation")
        state = self._normalize(obs.state, "state")[None]
        instruction = request.instruction or self._instruction
        given_emb = getattr(request, "instruction_embedding", None)
        if given_emb is not None:
            if not isinstance(given_emb, torch.Tensor):
                given_emb = torch.as_tensor(np.asarray(given_emb, dtype=np.float32))
            elif given_emb.dtype != torch.float32:
                given_emb = given_emb.float()
            text_dim = int(self.config.wan["text_dim"])
            if given_emb.ndim != 2 or given_emb.shape[1] != text_dim or not torch.isfinite(given_emb).all():
                raise PolicyError(f"instruction_embedding must be a finite [L, {text_dim}] tensor, got {tuple(given_emb.shape)}")
        elif not instruction:
            raise PolicyError("no instruction: pass PolicyRequest.instruction or call set_instruction() first")

        actions_n = None
        if spec.action == "clean":
            given = getattr(request, "actions", None)
            if given is None:
                raise PolicyError(f"mode {request.mode!r} needs the actions (MotusRequest.actions, ({self.chunk_length}, {self.dof}))")
            given = np.asarray(given, dtype=np.float64)
            if given.shape != (self.chunk_length, self.dof):
                raise PolicyError(f"actions must have shape ({self.chunk_length}, {self.dof}), got {given.shape}")
            actions_n = self._normalize(given, "actions")[None]
        future = None
        if spec.video == "clean":
            fut = getattr(request, "future_images", None)
            if fut is None or len(fut) != self.config.num_video_frames:
                raise PolicyError(f"mode {request.mode!r} needs {self.config.num_video_frames} future observations "
                                  f"(MotusRequest.future_images), got {0 if fut is None else len(fut)}")
            future = [self._model_image(f, f"future observation {j}") for j, f in enumerate(fut)]
        prefix_n = None
        delay = 0
        if request.prefix is not None and len(request.prefix) > 0:
            if spec.action != "denoise":
                raise PolicyError(f"a prefix needs a mode that generates actions, not {request.mode!r}")
            prefix_n = self._normalize(request.prefix, "prefix")[None]
            delay = max(0, min(int(request.expected_delay), prefix_n.shape[1]))
        timing["preprocess"] = time.perf_counter() - t_start

        t = time.perf_counter()
        ctx_kv = self._context_kv(instruction, given_emb)
        self._sync()
        timing["text"] = time.perf_counter() - t

        t = time.perf_counter()
        hidden = self.vlm(image, instruction)
        with torch.no_grad():
            und = self.model.und_tokens(hidden)
        self._sync()
        timing["vlm"] = time.perf_counter() - t

        t = time.perf_counter()
        pixels = torch.from_numpy(to_unit_chw(image))[None]
        if future is not None:
            clip = torch.stack([pixels[0]] + [torch.from_numpy(to_unit_chw(f)) for f in future], dim=1)[None]
            clean = self.vae.encode_pixels(clip)
            cond_latent = clean[:, :, :1]
        else:
            clean = None
            cond_latent = self.vae.encode_image(pixels)
        self._sync()
        timing["vae_encode"] = time.perf_counter() - t

        t = time.perf_counter()
        gen = torch.Generator(device="cpu").manual_seed(int(request.seed)) if request.seed is not None else self._generator
        result = sample(
            self.model, Conditioning(und=und, context_kv=ctx_kv), cond_latent, state.to(self.device),
            mode=request.mode, num_steps=self.num_steps, generator=gen, video_latent=clean, actions=actions_n,
            prefix=prefix_n, delay=delay, prefix_schedule=self.prefix_schedule, max_guidance=self.max_guidance,
        )
        self._sync()
        timing["denoise"] = time.perf_counter() - t

        if spec.action == "noise":
            actions = np.zeros((0, self.dof))  # video generation: the action stream stays noise, nothing to execute
        else:
            actions = self.normalizer.denormalize(result.actions[0].double().cpu().numpy())
            if not np.all(np.isfinite(actions)):
                raise PolicyError("the model produced non-finite actions")
            if delay > 0:  # committed actions are returned bit-exactly (no float32 normalisation round trip)
                actions[:delay] = np.asarray(request.prefix, dtype=np.float64)[:delay]
            if actions_n is not None:  # world model: the given actions are a clean condition, returned as given
                actions = np.asarray(request.actions, dtype=np.float64).copy()
        frames = offsets = None
        if request.return_frames and spec.video == "denoise":
            t = time.perf_counter()
            fr = self.vae.decode_frames(result.video_latent)[0]  # [3, F, H, W] in [0, 1]
            frames = (fr.permute(1, 2, 3, 0).clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
            self._sync()
            timing["vae_decode"] = time.perf_counter() - t
            ratio = self.config.video_action_freq_ratio
            offsets = [(j + 1) * ratio * self.step_period for j in range(frames.shape[0])]
        timing["total"] = time.perf_counter() - t_start
        return ActionChunk(
            actions=actions, step_period=self.step_period, stamp=obs.stamp,
            prefix_length=0 if prefix_n is None else int(prefix_n.shape[1]), mode=request.mode, model=self.name,
            frames=frames, frame_offsets=offsets, condition_image=image, timing=timing,
            info={"num_steps": self.num_steps, "delay": delay, "instruction": instruction,
                  "dtype": str(self.model.compute_dtype).replace("torch.", ""), "device": str(self.device)},
        )

    def warmup(self) -> None:
        """One VLA chunk on a black observation with a zero instruction embedding."""
        images = {}
        for role in CAMERA_ROLES:
            h, w = (240, 320)
            if self.profile is not None and role in self.profile.cameras:
                cam = self.profile.cameras[role]
                h, w = cam.height, cam.width
            images[role] = np.zeros((h, w, 3), dtype=np.uint8)
        state = np.asarray(self.profile.home if self.profile is not None else (self.normalizer.min + self.normalizer.max) / 2)
        from motus_core.policy.base import Observation

        req = MotusRequest(observation=Observation(images=images, state=state, stamp=0.0), mode="vla", seed=0,
                           instruction_embedding=torch.zeros(1, int(self.config.wan["text_dim"])))
        self.predict(req)

    def close(self) -> None:
        self._embeddings.clear()
        self._context = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------ factories


def _normalizer_from(options: Mapping, profile, base_dir: Path | None, *, allow_limits: bool) -> MinMaxNormalizer:
    if options.get("normalization") == "none":  # e.g. RoboTwin checkpoints: raw joint positions in and out
        dof = profile.dof if profile is not None else 14
        return MinMaxNormalizer([0.0] * dof, [1.0] * dof, name="none (raw joint units)")
    stats = options.get("stats")
    key = options.get("stats_key") or (profile.stats_key if profile is not None else None)
    if stats:
        path = resolve(base_dir, stats) if base_dir is not None else Path(stats)
        if not key:
            raise PolicyError("options 'stats' given without 'stats_key' and no robot profile")
        if profile is not None and profile.stats_key and options.get("stats_key") and profile.stats_key != key:
            # one normalisation: a checkpoint's own statistics (those it was trained with) win over the profile's
            log.info("statistics %r from the checkpoint (%s), not the robot profile's %r", key, path, profile.stats_key)
        try:
            return load_stats(path, key)
        except PreprocessingError as exc:
            raise PolicyError(str(exc)) from exc
    if allow_limits and profile is not None:
        return MinMaxNormalizer(profile.position_lower, profile.position_upper, name=f"{profile.name}:joint_limits")
    if profile is None:
        raise PolicyError("no robot profile and no statistics: cannot normalise the state")
    try:
        return load_stats(profile.resolve(profile.stats_file) if profile.stats_file else None, profile.stats_key)
    except PreprocessingError as exc:
        raise PolicyError(f"robot {profile.name!r}: {exc}") from exc


def create_random(config: MotusConfig, *, profile=None, seed: int = 0, device: str = "cpu", num_steps: int | None = None,
                  options: Mapping | None = None, name: str = "motus_random") -> MotusPolicy:
    """A Motus policy with random weights for ``config`` (tiny tests/demos, benchmarks of any size).

    The modules are created on the meta device and materialised once on ``device`` in the target
    dtype (a full-size model never exists in float32 on the CPU). The VLM prompt is built without
    tokenizer files (``TinyPrompt``); the text encoder is a tiny byte-level umT5 unless
    ``options['text_encoder'] is False`` (then instructions must come as embeddings).
    """
    options = dict(options or {})
    prof = as_profile(profile)
    cfg = config
    if prof.dof != cfg.action_dim:
        cfg.state_dim = cfg.action_dim = prof.dof
    dtype = resolve_dtype(options.get("dtype"), device)
    model = build_motus_model(cfg, None, device=device, dtype=dtype, seed=seed)
    vae = build_vae(cfg.vae, None, device=device, dtype=resolve_dtype(options.get("vae_dtype", "float32"), device), seed=seed + 1)
    vlm = VLMFeatures(build_vlm(cfg.vlm, None, device=device, dtype=dtype, seed=seed + 2),
                      TinyPrompt(cfg.vlm, (cfg.video_height, cfg.video_width)))
    encoder = None
    identity = f"random-{name}-seed{seed}"
    if options.get("text_encoder", True) is not False:
        encoder = build_tiny_text_encoder(seed=seed + 3, dim=int(cfg.wan["text_dim"]), text_len=64)
        identity = encoder.identity
    cache = EmbeddingCache(options.get("embedding_cache") or tempfile.mkdtemp(prefix="motus_embeddings_"))
    normalizer = _normalizer_from(options, prof, None, allow_limits=True)
    policy = MotusPolicy(model, vae, vlm, normalizer=normalizer, step_period=1.0 / prof.action_rate_hz, cache=cache,
                         text_identity=identity, text_encoder=encoder, profile=prof, num_steps=num_steps,
                         seed=seed, name=name, num_threads=options.get("num_threads"))
    if options.get("compile"):
        model.compile()
    return policy


def create_tiny(*, profile=None, seed: int = 0, device: str = "cpu", num_steps: int = 10,
                options: Mapping | None = None) -> MotusPolicy:
    """A tiny random-weight Motus (the real implementation with small widths) for tests and demos.

    48 actions x the profile's joints at the profile's action rate, 8 predicted frames at 64x64.
    Statistics: ``options['stats']`` + ``stats_key`` when given, otherwise the profile's joint limits
    (min = lower limit, max = upper limit), so normalised outputs in [0, 1] land inside the limits
    (outputs of random weights are not confined to [0, 1]). Instruction embeddings come from a tiny
    byte-level umT5 and are cached in ``options['embedding_cache']`` (default: a fresh temporary
    directory). ``predict`` runs with ``options['num_threads']`` torch threads (default 1: faster for
    a model this small on a busy CPU).
    """
    options = dict(options or {})
    options.setdefault("num_threads", 1)
    cfg = tiny_config(action_chunk=int(options.get("chunk_length", 48)), frames=int(options.get("frames", 8)))
    return create_random(cfg, profile=profile, seed=seed, device=device, num_steps=num_steps, options=options,
                         name="tiny_motus")


def create(checkpoint_dir, *, device: str = "cpu", profile=None, options: Mapping | None = None) -> MotusPolicy:
    """Load a converted checkpoint directory (see checkpoint.py) as a policy, everything from local paths.

    Options (``motus_policy.yaml`` values, overridable by the caller): ``dtype`` (default bf16 on
    CUDA, fp32 on CPU), ``vae_dtype`` (default fp32), ``num_steps``, ``stats`` + ``stats_key``
    (default: the robot profile's), ``step_period`` (default 1 / profile action rate),
    ``embedding_cache``, ``text_encoder`` (a converted umT5 dir; loaded only on a cache miss, on
    ``text_encoder_device``, default CPU, so it never takes GPU memory), ``compile``, ``seed``.
    """
    if checkpoint_dir is None:
        raise PolicyError("the motus policy needs a checkpoint directory")
    base = Path(checkpoint_dir).expanduser()
    meta = {**read_policy_file(base), **dict(options or {})}
    prof = as_profile(profile)
    dev = str(device)
    dtype = resolve_dtype(meta.get("dtype"), dev)
    vae_dtype = resolve_dtype(meta.get("vae_dtype", "float32"), dev)
    try:
        cfg = MotusConfig.load(resolve(base, meta.get("config", DEFAULT_FILES["config"])))
        model = build_motus_model(cfg, load_weights(resolve(base, meta.get("weights", DEFAULT_FILES["weights"])), dev),
                                  device=dev, dtype=dtype)
        vae = build_vae(cfg.vae, load_weights(resolve(base, meta.get("vae", DEFAULT_FILES["vae"])), dev),
                        device=dev, dtype=vae_dtype)
        if cfg.vlm is None or not meta.get("vlm"):
            raise CheckpointError(f"{base}: no VLM weights (motus_policy.yaml 'vlm')")
        vlm_model = build_vlm(cfg.vlm, load_weights(resolve(base, meta["vlm"]), dev), device=dev, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load Motus from {base}: {exc}") from exc
    proc = meta.get("vlm_processor", DEFAULT_FILES["vlm_processor"])
    prompt = TinyPrompt(cfg.vlm, (cfg.video_height, cfg.video_width)) if proc == "tiny" else ProcessorPrompt(resolve(base, proc))
    te_dir = resolve(base, meta.get("text_encoder")) if meta.get("text_encoder") else None
    identity = meta.get("text_encoder_identity")
    if te_dir is not None and not identity:
        import json

        identity = json.loads((te_dir / "text_encoder.json").read_text())["identity"]
    if not identity:
        raise CheckpointError(f"{base}: motus_policy.yaml names neither 'text_encoder' nor 'text_encoder_identity'")
    te_device = str(meta.get("text_encoder_device", "cpu"))
    loader = (lambda: load_text_encoder(te_dir, device=te_device)) if te_dir is not None else None
    cache = EmbeddingCache(resolve(base, meta.get("embedding_cache", DEFAULT_FILES["embedding_cache"])))
    normalizer = _normalizer_from(meta, prof, base, allow_limits=False)
    step_period = float(meta.get("step_period") or 1.0 / prof.action_rate_hz)
    policy = MotusPolicy(model, vae, VLMFeatures(vlm_model, prompt),
                         normalizer=normalizer, step_period=step_period, cache=cache, text_identity=identity,
                         text_encoder_loader=loader, profile=prof, num_steps=meta.get("num_steps"),
                         seed=int(meta.get("seed", 0)), name=str(meta.get("name", "motus")),
                         num_threads=meta.get("num_threads"))
    if meta.get("compile"):
        model.compile()
    return policy
