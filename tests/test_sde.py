"""The SDEs against the paper's closed forms, and the official quirks kept or fixed."""

import math

import pytest
import torch

from fastsde import VESDE, VPSDE, subVPSDE

SDES = [VESDE(), VPSDE(), subVPSDE()]
IDS = ["VE", "VP", "subVP"]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginals_solve_the_moment_equations(sde):
    # For dx = f x dt + g dw from x(0) = x0: alpha' = f alpha and (std^2)' = 2 f std^2 + g^2.
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-5
    alpha, std = sde.marginal_coef(t)
    (ap, sp), (am, sm) = sde.marginal_coef(t + h), sde.marginal_coef(t - h)
    torch.testing.assert_close((ap - am) / (2 * h), sde.drift_coef(t) * alpha, rtol=1e-6, atol=1e-8)
    var_rate = (sp**2 - sm**2) / (2 * h) - 2 * sde.drift_coef(t) * std**2
    torch.testing.assert_close(var_rate, sde.diffusion(t) ** 2, rtol=1e-6, atol=1e-8)


def test_closed_forms():
    t = torch.tensor([0.0, 0.5, 1.0])
    ve = VESDE(sigma_min=0.01, sigma_max=50.0)
    torch.testing.assert_close(ve.marginal_coef(t)[1], 0.01 * 5000**t)
    vp, svp = VPSDE(), subVPSDE()
    alpha, std = vp.marginal_coef(t)
    torch.testing.assert_close(alpha**2 + std**2, torch.ones(3))
    torch.testing.assert_close(svp.marginal_coef(t)[1], 1 - alpha**2)
    torch.testing.assert_close(alpha[2], torch.tensor(math.exp(-0.25 * 19.9 - 0.05)))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_logp_is_the_prior_density(sde):
    z = sde.prior_sampling((5, 3, 4), torch.Generator().manual_seed(0))
    expected = torch.distributions.Normal(0.0, sde.prior_std()).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), expected)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_noise_level_inverse(sde):
    t = torch.linspace(1e-3, 1, 50, dtype=torch.float64)
    torch.testing.assert_close(sde.noise_level_time(sde.noise_level(t)), t, rtol=1e-7, atol=1e-9)


def test_discretizations_official():
    x = torch.randn(3, 2)
    t = torch.tensor([1.0, 0.5, 1e-3])
    vp = VPSDE()
    betas = torch.linspace(0.1 / 1000, 20 / 1000, 1000)
    i = (t * 999).long()
    f, G = vp.discretize(x, t)
    torch.testing.assert_close(f, torch.sqrt(1 - betas[i])[:, None] * x - x)
    torch.testing.assert_close(G, torch.sqrt(betas[i]))
    ve = VESDE()
    sig = torch.exp(torch.linspace(math.log(0.01), math.log(50), 1000))
    f, G = ve.discretize(x, t)
    assert torch.equal(f, torch.zeros_like(x))
    prev = torch.where(i == 0, torch.zeros(3), sig[(i - 1).clamp(min=0)])
    torch.testing.assert_close(G, torch.sqrt(sig[i] ** 2 - prev**2))
    # subVP: Euler-Maruyama with dt = 1/N.
    s = subVPSDE()
    f, G = s.discretize(x, t)
    torch.testing.assert_close(G, s.diffusion(t) * math.sqrt(1e-3))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_tables_follow_the_device_and_dtype_of_t(sde):
    # The official VESDE.discretize indexed a CPU table with CUDA indices; here tables move with t.
    t = torch.full((2,), 0.5, device="meta")
    f, G = sde.discretize(torch.empty(2, 3, device="meta"), t)
    assert f.device.type == G.device.type == "meta"
    t32 = torch.tensor([0.3, 0.7])
    for out in (*sde.marginal_coef(t32), sde.diffusion(t32), *sde.discretize_coef(t32), sde.langevin_alpha(t32)):
        assert out.dtype == torch.float32  # no float64 leaks


def test_reverse_sde():
    vp = VPSDE()
    x, t = torch.randn(4, 3), torch.rand(4)
    s = torch.randn(4, 3)
    drift, g = vp.reverse(lambda x, t: s).sde(x, t)
    f, g_fwd = vp.sde(x, t)
    torch.testing.assert_close(drift, f - (g_fwd**2)[:, None] * s)
    drift, g = vp.reverse(lambda x, t: s, probability_flow=True).sde(x, t)
    torch.testing.assert_close(drift, f - 0.5 * (g_fwd**2)[:, None] * s)
    assert torch.equal(g, torch.zeros(4))


def test_langevin_alpha():
    t = torch.tensor([0.5])
    assert VESDE().langevin_alpha(t).item() == 1.0
    beta = 0.1 / 1000 + (20 - 0.1) / 1000 * 499 / 999
    for sde in (VPSDE(), subVPSDE()):  # official: 1 - beta_i; sub-VP crashed upstream
        assert math.isclose(sde.langevin_alpha(t).item(), 1 - beta, rel_tol=1e-6)
