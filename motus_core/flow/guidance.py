"""Rectified-flow sampling with a frozen action prefix (real-time chunking, RTC).

Convention (the one Motus uses): ``x_t = (1 - t) * x0 + t * noise``, t runs from 1 (pure noise) to 0
(clean), the model predicts the velocity ``v = noise - x0`` and Euler steps are ``x <- x + v * dt`` with
``dt < 0``.

RTC (Black, Galliker, Levine 2025, "Real-Time Execution of Action Chunking Flow Policies") is
training-free inpainting: while the robot executes the ``d`` actions that are already committed, the
next chunk is sampled so that it agrees with them. At every step the clean estimate
``x0_hat = x_t - t * v`` is pulled towards the target prefix ``Y`` with a soft mask ``W`` by adding the
vector-Jacobian product ``J^T (W * (Y - x0_hat))`` (``J = d x0_hat / d x_t``) to the velocity, with
the guidance weight ``min(beta, (1 - tau) / (tau * r_tau^2))`` of the paper (its time ``tau = 1 - t``
runs from noise to data; ``r_tau^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2)``).

Sign check against the paper: its velocity points from noise to data (``v_paper = -v``), its clean
estimate is ``A + (1 - tau) v_paper = x - t v`` (the same ``x0_hat``) and it adds the guidance term to
``v_paper``; here it is therefore subtracted from ``v``.

The soft mask: 1 on the first ``d`` actions (they will execute no matter what), an exponential
decay over the rest of the previous plan, 0 where the previous plan has no actions.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from motus_core.flow import mask

VelocityFn = Callable[[torch.Tensor], "tuple[torch.Tensor, object]"]


def prefix_weights(chunk_length: int, delay: int, prefix_length: int, schedule: str = "exp") -> torch.Tensor:
    """Soft mask W (chunk_length,) of RTC as a float64 tensor: ``motus_core.flow.mask.prefix_weights``."""
    return torch.from_numpy(mask.prefix_weights(chunk_length, delay, prefix_length, schedule))


def guidance_weight(t: float, max_guidance: float) -> float:
    """RTC's ``min(beta, (1 - tau) / (tau * r^2))`` with ``tau = 1 - t`` and ``r^2 = (1-tau)^2 / (tau^2 + (1-tau)^2)``.

    The unclipped weight equals ``(tau^2 + (1-tau)^2) / (tau (1-tau))``: at least 2 (at tau = 0.5)
    and unbounded at both ends, so both ends are clipped to ``max_guidance``.
    """
    tau = 1.0 - float(t)
    if tau <= 0.0 or tau >= 1.0:
        return float(max_guidance)
    r2 = (1.0 - tau) ** 2 / (tau**2 + (1.0 - tau) ** 2)
    return float(min(max_guidance, (1.0 - tau) / (tau * r2)))


def pad_prefix(prefix: torch.Tensor, chunk_length: int) -> torch.Tensor:
    """Zero-pad a (..., d, D) prefix to (..., chunk_length, D) (the mask is 0 there)."""
    d = prefix.shape[-2]
    if d > chunk_length:
        raise ValueError(f"prefix of {d} actions is longer than the chunk ({chunk_length})")
    if d == chunk_length:
        return prefix
    pad = prefix.new_zeros(*prefix.shape[:-2], chunk_length - d, prefix.shape[-1])
    return torch.cat([prefix, pad], dim=-2)


def guided_velocity(
    velocity_fn: VelocityFn,
    x_t: torch.Tensor,
    t: float,
    target: torch.Tensor,
    weights: torch.Tensor,
    max_guidance: float = 5.0,
) -> tuple[torch.Tensor, object]:
    """Velocity at ``x_t`` corrected towards ``target`` on the masked actions.

    ``velocity_fn(x) -> (v, aux)``: the model's velocity for the action latent ``x`` (B, K, D) and any
    auxiliary output (e.g. the video velocity of a joint model), which is returned detached.
    ``target``: (B, K, D) in the model's (normalised) action space, ``weights``: (K,).
    """
    w = weights.to(device=x_t.device, dtype=x_t.dtype)
    # The vector-Jacobian product needs autograd even when the caller samples under no_grad or
    # inference_mode (x_t may then be an inference tensor: clone it into a normal one).
    with torch.inference_mode(False), torch.enable_grad():
        x = x_t.detach().clone().requires_grad_(True)
        v, aux = velocity_fn(x)
        x0_hat = x - t * v
        with torch.no_grad():
            err = ((target.to(x0_hat.dtype) - x0_hat.detach()) * w[:, None]).clone()
        (vjp,) = torch.autograd.grad(x0_hat, x, grad_outputs=err)
    gw = guidance_weight(t, max_guidance)
    aux = _detach(aux)
    return (v.detach() - gw * vjp.detach()), aux


def _detach(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_detach(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    return obj


def linear_timesteps(num_steps: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``linspace(1, 0, N + 1)``: the official Motus inference schedule (Euler, unshifted)."""
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    return torch.linspace(1.0, 0.0, num_steps + 1, device=device, dtype=dtype)


def euler_sample(
    velocity_fn: Callable[[torch.Tensor, float], torch.Tensor],
    noise: torch.Tensor,
    num_steps: int = 10,
    *,
    prefix: torch.Tensor | None = None,
    delay: int = 0,
    prefix_schedule: str = "exp",
    max_guidance: float = 5.0,
    timesteps: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate ``dx/dt = v(x, t)`` from t=1 (``noise``) to t=0, optionally inpainting a prefix.

    ``velocity_fn(x, t)`` takes the (B, K, D) action latent and the scalar time in [0, 1].
    ``prefix``: (B, d', D) target actions in the model's space for the first d' steps; ``delay`` is how
    many of them are frozen (weight 1). The returned chunk has its first ``delay`` actions set exactly
    to the prefix, since those are executed regardless of what the model says.
    """
    ts = torch.as_tensor(timesteps if timesteps is not None else linear_timesteps(num_steps), dtype=torch.float64)
    x = noise
    k = noise.shape[-2]
    target = weights = None
    if prefix is not None and prefix.shape[-2] > 0:
        target = pad_prefix(prefix.to(noise.dtype), k)
        weights = prefix_weights(k, delay, prefix.shape[-2], prefix_schedule)
    for i in range(len(ts) - 1):
        t, dt = float(ts[i]), float(ts[i + 1] - ts[i])
        if target is None:
            with torch.no_grad():
                v = velocity_fn(x, t)
        else:
            v, _ = guided_velocity(lambda z: (velocity_fn(z, t), None), x, t, target, weights, max_guidance)
        x = x + v * dt
    if target is not None and delay > 0:
        d = min(delay, prefix.shape[-2])
        x = x.clone()
        x[..., :d, :] = prefix[..., :d, :].to(x.dtype)
    return x.detach()
