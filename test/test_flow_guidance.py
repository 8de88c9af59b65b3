"""RTC guided flow sampling (motus_core.flow.guidance) against the paper's formulas (arXiv 2506.07339).

The velocity models here are exact flows of Gaussian data, so the clean estimate and its Jacobian
are known in closed form and the guided sample can be checked without a trained network.
"""
import math

import pytest
import torch

from motus_core.flow.guidance import (
    euler_sample,
    guidance_weight,
    guided_velocity,
    linear_timesteps,
    pad_prefix,
    prefix_weights,
)


def test_prefix_weights_match_the_paper():
    # H = 10, d = 2, H - s = 6: W = 1 for i < d, c_i (e^c_i - 1)/(e - 1) with c_i = (6 - i)/(6 - 2 + 1), 0 from 6 on.
    w = prefix_weights(10, delay=2, prefix_length=6, schedule="exp")
    expected = [1.0, 1.0]
    for i in range(2, 6):
        c = (6 - i) / 5
        expected.append(c * (math.exp(c) - 1) / (math.e - 1))
    expected += [0.0] * 4
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    lin = prefix_weights(10, 2, 6, "linear")
    assert torch.allclose(lin[2:6], torch.tensor([0.8, 0.6, 0.4, 0.2], dtype=torch.float64))
    hard = prefix_weights(10, 2, 6, "hard")
    assert hard.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    # monotone non-increasing
    assert torch.all(w[1:] <= w[:-1])
    with pytest.raises(ValueError):
        prefix_weights(10, 2, 6, "cosine")


def test_delay_longer_than_prefix_does_not_freeze_padding():
    # A delay of 5 with only 3 prefix actions: the zero padding of the target must not get weight 1.
    w = prefix_weights(8, delay=5, prefix_length=3)
    assert w.tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


def test_guidance_weight_formula_and_clipping():
    for t in (0.2, 0.5, 0.7):
        tau = 1 - t
        r2 = (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2)
        assert guidance_weight(t, 100.0) == pytest.approx((1 - tau) / (tau * r2))
    assert guidance_weight(0.5, 100.0) == pytest.approx(2.0)  # the minimum of the unclipped weight
    assert guidance_weight(0.999, 5.0) == 5.0  # near pure noise: clipped
    assert guidance_weight(1.0, 5.0) == 5.0
    assert guidance_weight(0.001, 5.0) == 5.0  # near the data: unbounded too, clipped
    assert guidance_weight(0.0, 5.0) == 5.0


def _gaussian_velocity(sigma: float):
    """Exact velocity of x_t = (1-t) x0 + t eps with x0 ~ N(0, sigma^2): v = E[eps - x0 | x_t] = g(t) x_t."""

    def g(t):
        d = (1 - t) ** 2 * sigma**2 + t**2
        return (t - (1 - t) * sigma**2) / d

    return (lambda x, t: g(t) * x), g


def test_guided_velocity_is_the_vjp_of_the_clean_estimate():
    torch.manual_seed(0)
    vel, g = _gaussian_velocity(2.0)
    x = torch.randn(1, 6, 3, dtype=torch.float64)
    y = torch.randn(1, 6, 3, dtype=torch.float64)
    w = prefix_weights(6, 2, 4)
    t = 0.6
    v, aux = guided_velocity(lambda z: (vel(z, t), {"video": z * 2}), x, t, y, w, max_guidance=100.0)
    # x0_hat = (1 - t g) x, J = (1 - t g) I  ->  v_guided = v - gw * J (W (y - x0_hat))
    k = 1 - t * g(t)
    expected = vel(x, t) - guidance_weight(t, 100.0) * k * (w[None, :, None] * (y - k * x))
    assert torch.allclose(v, expected, atol=1e-10)
    assert not aux["video"].requires_grad


def test_guided_velocity_works_under_inference_mode():
    vel, _ = _gaussian_velocity(1.0)
    w = prefix_weights(4, 1, 2)
    with torch.inference_mode():
        x = torch.randn(1, 4, 2)
        y = torch.zeros(1, 4, 2)
        v, _ = guided_velocity(lambda z: (vel(z, 0.5), None), x, 0.5, y, w)
    assert torch.isfinite(v).all()


def test_euler_sample_without_prefix_is_plain_euler():
    vel, _ = _gaussian_velocity(1.5)
    noise = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = euler_sample(vel, noise, num_steps=7)
    x = noise.clone()
    ts = linear_timesteps(7, dtype=torch.float64)
    for i in range(7):
        x = x + vel(x, float(ts[i])) * float(ts[i + 1] - ts[i])
    assert torch.allclose(out, x)


def test_inpainting_follows_the_prefix_and_leaves_the_rest():
    """Guided sampling pulls the soft-masked actions towards the prefix and freezes the first d."""
    vel, _ = _gaussian_velocity(1.0)
    k, dof, d, overlap = 12, 2, 3, 8
    noise = torch.randn(1, k, dof, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    prefix = torch.full((1, overlap, dof), 2.5, dtype=torch.float64)
    free = euler_sample(vel, noise, num_steps=10)
    guided = euler_sample(vel, noise, num_steps=10, prefix=prefix, delay=d, max_guidance=5.0)
    # frozen actions equal the prefix exactly
    assert torch.equal(guided[0, :d], prefix[0, :d])
    # the soft-masked region moved towards the target, more where the weight is larger
    dist_free = (free[0, d:overlap] - 2.5).abs().mean(dim=-1)
    dist_guided = (guided[0, d:overlap] - 2.5).abs().mean(dim=-1)
    assert torch.all(dist_guided < dist_free)
    assert dist_guided[0] < dist_guided[-1]
    # actions beyond the previous plan (weight 0) are untouched: the dims are independent here
    assert torch.allclose(guided[0, overlap:], free[0, overlap:], atol=1e-12)


def test_pad_prefix():
    p = torch.ones(1, 3, 2)
    out = pad_prefix(p, 5)
    assert out.shape == (1, 5, 2) and out[0, 3:].abs().sum() == 0
    with pytest.raises(ValueError):
        pad_prefix(torch.ones(1, 6, 2), 5)
