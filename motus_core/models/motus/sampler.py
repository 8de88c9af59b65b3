"""One rectified-flow sampler for the five Motus modes (UniDiffuser-style per-modality timesteps).

Each modality (future video, action chunk) is in one of three roles during a run:

* ``denoise``  integrated from noise (t = 1) to clean (t = 0) with Euler steps;
* ``noise``    held at its initial noise with t = 1 (the model sees "unknown"), never updated;
* ``clean``    given, held clean with t = 0 (a condition), never updated.

==============  =========  =========  ===============================================================
mode            video      actions    meaning (Motus paper, appendix algorithms)
==============  =========  =========  ===============================================================
``joint``       denoise    denoise    p(o', a | o, l) - the official inference (exact numerics)
``vla``         noise      denoise    p(a | o, l): actions from image + instruction
``video``       denoise    noise      p(o' | o, l): video generation
``world_model`` denoise    clean      p(o' | o, a, l): future frames given the actions
``idm``         clean      denoise    p(a | o, o', l): actions that explain the observed frames
==============  =========  =========  ===============================================================

Latent frame 0 is always the clean latent of the current image (teacher forcing, re-imposed after
every step). Times follow the official inference: ``ts = linspace(1, 0, N + 1)`` (float32), step
``i`` evaluates at ``1000 * ts[i]`` and moves by ``dt = ts[i+1] - ts[i]``; both denoised
modalities share the step. With a frozen action prefix (real-time chunking) the action velocity is
corrected with ``motus_core.flow.guidance.guided_velocity`` (RTC, guided inpainting) and the first
``delay`` actions are set to the prefix at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from motus_core.flow.guidance import guided_velocity, pad_prefix, prefix_weights

from .model import Conditioning, MotusModel

ROLES = ("denoise", "noise", "clean")


@dataclass(frozen=True)
class ModeSpec:
    video: str
    action: str


MODE_SPECS = {
    "joint": ModeSpec(video="denoise", action="denoise"),
    "vla": ModeSpec(video="noise", action="denoise"),
    "video": ModeSpec(video="denoise", action="noise"),
    "world_model": ModeSpec(video="denoise", action="clean"),
    "idm": ModeSpec(video="clean", action="denoise"),
}


@dataclass
class SampleResult:
    video_latent: torch.Tensor  # [B, C, T, h, w] (frame 0 = condition latent)
    actions: torch.Tensor  # [B, K, action_dim] in the model's (normalised) space
    trace: list = field(default_factory=list)  # per step dict (when asked)


def sample(
    model: MotusModel,
    cond: Conditioning,
    cond_latent: torch.Tensor,
    state: torch.Tensor | None,
    *,
    mode: str = "joint",
    num_steps: int | None = None,
    video_noise: torch.Tensor | None = None,
    action_noise: torch.Tensor | None = None,
    video_latent: torch.Tensor | None = None,
    actions: torch.Tensor | None = None,
    prefix: torch.Tensor | None = None,
    delay: int = 0,
    prefix_schedule: str = "exp",
    max_guidance: float = 5.0,
    generator: torch.Generator | None = None,
    trace: bool = False,
) -> SampleResult:
    """Run one mode.

    ``cond_latent [B, C, 1, h, w]``: clean latent of the current image. ``video_noise`` /
    ``action_noise``: the initial draws (drawn here with ``generator`` when None; video first, then
    actions, as the official code). ``video_latent``: the clean latent of [current, future frames]
    for ``idm``; ``actions``: the clean (normalised) chunk for ``world_model``. ``prefix [B, d', A]``:
    normalised actions the new chunk must continue (RTC); ``delay`` of them are frozen.
    """
    if mode not in MODE_SPECS:
        raise ValueError(f"unknown Motus mode {mode!r}; modes: {sorted(MODE_SPECS)}")
    spec = MODE_SPECS[mode]
    cfg = model.config
    n = int(num_steps or cfg.num_inference_steps)
    b = cond_latent.shape[0]
    dev = model.device
    h, w = cond_latent.shape[-2:]
    shape_v = (b, cond_latent.shape[1], cfg.latent_frames, h, w)
    shape_a = (b, cfg.action_chunk_size, cfg.action_dim)
    cond_latent = cond_latent.to(dev, torch.float32)

    if video_noise is None:
        video_noise = torch.randn(shape_v, generator=generator, device=generator.device if generator else dev)
    if action_noise is None:
        action_noise = torch.randn(shape_a, generator=generator, device=generator.device if generator else dev)
    if tuple(video_noise.shape) != shape_v or tuple(action_noise.shape) != shape_a:
        raise ValueError(f"noise shapes {tuple(video_noise.shape)}, {tuple(action_noise.shape)} != {shape_v}, {shape_a}")

    if spec.video == "clean":
        if video_latent is None or tuple(video_latent.shape) != shape_v:
            raise ValueError(f"mode {mode!r} needs the clean video latent {shape_v} (current + future frames)")
        video = video_latent.to(dev, torch.float32).clone()
    else:
        video = video_noise.to(dev, torch.float32).clone()
    video[:, :, :1] = cond_latent
    if spec.action == "clean":
        if actions is None or tuple(actions.shape) != shape_a:
            raise ValueError(f"mode {mode!r} needs the clean action chunk {shape_a}")
        act = actions.to(dev, torch.float32).clone()
    else:
        act = action_noise.to(dev, torch.float32).clone()

    target = weights = None
    if prefix is not None and prefix.shape[-2] > 0:
        if spec.action != "denoise":
            raise ValueError(f"an action prefix needs a mode that generates actions, not {mode!r}")
        target = pad_prefix(prefix.to(dev, torch.float32), shape_a[1])
        weights = prefix_weights(shape_a[1], delay, prefix.shape[-2], prefix_schedule)

    ts = torch.linspace(1.0, 0.0, n + 1, device=dev)
    one = torch.ones(b, device=dev)
    steps = []
    for i in range(n):
        t_now = ts[i] * 1000
        dt = ts[i + 1] - ts[i]
        t_v = {"denoise": t_now * one, "noise": 1000 * one, "clean": 0 * one}[spec.video]
        t_a = {"denoise": t_now * one, "noise": 1000 * one, "clean": 0 * one}[spec.action]
        video_in, act_in = video, act

        if target is None:
            with torch.no_grad():
                out = model(video, t_v, act, t_a, state, cond)
            v_act, v_vid, dec = out.action_velocity, out.video_velocity, out.action_decoder_out
        else:
            def velocity_fn(x):
                o = model(video, t_v, x, t_a, state, cond)
                return o.action_velocity, (o.video_velocity, o.action_decoder_out)

            v_act, (v_vid, dec) = guided_velocity(velocity_fn, act, float(ts[i]), target, weights, max_guidance)

        if trace:
            steps.append(dict(video_latent_in=video_in, action_latent_in=act_in, video_velocity=v_vid,
                              action_decoder_out=dec, t_video=t_v, t_action=t_a))
        if spec.video == "denoise":
            video = video + v_vid * dt
            video[:, :, :1] = cond_latent
        if spec.action == "denoise":
            act = act + v_act * dt

    if target is not None and delay > 0:
        d = min(int(delay), prefix.shape[-2])
        act = act.clone()
        act[:, :d] = prefix[:, :d].to(act)
    return SampleResult(video_latent=video, actions=act, trace=steps)
