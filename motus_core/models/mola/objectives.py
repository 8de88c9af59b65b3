"""Training objectives and samplers of the action head.

* :class:`FlowObjective` (default, the paper's flow matching): ``x_t = (1 - t) a + t eps``, the network
  predicts ``v = eps - a`` from ``x_t`` and ``t * 1000``; sampling is the shared Euler integrator of
  :mod:`motus_core.flow.guidance`, so real-time-chunking prefix guidance works as for every flow policy.
* :class:`EdmObjective` (the release): Karras preconditioning with ``sigma_data = 0.5``, truncated
  log-logistic sigma density, exponential sigma grid and the DDIM (= DPM-Solver-1) sampler, written
  from the release's recipe so its weights sample correctly.

Both take every random draw as an optional argument, so parity tests can inject the release's draws.
"""
from __future__ import annotations

import math

import torch

from motus_core.flow import guidance

from .config import HeadConfig


class EdmObjective:
    name = "edm"
    supports_prefix = False

    def __init__(self, cfg: HeadConfig):
        self.sd = float(cfg.sigma_data)
        self.sigma_min = float(cfg.sigma_min)
        self.sigma_max = float(cfg.sigma_max)
        self.sample_sigma_min = float(cfg.sample_sigma_min)
        self.steps = int(cfg.sampling_steps)
        self.loc = math.log(self.sd)
        self.scale = 0.5

    # ---------------------------------------------------------------- preconditioning
    def scalings(self, sigma: torch.Tensor):
        s = sigma.reshape(-1, 1, 1)
        c_skip = self.sd**2 / (s**2 + self.sd**2)
        c_out = s * self.sd / (s**2 + self.sd**2) ** 0.5
        c_in = 1 / (s**2 + self.sd**2) ** 0.5
        return c_skip, c_out, c_in

    def inner(self, net, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """F(c_in x, sigma): the raw network output. ``net(u, noise_feature)``."""
        _, _, c_in = self.scalings(sigma)
        return net(x * c_in, sigma.log() / 4)

    def denoise(self, net, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        c_skip, c_out, _ = self.scalings(sigma)
        return x * c_skip + self.inner(net, x, sigma) * c_out

    # ---------------------------------------------------------------- training
    def sigma_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """Truncated log-logistic sigma from a float64 uniform draw (release ``rand_log_logistic``)."""
        u = u.to(torch.float64)
        lo = torch.as_tensor(math.log(self.sigma_min), dtype=torch.float64)
        hi = torch.as_tensor(math.log(self.sigma_max), dtype=torch.float64)
        cdf_lo = ((lo - self.loc) / self.scale).sigmoid()
        cdf_hi = ((hi - self.loc) / self.scale).sigmoid()
        v = u * (cdf_hi - cdf_lo) + cdf_lo
        return (v.logit() * self.scale + self.loc).exp().to(torch.float32)

    def loss(self, net, actions: torch.Tensor, *, u: torch.Tensor | None = None, sigma: torch.Tensor | None = None,
             noise: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """Returns (loss, network output F). Draw order as the release: u (float64), then the noise."""
        b = actions.shape[0]
        if sigma is None:
            if u is None:
                u = torch.rand(b, dtype=torch.float64, generator=generator, device=actions.device if generator is None else generator.device)
            sigma = self.sigma_from_uniform(u).to(actions.device)
        sigma = sigma.to(actions.dtype)
        if noise is None:
            noise = torch.randn(actions.shape, generator=generator, device=actions.device if generator is None else generator.device,
                                dtype=actions.dtype)
        noise = noise.to(actions.device)
        x = actions + noise * sigma.reshape(-1, 1, 1)
        c_skip, c_out, _ = self.scalings(sigma)
        out = self.inner(net, x, sigma)
        target = (actions - c_skip * x) / c_out
        return ((out - target) ** 2).mean(), out

    # ---------------------------------------------------------------- sampling
    def sigmas(self, steps: int | None = None, sigma_min: float | None = None, device=None) -> torch.Tensor:
        n = int(steps or self.steps)
        smin = self.sample_sigma_min if sigma_min is None else float(sigma_min)
        s = torch.linspace(math.log(self.sigma_max), math.log(smin), n, device=device).exp()
        return torch.cat([s, s.new_zeros([1])])

    def sample(self, net, shape, *, eps: torch.Tensor | None = None, steps: int | None = None,
               sigma_min: float | None = None, generator: torch.Generator | None = None, device=None,
               dtype=torch.float32, return_steps: bool = False, **_unused):
        sigmas = self.sigmas(steps, sigma_min, device=device)
        if eps is None:
            eps = torch.randn(shape, generator=generator, device=device if generator is None else generator.device, dtype=dtype)
        x = eps.to(device=device, dtype=dtype) * self.sigma_max
        denoised_steps = []
        for i in range(len(sigmas) - 1):
            s_i = sigmas[i] * x.new_ones([x.shape[0]])
            denoised = self.denoise(net, x, s_i)
            denoised_steps.append(denoised)
            t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
            h = t_next - t
            x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * denoised
        return (x, torch.stack(denoised_steps)) if return_steps else x


class FlowObjective:
    name = "flow"
    supports_prefix = True

    def __init__(self, cfg: HeadConfig):
        self.steps = int(cfg.sampling_steps)
        self.time_scale = float(cfg.flow_time_scale)
        self.beta = torch.distributions.Beta(torch.tensor(float(cfg.flow_beta_a)), torch.tensor(float(cfg.flow_beta_b)))

    def velocity(self, net, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(x, t.to(x.dtype) * self.time_scale)

    def sample_time(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        # Beta(1.5, 1) by inverse CDF when a generator is given (torch.distributions takes none): F^-1(u) = u^(1/a) for b=1
        a, bb = float(self.beta.concentration1), float(self.beta.concentration0)
        if generator is not None and bb == 1.0:
            u = torch.rand(b, generator=generator, device=generator.device)
            s = u ** (1.0 / a)
        else:
            s = self.beta.sample((b,))
        return (0.001 + 0.999 * s).to(device)

    def loss(self, net, actions: torch.Tensor, *, t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None, **_unused):
        b = actions.shape[0]
        if t is None:
            t = self.sample_time(b, generator, actions.device)
        if noise is None:
            noise = torch.randn(actions.shape, generator=generator, device=actions.device if generator is None else generator.device,
                                dtype=actions.dtype)
        noise = noise.to(device=actions.device, dtype=actions.dtype)
        tt = t.to(actions.dtype).reshape(-1, 1, 1)
        x_t = (1 - tt) * actions + tt * noise
        v = self.velocity(net, x_t, t)
        return ((v - (noise - actions)) ** 2).mean(), v

    def sample(self, net, shape, *, eps: torch.Tensor | None = None, steps: int | None = None,
               generator: torch.Generator | None = None, device=None, dtype=torch.float32,
               prefix: torch.Tensor | None = None, delay: int = 0, max_guidance: float = 5.0, **_unused):
        if eps is None:
            eps = torch.randn(shape, generator=generator, device=device if generator is None else generator.device, dtype=dtype)
        eps = eps.to(device=device, dtype=dtype)
        b = shape[0]

        def vfn(x, t):
            return self.velocity(net, x, torch.full((b,), float(t), device=x.device))

        return guidance.euler_sample(vfn, eps, num_steps=int(steps or self.steps), prefix=prefix, delay=delay,
                                     max_guidance=max_guidance)


def make_objective(cfg: HeadConfig):
    return FlowObjective(cfg) if cfg.objective == "flow" else EdmObjective(cfg)
