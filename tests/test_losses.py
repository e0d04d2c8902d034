"""Training objectives: the exact score must score better than a wrong one under every loss; the
optimiser schedule and the EMA follow the official formulas."""

import pytest
import torch

from fastsde import VESDE, VPSDE, subVPSDE
from fastsde.losses import EMA, ddpm_loss, optimize_step, optimizer, sde_loss, smld_loss

from gmm import GaussianMixture

GMM = GaussianMixture(weights=[0.4, 0.6], means=[[-1.5, 0.5], [1.0, -0.5]], stds=[0.3, 0.5])


def data(n=20000):
    return GMM.sample(n, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("sde", [VESDE(), VPSDE(), subVPSDE()], ids=["VE", "VP", "subVP"])
@pytest.mark.parametrize("weighting", [False, True])
@pytest.mark.parametrize("reduce_mean", [True, False])
def test_sde_loss_is_minimised_by_the_true_score(sde, weighting, reduce_mean):
    exact = GMM.score_fn(sde)
    losses = {}
    for name, fn in [
        ("exact", exact),
        ("scaled", lambda x, t: 0.8 * exact(x, t)),
        ("shifted", lambda x, t: exact(x, t) + 0.3),
    ]:
        # The same noise for every candidate, so that only the score differs.
        losses[name] = sde_loss(
            fn, sde, data(), reduce_mean, weighting, generator=torch.Generator().manual_seed(1)
        ).item()
    assert losses["exact"] < losses["scaled"] and losses["exact"] < losses["shifted"], losses


@pytest.mark.parametrize("sde", [VESDE(), VPSDE(), subVPSDE()], ids=["VE", "VP", "subVP"])
@pytest.mark.parametrize("weighting", [False, True])
@pytest.mark.parametrize("reduce_mean", [True, False])
def test_sde_loss_is_the_official_objective(sde, weighting, reduce_mean):
    # Upstream's get_sde_loss_fn, written out, from the same draws: t ~ U(eps, T), then z.
    x, eps = data(64).reshape(16, 2, 2, 2), 1e-5
    score_fn = lambda x, t: torch.sin(x) - x * t.reshape(-1, 1, 1, 1)  # noqa: E731
    got = sde_loss(score_fn, sde, x, reduce_mean, weighting, eps, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    t = torch.rand(x.shape[0], generator=g) * (sde.T - eps) + eps
    z = torch.randn(x.shape, generator=g)
    mean, std = sde.marginal_prob(x, t)
    std = std.reshape(-1, 1, 1, 1)
    score = score_fn(mean + std * z, t)
    reduce = (lambda v: v.mean(-1)) if reduce_mean else (lambda v: 0.5 * v.sum(-1))  # noqa: E731
    if weighting:
        losses = reduce(((score + z / std) ** 2).reshape(16, -1)) * sde.sde(torch.zeros_like(x), t)[1] ** 2
    else:
        losses = reduce(((score * std + z) ** 2).reshape(16, -1))
    torch.testing.assert_close(got, losses.mean())


def test_sde_loss_reductions():
    sde, x = VPSDE(), data(256)
    f = lambda x, t: -x  # noqa: E731
    mean = sde_loss(f, sde, x, reduce_mean=True, generator=torch.Generator().manual_seed(2))
    half_sum = sde_loss(f, sde, x, reduce_mean=False, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(half_sum, mean * 0.5 * x.shape[1])


def test_discrete_losses_prefer_the_true_score():
    x = data()
    ve = VESDE(N=100)
    sig_desc = ve.discrete_sigmas(torch.empty(0)).flip(0)

    def ve_model(scale):  # a discrete NCSN: labels index the descending sigmas; returns the score
        return lambda x, labels: scale * GMM.score_fn(ve)(x, ve.noise_level_time(sig_desc[labels]))

    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert smld_loss(ve_model(1.0), ve, x, generator=g()) < smld_loss(ve_model(0.8), ve, x, generator=g())
    vp = VPSDE(N=100)
    s1m = vp.sqrt_1m_alphas_cumprod(torch.empty(0))

    def vp_model(scale):  # a DDPM: predicts the noise, -std * score at the discrete step
        def model(x, labels):
            t = vp.noise_level_time(s1m[labels] / torch.sqrt(1 - s1m[labels] ** 2))
            return -scale * s1m[labels][:, None] * GMM.score_fn(vp)(x, t)

        return model

    assert ddpm_loss(vp_model(1.0), vp, x, generator=g()) < ddpm_loss(vp_model(0.8), vp, x, generator=g())
    with pytest.raises(ValueError, match="smld_loss needs a VESDE"):
        smld_loss(ve_model(1.0), vp, x)
    with pytest.raises(ValueError, match="ddpm_loss needs a VPSDE, got subVPSDE"):
        ddpm_loss(vp_model(1.0), subVPSDE(), x)


def test_optimize_step_warmup_and_clipping():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = optimizer([p], lr=1e-3)
    p.grad = torch.tensor([30.0, 40.0, 0.0])  # norm 50
    optimize_step(opt, [p], step=250, lr=1e-3, warmup=1000, grad_clip=1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(2.5e-4)
    torch.testing.assert_close(p.grad.norm(), torch.tensor(1.0))
    optimize_step(opt, [p], step=5000, lr=1e-3, warmup=1000, grad_clip=-1)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_ema_follows_upstream():
    lin = torch.nn.Linear(2, 2)
    frozen = torch.nn.Parameter(torch.ones(1), requires_grad=False)
    params = [*lin.parameters(), frozen]
    ema = EMA(params, decay=0.999)
    assert len(ema.shadow_params) == 2  # trainable parameters only, in order
    start = [s.clone() for s in ema.shadow_params]
    with torch.no_grad():
        for q in lin.parameters():
            q.add_(1.0)
    ema.update(params)
    d = min(0.999, 2 / 11)
    for s, s0, q in zip(ema.shadow_params, start, lin.parameters()):
        torch.testing.assert_close(s, s0 - (1 - d) * (s0 - q))
    state = ema.state_dict()
    assert set(state) == {"decay", "num_updates", "shadow_params"} and state["num_updates"] == 1
    other = EMA(params, decay=0.5)
    other.load_state_dict(state)
    assert other.decay == 0.999 and torch.equal(other.shadow_params[0], ema.shadow_params[0])
    with pytest.raises(ValueError, match="do not match"):
        EMA([torch.nn.Parameter(torch.zeros(5))], 0.9).load_state_dict(state)
    ema.copy_to(params)
    assert torch.equal(lin.weight, ema.shadow_params[0])
