"""fastsde.solvers: convergence orders on data whose flow is exact, the mixture drawn by every stochastic
solver, the identities between solvers, per-sample adaptive steps, schedules and bad input."""

import math

import pytest
import torch

from fastsde import VESDE, VPSDE, solvers

from gmm import GMM, N_SAMPLES, GaussianMixture, assert_is_mixture, sdes

EPS = 1e-3
MU, S = torch.tensor([0.5, -1.0]), 0.7
GAUSS = GaussianMixture(weights=[1.0], means=[MU.tolist()], stds=[S])


def exact_flow(sde, z):
    """x(eps) of the probability-flow ODE from x(T) = z, for data N(MU, S^2 I): the flow is linear."""
    (a0, s0), (aT, sT) = (sde.marginal_coef(torch.tensor([t], dtype=torch.float64)) for t in (EPS, sde.T))
    return a0 * MU + (z - aT * MU) * torch.sqrt((a0**2 * S**2 + s0**2) / (aT**2 * S**2 + sT**2))


# (solver, options, order of convergence). UniPC's corrector raises its predictor's order by one.
ORDERS = [
    ("dpmpp_2m", dict(order=1), 1),
    ("heun", {}, 2),
    ("dpmpp_2m", dict(lower_order_final=False), 2),
    ("dpmpp_3m", dict(lower_order_final=False), 3),
    ("unipc", dict(order=2, lower_order_final=False), 3),
    ("unipc", dict(order=3, lower_order_final=False), 4),
]


@pytest.mark.parametrize("name", ["VE", "VP"])
@pytest.mark.parametrize("solver,options,order", ORDERS, ids=lambda v: v if isinstance(v, str) else None)
def test_error_falls_at_the_solvers_order(name, solver, options, order):
    # In float64 against the exact flow, on EDM's schedule: the slope of log error against log steps.
    # Measured: 0.99, 2.03-2.06, 3.03-3.04, 3.02, 4.01 from 40 to 80 steps.
    sde = {"VE": VESDE(0.01, 50.0), "VP": VPSDE()}[name]
    z = sde.prior_sampling((256, 2), torch.Generator().manual_seed(4)).double()
    exact = exact_flow(sde, z)
    errors = []
    for steps in (40, 80):
        times = solvers.schedule_times(sde, "edm", steps, EPS).double()
        x, nfe = solvers.solve(sde, GAUSS.score_fn(sde), z, solver, times, **options)
        errors.append(float((x - exact).pow(2).mean().sqrt()))
        assert nfe == (2 * steps - 1 if solver == "heun" else steps)
    slope = math.log2(errors[0] / errors[1])
    assert order - 0.2 < slope < order + 0.5, (errors, slope)


def test_dpmpp_3m_takes_third_order_steps():
    # One step from exact history, halving the step: the local error falls 16-fold (order 3). The
    # third-order term of the widely copied DPM-Solver++(3M) update is half of what Taylor's expansion
    # gives (its D2 estimates h^2 D''/2, not h^2 D''), which leaves its steps second order: 8-fold.
    sde = VPSDE()
    z = torch.tensor([[0.3, -0.2]], dtype=torch.float64)

    def flow(t):  # the exact flow through z at T
        (aT, sT), (a, s) = (sde.marginal_coef(torch.tensor([v], dtype=torch.float64)) for v in (sde.T, t))
        return a * MU + (z - aT * MU) * torch.sqrt((a**2 * S**2 + s**2) / (aT**2 * S**2 + sT**2))

    errors = []
    for h in (0.04, 0.02, 0.01):
        times = torch.tensor([0.5 + 2 * h, 0.5 + h, 0.5, 0.5 - h], dtype=torch.float64)
        a, c, _ = solvers._dpmpp_coefficients(sde, times, 3, 0.0, False, 1.0)
        d = [solvers._denoised(sde, GAUSS.score_fn(sde), flow(float(t)), t.reshape(1)) for t in times[:3]]
        x = a[2] * flow(float(times[2])) + c[2, 0] * d[2] + c[2, 1] * d[1] + c[2, 2] * d[0]
        errors.append(float((x - flow(float(times[3]))).abs().max()))
    assert all(15 < errors[k] / errors[k + 1] < 18 for k in range(2)), errors


STOCHASTIC = [("edm", 40), ("dpmpp_2m_sde", 50), ("dpmpp_3m_sde", 50), ("gotta_go_fast", None)]


@pytest.mark.parametrize("name", ["VE", "VP", "subVP"])
@pytest.mark.parametrize("solver,steps", STOCHASTIC, ids=[s for s, _ in STOCHASTIC])
def test_stochastic_solvers_draw_the_mixture(name, solver, steps):
    # In 2 dimensions whether a Gotta Go Fast step is accepted depends strongly on its noise: redrawing
    # the noise of a rejected step failed here (spreads 1.1-1.8x too wide); its Brownian memory passes.
    sde = sdes()[name]
    n = N_SAMPLES
    x, nfe = solvers.sample(
        GMM.score_fn(sde), sde, (n, 2), solver, steps, generator=[torch.Generator().manual_seed(i) for i in range(n)]
    )
    assert_is_mixture(x, GMM)
    if steps is None:  # per sample: 2 evaluations an attempt, then the noise removal
        assert nfe.shape == (n,) and (nfe % 2 == 1).all() and nfe.min() < nfe.max()


def test_brownian_stack_keeps_the_path():
    # A rejected step's increment goes back; retries split it by the Brownian bridge: the pieces taken
    # add up to it, and, over many draws, the first piece of a split has the bridge's moments.
    x = torch.zeros(20000, 1)
    path = solvers._BrownianStack(x)
    rows, g = torch.arange(20000), torch.Generator().manual_seed(0)
    h, dW = path.take(rows, torch.full((20000,), 1.0, dtype=torch.float64), torch.randn(20000, 1, generator=g))
    assert (h == 1).all() and abs(float(dW.var()) - 1) < 0.05
    path.put(rows, h, dW)
    h1, dW1 = path.take(rows, torch.full((20000,), 0.25, dtype=torch.float64), torch.randn(20000, 1, generator=g))
    h2, dW2 = path.take(rows, torch.full((20000,), 5.0, dtype=torch.float64), torch.randn(20000, 1, generator=g))
    assert (h1 == 0.25).all() and (h2 == 0.75).all() and (path.depth == 0).all()
    torch.testing.assert_close(dW1 + dW2, dW)
    residual = dW1 - 0.25 * dW  # bridge: independent of dW, variance 0.25 * 0.75
    assert abs(float(residual.var()) - 0.1875) < 0.01 and abs(float((residual * dW).mean())) < 0.02


@pytest.mark.parametrize("name", ["VE", "VP", "subVP"])
@pytest.mark.parametrize(
    "solver,options",
    [("dpmpp_3m", dict(steps=40)), ("unipc", dict(steps=40)), ("dpm_adaptive", dict(rtol=0.005))],
    ids=["dpmpp_3m", "unipc", "adaptive"],
)
def test_deterministic_solvers_draw_the_mixture(name, solver, options):
    sde = sdes()[name]
    x, _ = solvers.sample(
        GMM.score_fn(sde), sde, (N_SAMPLES, 2), solver, generator=torch.Generator().manual_seed(2), **options
    )
    assert_is_mixture(x)


def test_identities():
    sde = VPSDE()
    z = sde.prior_sampling((8, 2), torch.Generator().manual_seed(1))
    times = solvers.schedule_times(sde, "edm", 10, EPS)
    score_fn = GMM.score_fn(sde)
    heun, nfe = solvers.solve(sde, score_fn, z, "heun", times)
    # EDM's sampler without churn is Heun's, whether S_churn is 0 or the churn's window holds no sigma.
    for options in (dict(S_churn=0.0), dict(S_churn=40.0, S_min=1e6)):
        got, got_nfe = solvers.solve(
            sde, score_fn, z, "edm", times, generator=torch.Generator().manual_seed(0), **options
        )
        assert torch.equal(got, heun) and got_nfe == nfe
    churned, _ = solvers.solve(sde, score_fn, z, "edm", times, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(churned, heun)
    # The SDE forms with eta = 0 are the deterministic solvers.
    for order in (2, 3):
        ode, _ = solvers.solve(sde, score_fn, z, f"dpmpp_{order}m", times)
        sde_form, _ = solvers.solve(
            sde, score_fn, z, f"dpmpp_{order}m_sde", times, eta=0.0, generator=torch.Generator().manual_seed(0)
        )
        assert torch.equal(sde_form, ode)
        noisy, _ = solvers.solve(sde, score_fn, z, f"dpmpp_{order}m_sde", times, generator=torch.Generator())
        assert not torch.equal(noisy, ode)


def test_dpmpp_2m_is_lu_et_als_algorithm_2():
    # Written out from the paper, in float64: x_{i+1} = (std_{i+1} / std_i) x_i - alpha_{i+1} (e^{-h} - 1) D,
    # D = x0_i + (x0_i - x0_{i-1}) / (2 r), the first step first order.
    sde, score_fn = VESDE(0.01, 50.0), GMM.score_fn(VESDE(0.01, 50.0))
    z = sde.prior_sampling((4, 2), torch.Generator().manual_seed(3)).double()
    times = solvers.schedule_times(sde, "logsnr", 6, EPS).double()
    alpha, std = sde.marginal_coef(times)
    lam = torch.log(alpha / std)
    x, prev = z, None
    for i in range(6):
        x0 = solvers._denoised(sde, score_fn, x, times[i].expand(4))
        h = lam[i + 1] - lam[i]
        D = x0 if prev is None else x0 + (x0 - prev) * (h / (2 * (lam[i] - lam[i - 1])))
        x, prev = std[i + 1] / std[i] * x - alpha[i + 1] * torch.expm1(-h) * D, x0
    got, _ = solvers.solve(sde, score_fn, z, "dpmpp_2m", times, lower_order_final=False)
    torch.testing.assert_close(got, x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("noise", ["per_sample", "philox"])
@pytest.mark.parametrize("solver", solvers.ADAPTIVE)
def test_adaptive_solvers_step_each_sample_on_its_own(solver, noise):
    from fastsde import Philox

    sde = VESDE(0.01, 50.0)
    z = sde.prior_sampling((6, 2), torch.Generator().manual_seed(7))
    gens = (
        (lambda seeds: Philox(list(seeds)))
        if noise == "philox"  # noqa: E731
        else (lambda seeds: [torch.Generator().manual_seed(s) for s in seeds])
    )
    whole, nfe = solvers.sample(GMM.score_fn(sde), sde, z.shape, solver, z=z, generator=gens(range(6)))
    parts = [
        solvers.sample(GMM.score_fn(sde), sde, (k - j, 2), solver, z=z[j:k], generator=gens(range(j, k)))
        for j, k in ((0, 1), (1, 4), (4, 6))
    ]
    torch.testing.assert_close(torch.cat([x for x, _ in parts]), whole, rtol=0, atol=0)
    assert torch.equal(torch.cat([n for _, n in parts]), nfe) and len(set(nfe.tolist())) > 1
    tight, tight_nfe = solvers.sample(
        GMM.score_fn(sde),
        sde,
        z.shape,
        solver,
        z=z,
        generator=gens(range(6)),
        **{"reltol" if solver == "gotta_go_fast" else "rtol": 0.005},
    )
    assert tight_nfe.double().mean() > nfe.double().mean()  # a tighter tolerance takes more steps


def test_schedules():
    sde = VPSDE()
    for name in solvers.SCHEDULES:
        t = solvers.schedule_times(sde, name, 8, EPS).double()
        assert t.shape == (9,) and t[0] == sde.T and float(t[-1]) == pytest.approx(EPS) and (t.diff() < 0).all()
    lam = -torch.log(sde.noise_level(solvers.schedule_times(sde, "logsnr", 8, EPS).double()))
    torch.testing.assert_close(lam.diff(), lam.diff().mean().expand(8), rtol=1e-5, atol=0)
    root = solvers.schedule_times(sde, "quadratic", 8, EPS).double().sqrt()
    torch.testing.assert_close(root.diff(), root.diff().mean().expand(8), rtol=1e-5, atol=0)
    sigma = sde.noise_level(solvers.schedule_times(sde, "edm", 8, EPS).double()) ** (1 / 7)
    torch.testing.assert_close(sigma.diff(), sigma.diff().mean().expand(8), rtol=1e-4, atol=0)


def test_every_solver_raises_on_nan():
    sde = VPSDE()

    def bad(x, t):  # NaN from t < 0.5 on
        return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), -x)

    for solver in solvers.SOLVERS:
        fixed = solver in solvers.FIXED_STEP
        with pytest.raises(FloatingPointError, match=r"NaN or Inf in the state" + (r" at step \d" if fixed else "")):
            solvers.sample(bad, sde, (4, 2), solver, 6, generator=torch.Generator())


def test_bad_input():
    sde, score_fn = VPSDE(), GMM.score_fn(VPSDE())
    cases = [
        (dict(name="dpmpp_4m"), "unknown solver 'dpmpp_4m'; known: heun, edm"),
        (dict(schedule="cosine"), "schedule must be one of edm, logsnr, time, quadratic, got 'cosine'"),
        (dict(steps=0), "steps must be a positive integer, got 0"),
        (dict(name="dpmpp_2m", order=4), "order must be 1, 2 or 3 for DPM-Solver\\+\\+, got 4"),
        (dict(name="unipc", order=0), "order must be 1, 2 or 3 for UniPC, got 0"),
        (dict(name="dpm_adaptive", order=1), "order must be 2 or 3 for the adaptive DPM-Solver, got 1"),
        (dict(name="dpm_adaptive", rtol=0), "rtol must be a positive number, got 0"),
        (dict(name="gotta_go_fast", abstol=-1.0), "abstol must be a positive number, got -1.0"),
        (dict(name="dpmpp_2m_sde", eta=-1.0), "eta must be >= 0, got -1.0"),
        (dict(name="gotta_go_fast", cuda_graph=True), "cuda_graph: gotta_go_fast chooses its steps on the host"),
    ]
    for given, said in cases:
        options = {"name": "heun", "steps": 4, **given}
        with pytest.raises(ValueError, match=said):
            solvers.sample(score_fn, sde, (2, 2), options.pop("name"), **options)
