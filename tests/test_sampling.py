"""Samplers driven by the exact score of a Gaussian mixture must give the mixture back: mode weights,
means and spreads within sampling error, for every SDE, predictor, corrector and ODE method."""

import math

import pytest
import torch

import fastsde
from fastsde import VESDE, VPSDE, subVPSDE

from conftest import require
from gmm import GMM, N_SAMPLES, GaussianMixture, assert_is_mixture, sdes

PC_CASES = [
    ("VE", "reverse_diffusion", "langevin", 0.16),
    ("VE", "ancestral_sampling", "none", 0.0),
    ("VE", "euler_maruyama", "ald", 0.1),
    ("VP", "euler_maruyama", "none", 0.0),
    ("VP", "reverse_diffusion", "langevin", 0.16),
    ("VP", "ancestral_sampling", "ald", 0.1),
    ("subVP", "euler_maruyama", "none", 0.0),
    ("subVP", "reverse_diffusion", "langevin", 0.16),
]


@pytest.mark.parametrize("name,predictor,corrector,snr", PC_CASES)
def test_pc_sampler_recovers_mixture(name, predictor, corrector, snr):
    sde = sdes()[name]
    x, nfe = fastsde.pc_sample(
        GMM.score_fn(sde),
        sde,
        (N_SAMPLES, 2),
        predictor=predictor,
        corrector=corrector,
        snr=snr,
        eps=1e-3,
        generator=torch.Generator().manual_seed(0),
    )
    assert nfe == sde.N * (1 + (corrector != "none"))
    assert_is_mixture(x)


@pytest.mark.parametrize("name", ["VE", "VP", "subVP"])
def test_pc_probability_flow_predictor(name):
    # Euler steps on the ODE overshoot the spread by O(1/N) (about 11% at N = 500 for VE): use N = 1000.
    sde = sdes(1000)[name]
    x, _ = fastsde.pc_sample(
        GMM.score_fn(sde),
        sde,
        (N_SAMPLES, 2),
        predictor="reverse_diffusion",
        corrector="none",
        probability_flow=True,
        generator=torch.Generator().manual_seed(1),
    )
    assert_is_mixture(x)


def smooth_score(x, t):
    """A score function for [B, C, H, W] that is no mixture's, nonlinear in x and depending on t."""
    return torch.tanh(x) - x / (1 + t.reshape(-1, 1, 1, 1))


def official_step(sde, name, score_fn, x, t, z, snr=0.0, probability_flow=False, per_sample=False):
    """One step of a predictor or corrector as the official sampling.py writes it, with noise z:
    (x, x_mean). Sub-VP Langevin steps use alpha_i = 1 - beta_i as VP (upstream fails there)."""
    col = lambda v: v.reshape(-1, *[1] * (x.dim() - 1))  # noqa: E731
    s, k, i = score_fn(x, t), (0.5 if probability_flow else 1.0), (t * (sde.N - 1)).long()
    if name in ("euler_maruyama", "reverse_diffusion"):
        if name == "euler_maruyama":  # the reverse SDE's drift and diffusion over dt = -1/N
            f, g = sde.sde(x, t)
            f, g = (f - col(g) ** 2 * s * k) / sde.N, g / math.sqrt(sde.N)
        else:  # the forward discretisation, reversed
            f, g = sde.discretize(x, t)
            f = f - col(g) ** 2 * s * k
        x_mean = x - f
        return (x_mean if probability_flow else x_mean + col(g) * z), x_mean
    betas = (
        None if isinstance(sde, VESDE) else torch.linspace(sde.beta_0 / sde.N, sde.beta_1 / sde.N, sde.N, dtype=x.dtype)
    )
    if name == "ancestral_sampling":
        if betas is None:
            sigmas = torch.linspace(math.log(sde.sigma_min), math.log(sde.sigma_max), sde.N, dtype=x.dtype).exp()
            sigma, prev = sigmas[i], torch.where(i == 0, 0.0, sigmas[(i - 1).clamp(min=0)])
            x_mean = x + s * col(sigma**2 - prev**2)
            return x_mean + col(torch.sqrt(prev**2 * (sigma**2 - prev**2) / sigma**2)) * z, x_mean
        beta = betas[i]
        x_mean = (x + col(beta) * s) / col(torch.sqrt(1.0 - beta))
        return x_mean + col(torch.sqrt(beta)) * z, x_mean
    alpha = torch.ones_like(t) if betas is None else 1.0 - betas[i]
    if name == "langevin":
        grad_norm, noise_norm = s.flatten(1).norm(dim=-1), z.flatten(1).norm(dim=-1)
        if not per_sample:
            grad_norm, noise_norm = grad_norm.mean(), noise_norm.mean()
        step = (snr * noise_norm / grad_norm) ** 2 * 2 * alpha
    else:  # ald
        step = (snr * sde.marginal_prob(x, t)[1]) ** 2 * 2 * alpha
    x_mean = x + col(step) * s
    return x_mean + z * col(torch.sqrt(step * 2)), x_mean


STEPS = [
    (sde, name, pf)
    for sde in ("VE", "VP", "subVP")
    for name, pf in (
        ("euler_maruyama", False),
        ("euler_maruyama", True),
        ("reverse_diffusion", False),
        ("reverse_diffusion", True),
        ("ancestral_sampling", False),
        ("langevin", False),
        ("ald", False),
    )
    if (sde, name) != ("subVP", "ancestral_sampling")
]


@pytest.mark.parametrize("sde_name,name,probability_flow", STEPS)
def test_each_step_is_the_official_update(sde_name, name, probability_flow):
    # N = 50: betas up to 0.4, so that every coefficient matters; t = 0.01 takes the first index
    # (VE ancestral sampling then adds no noise).
    sde = sdes(50)[sde_name]
    g = torch.Generator().manual_seed(3)
    x = 3 * torch.randn(4, 3, 5, 5, generator=g)
    t = torch.tensor([1.0, 0.5, 0.237, 0.01])
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    for per_sample in (False, True) if name == "langevin" else (False,):
        noise = torch.Generator().manual_seed(4)
        if name in fastsde.PREDICTORS:
            got = fastsde.PREDICTORS[name](sde, smooth_score, x, t, probability_flow, generator=noise)
        else:
            got = fastsde.CORRECTORS[name](sde, smooth_score, x, t, 0.16, generator=noise, per_sample=per_sample)
        want = official_step(
            sde, name, smooth_score, x.double(), t.double(), z.double(), 0.16, probability_flow, per_sample
        )
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "sde_name,predictor,corrector,n_steps,denoise",
    [
        ("VE", "reverse_diffusion", "langevin", 1, True),
        ("VE", "ancestral_sampling", "ald", 2, False),
        ("VP", "euler_maruyama", "langevin", 1, True),
        ("VP", "ancestral_sampling", "none", 1, True),
        ("subVP", "reverse_diffusion", "ald", 1, False),
        ("subVP", "none", "langevin", 2, True),
    ],
)
def test_pc_sample_is_the_official_loop(sde_name, predictor, corrector, n_steps, denoise):
    # Upstream's pc_sampler: from the prior, at each of N times from T to eps, n_steps corrector steps
    # then a predictor step; the last x_mean (denoise) or x. The same generator draws in that order.
    sde, shape, eps = sdes(30)[sde_name], (4, 3, 5, 5), 1e-3
    got, nfe = fastsde.pc_sample(
        smooth_score,
        sde,
        shape,
        predictor,
        corrector,
        snr=0.16,
        n_steps=n_steps,
        denoise=denoise,
        eps=eps,
        generator=torch.Generator().manual_seed(5),
    )
    g = torch.Generator().manual_seed(5)
    x = torch.randn(shape, generator=g).double() * sde.prior_std()
    for t in torch.linspace(sde.T, eps, sde.N):
        t = t.double().expand(shape[0])
        for _ in range(n_steps if corrector != "none" else 0):
            z = torch.randn(shape, generator=g).double()
            x, x_mean = official_step(sde, corrector, smooth_score, x, t, z, 0.16)
        if predictor != "none":
            x, x_mean = official_step(sde, predictor, smooth_score, x, t, torch.randn(shape, generator=g).double())
        else:
            x_mean = x  # upstream's 'none' predictor returns (x, x)
    torch.testing.assert_close(got, (x_mean if denoise else x).float(), rtol=1e-4, atol=1e-4)
    assert nfe == sde.N * ((n_steps if corrector != "none" else 0) + (predictor != "none"))


@pytest.mark.parametrize("name", ["VE", "VP", "subVP"])
def test_ode_sample_removes_noise_as_upstream(name):
    # Upstream's ODE sampler ends with the mean of a reverse-diffusion step at eps (1 more evaluation).
    sde, eps = sdes(50)[name], 1e-3
    z = sde.prior_sampling((4, 3, 5, 5), torch.Generator().manual_seed(6))
    x, nfe = fastsde.ode_sample(smooth_score, sde, z.shape, "heun", steps=3, eps=eps, z=z)
    y, nfe_y = fastsde.ode_sample(smooth_score, sde, z.shape, "heun", steps=3, eps=eps, z=z, denoise=False)
    t = torch.full((4,), eps).double()
    want = official_step(sde, "reverse_diffusion", smooth_score, y.double(), t, torch.zeros_like(y.double()))[1]
    torch.testing.assert_close(x, want.float(), rtol=1e-5, atol=1e-5)
    assert nfe == nfe_y + 1


@pytest.mark.parametrize("name", ["VE", "VP", "subVP"])
# At 20 steps the fast solvers still widen the narrow component by 4-13% (measured; they converge
# at second order: 1-4% at 40 steps), so the recovery check runs them at 40 steps.
@pytest.mark.parametrize("method,steps", [("RK45", None), ("heun", 40), ("dpmpp_2m", 40)])
def test_ode_sampler_recovers_mixture(name, method, steps):
    sde = sdes()[name]
    x, nfe = fastsde.ode_sample(
        GMM.score_fn(sde), sde, (N_SAMPLES, 2), method=method, steps=steps, generator=torch.Generator().manual_seed(2)
    )
    assert_is_mixture(x)
    if method == "heun":
        assert nfe == 2 * steps - 1 + 1  # the last step is Euler; +1 for the denoising step
    if method == "dpmpp_2m":
        assert nfe == steps + 1


@pytest.mark.parametrize("name", ["VE", "VP"])
def test_fast_solvers_match_rk45_from_the_same_noise(name):
    sde = sdes()[name]
    z = sde.prior_sampling((500, 2), torch.Generator().manual_seed(3))
    ref, nfe_ref = fastsde.ode_sample(GMM.score_fn(sde), sde, z.shape, z=z)
    for method in ("heun", "dpmpp_2m"):
        x, nfe = fastsde.ode_sample(GMM.score_fn(sde), sde, z.shape, method=method, steps=20, z=z)
        assert nfe < nfe_ref
        # The same ODE solved to within a small fraction of the data's spread.
        assert (x - ref).abs().median() < 0.05, (method, (x - ref).abs().median())


@pytest.mark.parametrize("name", ["VE", "VP", "subVP"])
def test_ode_encode_gives_the_exact_latent_of_gaussian_data(name):
    # For data N(mu, s^2 I) the flow is linear: x(t) - alpha(t) mu scales as sqrt(alpha(t)^2 s^2 + std(t)^2).
    sde, mu, s, eps = sdes()[name], torch.tensor([0.5, -1.0]), 0.7, 1e-3
    gauss = GaussianMixture(weights=[1.0], means=[mu.tolist()], stds=[s])
    x = gauss.sample(256, torch.Generator().manual_seed(8))
    (a0, s0), (aT, sT) = (sde.marginal_coef(torch.tensor([t], dtype=torch.float64)) for t in (eps, sde.T))
    exact = aT * mu + (x - a0 * mu) * torch.sqrt((aT**2 * s**2 + sT**2) / (a0**2 * s**2 + s0**2))
    # Measured: RK45 3e-5 relative at most (there and back 2e-4); the fast solvers 1.1e-2 at 40 steps
    # (second order: 4e-2 at 20).
    for method, steps, tol in (("RK45", None, 1e-4), ("heun", 40, 0.02), ("dpmpp_2m", 40, 0.02)):
        z, nfe = fastsde.ode_encode(gauss.score_fn(sde), sde, x, method=method, steps=steps, eps=eps)
        assert z.dtype == x.dtype and nfe > 0
        assert (z - exact).abs().max() / exact.abs().max() < tol, (method, (z - exact).abs().max())
        back, _ = fastsde.ode_sample(
            gauss.score_fn(sde), sde, x.shape, method=method, steps=steps, eps=eps, z=z, denoise=False
        )
        assert (back - x).abs().max() < max(tol, 1e-3), (method, (back - x).abs().max())


@pytest.mark.parametrize("name", ["VE", "VP"])
def test_ode_encode_inverts_the_sampler_and_matches_the_likelihood_latent(name):
    sde = sdes()[name]
    x = GMM.sample(64, torch.Generator().manual_seed(9))
    z, _ = fastsde.ode_encode(GMM.score_fn(sde), sde, x, eps=1e-5)
    back, _ = fastsde.ode_sample(GMM.score_fn(sde), sde, x.shape, z=z, eps=1e-5, denoise=False)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-3)
    _, z_likelihood, _ = fastsde.log_likelihood(GMM.score_fn(sde), sde, x, eps=1e-5)
    torch.testing.assert_close(z, z_likelihood, rtol=1e-3, atol=1e-3 * z.abs().max().item())


def test_slerp():
    g = torch.Generator().manual_seed(10)
    z0, z1 = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    z1 = z1 * (z0.flatten(1).norm(dim=1) / z1.flatten(1).norm(dim=1))[:, None, None, None]  # equal norms
    torch.testing.assert_close(fastsde.slerp(z0, z1, 0.0), z0)
    torch.testing.assert_close(fastsde.slerp(z0, z1, 1.0), z1)
    mid = fastsde.slerp(z0, z1, torch.tensor([0.5, 0.3, 0.9]))
    torch.testing.assert_close(mid.flatten(1).norm(dim=1), z0.flatten(1).norm(dim=1))  # on the sphere
    # Frames of one pair: codes [1, ...] and weights [F] give [F, ...]; parallel codes go straight.
    frames = fastsde.slerp(z0[:1], 2 * z0[:1], torch.linspace(0, 1, 5))
    assert frames.shape == (5, 2, 4, 4) and torch.isfinite(frames).all()
    torch.testing.assert_close(frames[2], 1.5 * z0[0])


def test_interpolate_paths_end_at_the_inputs():
    sde = VPSDE()
    x = GMM.sample(6, torch.Generator().manual_seed(11))
    path, nfe = fastsde.interpolate(GMM.score_fn(sde), sde, x[:3], x[3:], 4)
    assert path.shape == (3, 4, 2) and nfe > 20
    torch.testing.assert_close(path[:, 0], x[:3], rtol=0, atol=1e-3)
    torch.testing.assert_close(path[:, -1], x[3:], rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="frames must be an integer of at least 2"):
        fastsde.interpolate(GMM.score_fn(sde), sde, x[:3], x[3:], 1)
    with pytest.raises(ValueError, match=r"one shape, got \(3, 2\) and \(2, 2\)"):
        fastsde.interpolate(GMM.score_fn(sde), sde, x[:3], x[4:], 3)


@pytest.mark.parametrize("t0,t1", [(1e-3, 1.0), (1.0, 1e-3)])
def test_rk45_evaluates_f_only_within_the_interval(t0, t1):
    # As scipy: the initial step choice's trial step is cut to the interval (a VE SDE's noise level
    # overflows past T; a slow f, here 1e-3 y, would have it try t = 10 and stall at a zero step).
    seen = []

    def f(t, y):
        assert t.shape == y.shape and (t == t[0]).all()  # one time a row, all alike for the whole batch
        seen.append(float(t[0]))
        return -1e-3 * y

    y, nfe = fastsde.sampling.solve_rk45(f, torch.ones(4, dtype=torch.float64), t0, t1)
    assert min(t0, t1) <= min(seen) and max(seen) <= max(t0, t1) and nfe == len(seen)
    torch.testing.assert_close(y, torch.full((4,), math.exp(-1e-3 * (t1 - t0)), dtype=torch.float64))


@pytest.mark.parametrize("name", ["VE", "VP", "subVP"])
def test_rk45_per_sample_is_batch_independent(name):
    # Each sample its own system: the same result and evaluations alone as in any batch, and each
    # within the tolerance of the exact flow, which the whole batch's one step size does not promise.
    sde = sdes()[name]
    z = sde.prior_sampling((16, 2), torch.Generator().manual_seed(5))
    score_fn = GMM.score_fn(sde)
    whole, _ = fastsde.ode_sample(score_fn, sde, z.shape, z=z, per_sample=True)
    alone = [fastsde.ode_sample(score_fn, sde, (1, 2), z=z[i : i + 1], per_sample=True) for i in range(16)]
    torch.testing.assert_close(whole, torch.cat([x for x, _ in alone]), rtol=0, atol=0)
    three, nfe3 = fastsde.ode_sample(score_fn, sde, (3, 2), z=z[5:8], per_sample=True)
    torch.testing.assert_close(three, whole[5:8], rtol=0, atol=0)
    assert torch.equal(nfe3, torch.cat([n for _, n in alone[5:8]]))  # one count a sample, alike alone
    assert len({int(n) for _, n in alone}) > 1  # the samples did take steps of their own
    batch, _ = fastsde.ode_sample(score_fn, sde, z.shape, z=z)  # the official whole-batch steps
    torch.testing.assert_close(whole, batch, rtol=0, atol=1e-3)
    exact, _ = fastsde.ode_sample(score_fn, sde, z.shape, z=z, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(whole, exact, rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", ["VE", "VP", "subVP"])
def test_scipy_method_matches_rk45(name):
    # The same steps as scipy's RK45 (the official sampler's solver), to float32 rounding: measured,
    # the same evaluation counts (81, 111, 87) and 1e-6 apart (before the last step landed on t1
    # exactly and a step after a rejection stopped growing: 6 evaluations more, 2e-5 apart).
    sde = sdes()[name]
    z = sde.prior_sampling((64, 2), torch.Generator().manual_seed(4))
    x1, n1 = fastsde.ode_sample(GMM.score_fn(sde), sde, z.shape, z=z, method="RK45")
    x2, n2 = fastsde.ode_sample(GMM.score_fn(sde), sde, z.shape, z=z, method="scipy")
    torch.testing.assert_close(x1, x2, rtol=0, atol=1e-5)
    assert n1 == n2


def test_same_seed_same_samples():
    sde = VESDE(N=100)

    def run(seed):
        return fastsde.pc_sample(GMM.score_fn(sde), sde, (8, 2), generator=torch.Generator().manual_seed(seed))[0]  # noqa: E731

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_per_sample_seeds_independent_of_batch():
    sde = VPSDE(N=100)

    def run(seeds):
        return fastsde.pc_sample(
            GMM.score_fn(sde),
            sde,
            (len(seeds), 2),
            corrector="langevin",  # noqa: E731
            generator=seeds,
            per_sample=True,
        )[0]

    torch.testing.assert_close(run([11, 12, 13, 14])[2:], run([13, 14]))


def test_errors():
    sde = VESDE(N=10)
    good = GMM.score_fn(sde)
    with pytest.raises(ValueError, match="known: ancestral_sampling, euler_maruyama, none, reverse_diffusion"):
        fastsde.pc_sample(good, sde, (4, 2), predictor="heun")
    with pytest.raises(ValueError, match="unknown corrector 'x'; known: ald, langevin, none"):
        fastsde.pc_sample(good, sde, (4, 2), corrector="x")
    with pytest.raises(ValueError, match=r"eps must lie in \(0, T\)"):
        fastsde.pc_sample(good, sde, (4, 2), eps=0)
    with pytest.raises(ValueError, match=r"score_fn returned \(4, 3\) for x of shape \(4, 2\)"):
        fastsde.pc_sample(lambda x, t: torch.zeros(4, 3), sde, (4, 2))
    with pytest.raises(ValueError, match="needs steps"):
        fastsde.ode_sample(good, sde, (4, 2), method="heun")
    with pytest.raises(ValueError, match="unknown method 'euler'"):
        fastsde.ode_sample(good, sde, (4, 2), method="euler")
    with pytest.raises(ValueError, match="unknown method 'euler'"):
        fastsde.ode_encode(good, sde, torch.zeros(4, 2), method="euler")
    with pytest.raises(ValueError, match="'dpmpp_2m' needs steps, a positive integer, got 0"):
        fastsde.ode_encode(good, sde, torch.zeros(4, 2), method="dpmpp_2m", steps=0)
    with pytest.raises(ValueError, match=r"eps must lie in \(0, T\)"):
        fastsde.ode_encode(good, sde, torch.zeros(4, 2), eps=1.0)
    with pytest.raises(ValueError, match="rtol and atol must be positive, got -1 and 1e-05"):
        fastsde.ode_sample(good, sde, (4, 2), rtol=-1)
    with pytest.raises(ValueError, match="rtol and atol must be positive, got 1e-05 and 0"):
        fastsde.log_likelihood(good, sde, torch.zeros(4, 2), atol=0)
    with pytest.raises(ValueError, match=r"shape must be a batch size followed by .* got \(0, 2\)"):
        fastsde.pc_sample(good, sde, (0, 2))
    for make, said in (
        (lambda: VESDE(sigma_min=1, sigma_max=1), "VESDE: .* 0 < sigma_min < sigma_max, got 1 and 1"),
        (lambda: VPSDE(beta_min=-0.1), "VPSDE: .* 0 <= beta_min <= beta_max and beta_max > 0"),
        (lambda: subVPSDE(N=0), "subVPSDE: N must be a positive integer, got 0"),
        (lambda: VPSDE(N=10), r"N must exceed beta_max: .* \(use N > 20 steps\)"),
    ):
        with pytest.raises(ValueError, match=said):
            make()

    def bad(x, t):  # NaN from t < 0.5 on
        return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), good(x, t))

    with pytest.raises(FloatingPointError, match=r"pc_sample: NaN or Inf in the state at step 5 \(t = 0.44"):
        fastsde.pc_sample(bad, sde, (4, 2), corrector="none")
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        fastsde.ode_sample(bad, sde, (4, 2))

    # Every sampler checks alike: the fixed-step solvers name the first bad step, or the result when
    # only a score outside their step loop goes bad (here the noise removal's at eps).
    def bad_at_eps(x, t):
        return torch.where(t[:, None] < 0.01, torch.full_like(x, float("nan")), good(x, t))

    for method in ("heun", "dpmpp_2m", "dpmpp_3m", "unipc"):
        with pytest.raises(
            FloatingPointError, match=rf"{method}: NaN or Inf in the state at step [1-9] \(t = 0\.[4-6]"
        ):
            fastsde.ode_sample(bad, sde, (4, 2), method=method, steps=6)
        with pytest.raises(FloatingPointError, match=rf"ode_sample \({method}\): NaN or Inf in the result"):
            fastsde.ode_sample(bad_at_eps, sde, (4, 2), method=method, steps=6)
        fastsde.ode_sample(bad_at_eps, sde, (4, 2), method=method, steps=6, denoise=False)  # eps never evaluated
    # An infinite score: the same error from RK45 (it was a ZeroDivisionError in its first step's choice).
    with pytest.raises(FloatingPointError, match="solve_rk45: NaN or Inf in the state or its derivative"):
        fastsde.ode_sample(lambda x, t: torch.full_like(x, float("inf")), sde, (4, 2))


def test_official_quirks():
    # ancestral sampling is defined for VE and VP only, as upstream; Langevin works with sub-VP.
    s = subVPSDE(N=100)
    with pytest.raises(NotImplementedError, match="not subVPSDE"):
        fastsde.pc_sample(GMM.score_fn(s), s, (4, 2), predictor="ancestral_sampling")
    x, _ = fastsde.pc_sample(GMM.score_fn(s), s, (4, 2), corrector="langevin")
    assert torch.isfinite(x).all()


def test_custom_predictor_registry():
    @fastsde.register_predictor("halfway")
    def halfway(sde, score_fn, x, t, probability_flow=False, generator=None):
        return x / 2, x / 2

    try:
        x, _ = fastsde.pc_sample(
            GMM.score_fn(VESDE(N=3)),
            VESDE(N=3),
            (4, 2),
            predictor="halfway",
            corrector="none",
            generator=torch.Generator().manual_seed(0),
        )
        z = VESDE(N=3).prior_sampling((4, 2), torch.Generator().manual_seed(0))
        torch.testing.assert_close(x, z / 8)
    finally:
        del fastsde.PREDICTORS["halfway"]


@pytest.mark.parametrize("name", ["VE", "VP", "subVP"])
def test_log_likelihood_is_exact(name):
    sde = sdes()[name]
    x = GMM.sample(64, torch.Generator().manual_seed(5))
    logp, z, nfe = fastsde.log_likelihood(GMM.score_fn(sde), sde, x, generator=torch.Generator().manual_seed(6))
    exact = GMM.log_prob(x).float()
    assert abs((logp - exact).mean().item()) < 0.05, (logp - exact).mean()
    assert z.shape == x.shape and nfe > 10


def test_bits_per_dim_offset():
    sde = VPSDE()
    x = GMM.sample(16, torch.Generator().manual_seed(7))
    g = lambda: torch.Generator().manual_seed(8)  # noqa: E731
    logp, _, _ = fastsde.log_likelihood(GMM.score_fn(sde), sde, x, generator=g())
    bpd, _, _ = fastsde.bits_per_dim(GMM.score_fn(sde), sde, x, generator=g())
    torch.testing.assert_close(bpd, -logp / math.log(2) / 2 + 7)
    bpd8, _, _ = fastsde.bits_per_dim(GMM.score_fn(sde), sde, x, centered=False, generator=g())
    torch.testing.assert_close(bpd8, bpd + 1)


@pytest.mark.parametrize("seed", [0, -3, 2**62])
def test_dataset_bits_per_dim_computes_any_batch_alone(seed, monkeypatch):
    # Each batch's noise comes from seeds of its own: what is skipped or shared out changes nothing else.
    from fastsde import likelihood
    from fastsde.likelihood import dataset_bits_per_dim

    images = torch.randint(0, 256, (5, 1, 1, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(9))
    sde, score_fn = VPSDE(), lambda x, t: GMM.score_fn(VPSDE())(x.reshape(-1, 2), t).reshape(x.shape)

    def run(**kw):
        return dataset_bits_per_dim(
            score_fn,
            sde,
            images,
            True,
            rtol=1e-4,
            atol=1e-4,  # noqa: E731
            **{"batch_size": 2, "repeats": 2, "seed": seed, **kw},
        )

    probe_seeds, bits_per_dim = [], likelihood.bits_per_dim

    def recording(*args, generator, **kwargs):
        probe_seeds.append(generator.initial_seed())
        return bits_per_dim(*args, generator=generator, **kwargs)

    monkeypatch.setattr(likelihood, "bits_per_dim", recording)
    mean, bpd, items, nfe = run()
    assert items.tolist() == list(range(10)) and bpd.shape == (10,) and torch.isfinite(bpd).all()
    assert len(probe_seeds) == len(set(probe_seeds)) == 6  # fresh Hutchinson probes for each batch of each pass
    assert mean == pytest.approx(float(bpd.mean())) and nfe > 0
    seen = []
    _, rest, rest_items, _ = run(skip={0, 1, 7}, on_batch=lambda items, b: seen.append(list(items)))
    # Batches of 2 within each pass of 5 images: 7 alone does not make its batch [7, 8] skipped.
    assert rest_items.tolist() == [2, 3, 4, 5, 6, 7, 8, 9] and seen == [[2, 3], [4], [5, 6], [7, 8], [9]]
    assert torch.equal(rest, bpd[rest_items])
    shares = [run(rank=r, world=3) for r in range(3)]
    assert sorted(i for s in shares for i in s[2].tolist()) == list(range(10))
    for _, b, i, _ in shares:
        assert torch.equal(b, bpd[i])
    assert run(seed=seed + 1)[1].ne(bpd).any()
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        run(batch_size=0)
    with pytest.raises(ValueError, match="repeats must be a positive integer, got 0"):
        run(repeats=0)


@pytest.mark.parametrize("name,predictor,corrector,snr", [PC_CASES[0], PC_CASES[4], PC_CASES[7]])
def test_pc_sampler_on_the_triton_kernels(name, predictor, corrector, snr, monkeypatch):
    # FASTSDE_BACKEND=triton: every update step through the Triton kernels (interpreted without a GPU).
    device = "cuda" if torch.cuda.is_available() else "cpu"
    require("triton", device)
    monkeypatch.setenv("FASTSDE_BACKEND", "triton")
    sde = sdes(200)[name]
    x, _ = fastsde.pc_sample(
        GMM.score_fn(sde),
        sde,
        (N_SAMPLES, 2),
        predictor=predictor,
        corrector=corrector,
        snr=snr,
        eps=1e-3,
        generator=torch.Generator(device).manual_seed(0),
        device=device,
    )
    assert_is_mixture(x.cpu())
