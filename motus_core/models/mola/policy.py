"""MoLA behind the suite's policy interface (registry kind ``mola``).

``create(checkpoint_dir, device=..., profile=..., options=...)`` loads a policy directory written by
stage III (``motus_policy.yaml`` with ``kind: mola``, ``mola_config.yaml``, ``mola_net.safetensors``,
``stat.json``) plus the frozen video model and CLIP text encoder from the local directories the
config names. ``predict`` takes one observation (three cameras at native size, 14 joint positions)
and returns the de-normalised 14-dim chunk with per-stage timing:

* ``text``: CLIP embedding of the instruction (cached per instruction);
* ``video``: VAE encode + truncated SVD UNet pass on all cameras in one batched call;
* ``moidm``: IDM input projection + the three IDMs;
* ``video_former``: the perceiver resampler;
* ``head``: context encoder + the sampler (10 steps).

The cameras are split out of the same T-shaped mosaic the recorder stores (see
``preprocessing.mosaic_camera_images``), so the model sees the pixels it was trained on. With the flow
objective the RTC prefix (``PolicyRequest.prefix``) is honoured through ``motus_core.flow.guidance``;
with the release's EDM objective ``supports_prefix`` is False and the executor blends instead.
With ``return_frames`` the imagined clip is decoded (``options['imagine_steps']`` Euler steps, default
1 = the release's one-step imagination) and returned side by side per camera.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from motus_core.models.common import resolve_dtype
from motus_core.robot_profile import as_profile
from motus_core.policy.base import ActionChunk, Policy, PolicyError, PolicyRequest
from motus_core.preprocessing import (
    MOSAIC_ROLES,
    MinMaxNormalizer,
    PreprocessingError,
    check_rgb_image,
    from_unit_chw,
    load_stats,
    make_mosaic_from_roles,
    mosaic_camera_images,
)

from .checkpoint import CheckpointError, load_strict, read_policy_dir, resolve
from .config import MolaConfig, MolaConfigError
from .data import from_model_space, to_model_space
from .loading import WeightsError
from .model import MolaModel, MolaNet
from .video import TextEmbedding, VideoModel

log = logging.getLogger(__name__)

class MolaPolicy(Policy):
    name = "mola"
    modes = ("vla",)

    def __init__(self, model: MolaModel, normalizer: MinMaxNormalizer, *, profile=None, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, seed: int = 0, imagine_steps: int = 1, num_steps: int | None = None,
                 max_guidance: float = 5.0):
        self.model = model.eval()
        self.cfg: MolaConfig = model.cfg
        self.normalizer = normalizer
        self.profile = profile
        self.device = torch.device(device)
        self.dtype = dtype
        self.dof = self.cfg.action_dim
        self.chunk_length = self.cfg.chunk_length
        self.step_period = float(self.cfg.step_period)
        self.supports_prefix = bool(model.objective.supports_prefix)
        self.imagine_steps = int(imagine_steps)
        self.num_steps = num_steps
        self.max_guidance = float(max_guidance)
        self._seed = int(seed)
        self._generator = torch.Generator(device=self.device).manual_seed(self._seed)
        self._text: dict[str, TextEmbedding] = {}
        self._instruction = ""
        if normalizer.dim != self.dof:
            raise PolicyError(f"statistics {normalizer.name!r} have {normalizer.dim} dims, the model {self.dof}")
        if profile is not None:
            if profile.dof != self.dof:
                raise PolicyError(f"robot profile {profile.name!r} has {profile.dof} joints, the model {self.dof}")
            period = 1.0 / float(profile.action_rate_hz)
            if abs(period - self.step_period) > 0.01 * self.step_period:
                raise PolicyError(f"the model was trained for {1 / self.step_period:.1f} Hz actions, robot profile "
                                  f"{profile.name!r} runs at {profile.action_rate_hz} Hz")

    # ------------------------------------------------------------------ instruction
    def set_instruction(self, instruction: str) -> bool:
        cached = instruction in self._text
        if not cached:
            emb = self.model.video.encode_text([instruction])
            self._text[instruction] = TextEmbedding(tokens=emb.tokens, pooled=emb.pooled)
        self._instruction = instruction
        return cached

    # ------------------------------------------------------------------ checks
    def _images(self, images: Mapping[str, np.ndarray]) -> torch.Tensor:
        if not isinstance(images, Mapping):
            raise PolicyError("observation images must map camera roles to arrays")
        missing = [r for r in MOSAIC_ROLES if r not in images]
        if missing:
            raise PolicyError(f"missing camera images {missing} (need {list(MOSAIC_ROLES)})")
        for role in MOSAIC_ROLES:
            try:
                check_rgb_image(images[role], f"camera {role!r}")
            except PreprocessingError as exc:
                raise PolicyError(str(exc)) from exc
            if self.profile is not None and role in self.profile.cameras:
                cam = self.profile.cameras[role]
                h, w = images[role].shape[:2]
                if (h, w) != (cam.height, cam.width):
                    raise PolicyError(f"camera {role!r}: image is {w}x{h}, robot profile {self.profile.name!r} says "
                                      f"{cam.width}x{cam.height}")
        try:
            size = (self.cfg.video.image_size, self.cfg.video.image_size)
            cams = mosaic_camera_images(make_mosaic_from_roles(images), self.cfg.cameras, size)
        except PreprocessingError as exc:
            raise PolicyError(str(exc)) from exc
        return torch.from_numpy(cams)[None].to(self.device)

    def _normalize(self, x: np.ndarray, what: str) -> torch.Tensor:
        try:
            n = self.normalizer.normalize(np.asarray(x, dtype=np.float64))
        except PreprocessingError as exc:
            raise PolicyError(f"{what}: {exc}") from exc
        return torch.as_tensor(to_model_space(n), dtype=torch.float32, device=self.device)

    @contextmanager
    def _timed(self, timing: dict, key: str):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timing[key] = timing.get(key, 0.0) + time.perf_counter() - t0

    def _autocast(self):
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return torch.autocast(self.device.type, enabled=False)

    # ------------------------------------------------------------------ predict
    @torch.no_grad()
    def predict(self, request: PolicyRequest) -> ActionChunk:
        self.check_request(request)
        obs = request.observation
        timing: dict[str, float] = {}
        t_start = time.perf_counter()
        images = self._images(obs.images)
        state = self._normalize(obs.state, "state")[None]
        prefix = None
        delay = 0
        if request.prefix is not None and len(request.prefix) > 0:
            if not self.supports_prefix:
                raise PolicyError(f"{self.name}: this checkpoint samples with {self.model.objective.name!r}, which does not "
                                  "support an RTC prefix; the executor must blend instead")
            prefix = self._normalize(request.prefix, "prefix")[None]
            delay = int(request.expected_delay)
        instruction = request.instruction or self._instruction
        gen = self._generator if request.seed is None else torch.Generator(device=self.device).manual_seed(int(request.seed))
        timing["preprocess"] = time.perf_counter() - t_start
        with self._timed(timing, "text"):
            self.set_instruction(instruction)
            text = self._text[instruction]
        imagine = self.imagine_steps if request.return_frames else 0
        with self._autocast():
            with self._timed(timing, "video"):
                feats, frames = self.model.video_features(images, text, gen, imagine_steps=imagine)
            chunk, la = self.model.sample(feats, text.pooled.to(self.device), state, generator=gen, prefix=prefix,
                                          delay=delay, steps=self.num_steps, max_guidance=self.max_guidance,
                                          timer=lambda stage: self._timed(timing, stage))
        actions = self.normalizer.denormalize(from_model_space(chunk[0].float().cpu().numpy().astype(np.float64)))
        if not np.all(np.isfinite(actions)):
            raise PolicyError(f"{self.name}: the model produced non-finite actions")
        timing["total"] = time.perf_counter() - t_start
        out = ActionChunk(actions=actions, step_period=self.step_period, stamp=float(obs.stamp),
                          prefix_length=0 if prefix is None else int(prefix.shape[1]), mode=request.mode, model=self.name,
                          timing=timing,
                          info={"latent_actions": {k: v[0].cpu().numpy().tolist() for k, v in la.indices.items()},
                                "cameras": list(self.cfg.cameras), "objective": self.model.objective.name})
        out.condition_image = _side_by_side(images[0].cpu().numpy())
        if frames is not None:
            clip = frames[0].float().cpu().numpy()  # (V, F, 3, S, S)
            out.frames = np.stack([_side_by_side(clip[:, j]) for j in range(clip.shape[1])])
            out.frame_offsets = [j * self.cfg.frame_stride * self.step_period for j in range(clip.shape[1])]
        return out

    def warmup(self) -> None:
        """One prediction on blank images (kernel selection, allocator, CLIP) so the first real call is fast."""
        from motus_core.policy.base import Observation

        images = {}
        for role in MOSAIC_ROLES:
            cam = self.profile.cameras.get(role) if self.profile is not None else None
            images[role] = np.zeros((cam.height, cam.width, 3) if cam else (240, 320, 3), dtype=np.uint8)
        state = (self.normalizer.min + self.normalizer.max) / 2
        self.predict(PolicyRequest(observation=Observation(images=images, state=state, stamp=0.0),
                                   instruction=self._instruction, seed=0))

    def reset(self) -> None:
        self._generator = torch.Generator(device=self.device).manual_seed(self._seed)

    def close(self) -> None:
        self._text.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _side_by_side(cams: np.ndarray) -> np.ndarray:
    """(V, 3, S, S) in [0, 1] -> uint8 (S, V*S, 3): the cameras of one frame next to each other."""
    return np.concatenate([from_unit_chw(c) for c in cams], axis=1)


def build_policy(cfg: MolaConfig, net_state: Mapping[str, torch.Tensor] | None, normalizer: MinMaxNormalizer, *,
                 device: str = "cpu", profile=None, options: Mapping | None = None) -> MolaPolicy:
    """Assemble a policy from a config: the video model from its local paths, or random weights when the
    config names none (benchmarks only; ``create`` refuses such a checkpoint)."""
    options = dict(options or {})
    dev = str(device)
    dtype = resolve_dtype(options.get("dtype"), dev)
    try:
        video = VideoModel.build(cfg.video, dtype=dtype if dev.startswith("cuda") else torch.float32)
        net = MolaNet(cfg)
        if net_state is not None:
            load_strict(net, net_state, "MoLA checkpoint")
        model = MolaModel(cfg, video, net).to(dev)
    except (MolaConfigError, WeightsError, FileNotFoundError, CheckpointError) as exc:
        raise PolicyError(f"cannot build MoLA: {exc}") from exc
    return MolaPolicy(model, normalizer, profile=profile, device=dev, dtype=dtype, seed=int(options.get("seed", 0)),
                      imagine_steps=int(options.get("imagine_steps", 1)),
                      num_steps=int(options["num_steps"]) if options.get("num_steps") else None,
                      max_guidance=float(options.get("max_guidance", 5.0)))


def create(checkpoint_dir, *, device: str = "cpu", profile=None, options: Mapping | None = None) -> MolaPolicy:
    """Load a MoLA policy directory. Options (override ``motus_policy.yaml``): ``dtype`` (default bf16 on
    CUDA, fp32 on CPU), ``seed``, ``num_steps``, ``imagine_steps``, ``max_guidance``, ``stats_file`` +
    ``stats_key`` (default: the directory's), ``video_pretrained`` / ``video_text_encoder`` (local dirs)."""
    if checkpoint_dir is None:
        raise PolicyError("the mola policy needs a checkpoint directory (stage-III output 'policy/')")
    base = Path(checkpoint_dir).expanduser()
    prof = as_profile(profile)
    try:
        cfg, state, meta = read_policy_dir(base, options)
    except (CheckpointError, OSError) as exc:
        raise PolicyError(f"cannot load MoLA from {base}: {exc}") from exc
    if not cfg.video.pretrained or not cfg.video.text_encoder:
        raise PolicyError(f"{base}: the config names no video model / CLIP directory (video.pretrained, video.text_encoder); "
                          "a policy never runs on random video weights")
    stats_file = resolve(base, meta.get("stats_file") or "")
    stats_key = meta.get("stats_key") or prof.stats_key
    if not stats_file:
        raise PolicyError(f"{base}: no normalisation statistics ('stats_file' in {base / 'motus_policy.yaml'})")
    try:
        normalizer = load_stats(stats_file, stats_key)
    except PreprocessingError as exc:
        raise PolicyError(f"{base}: {exc}") from exc
    return build_policy(cfg, state, normalizer, device=device, profile=prof, options=meta)
