"""Fast solvers: samples in tens of network evaluations instead of the PC sampler's thousands.

Every solver is a plain function with one signature:

    solver(sde, score_fn, x, times, generator=None, cuda_graph=False, **options) -> (x, nfe)

x [B, ...] is the state at times[0]; times [n + 1] is a schedule from T down to eps (SCHEDULES), or up
for a deterministic solver that encodes. nfe counts the network evaluations a sample: an int, or a
[B] tensor for the adaptive solvers, whose samples each take their own steps. Those use only the
schedule's ends. Fixed-step solvers run through engine.run_steps (CUDA graphs, the NaN watch); their
coefficients depend on the schedule alone and are computed once, in float64, before the first step.
Notation: alpha, std the SDE's marginals, sigma = std / alpha (EDM's noise level), lambda = -log sigma.
"""

import math

import numpy as np
import torch

from . import _random
from .engine import check_finite, run_steps
from .sampling import _at, _check_eps, _device_of, _generators, denoise_step
from .sampling import score as _score
from .sde import batch_view


def _denoised(sde, score_fn, x, t):
    """Tweedie's estimate of x(0) from x(t): (x + std^2 score) / alpha. t: [B]."""
    alpha, std = sde.marginal_coef(t)
    return (x + batch_view(std**2, x) * _score(score_fn, x, t)) / batch_view(alpha, x)


def _table(values, x):
    """Per-step coefficients (float64, host) as a float32 tensor on x's device."""
    return torch.as_tensor(np.asarray(values), dtype=x.dtype, device=x.device)


# Step schedules: times T = t_0 > ... > t_n = eps.


def _edm_times(sde, steps, eps, rho=7.0):
    """Noise levels sigma(t) on EDM's rho schedule (Karras et al. 2022, Eq. 5): dense near the data."""
    s_max, s_min = sde.noise_level(torch.tensor([sde.T, eps], dtype=torch.float64)).tolist()
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    return sde.noise_level_time((s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho)


def _logsnr_times(sde, steps, eps):
    """Uniform in lambda = log(alpha / std) (DPM-Solver's choice for CIFAR-10)."""
    lam = -torch.log(sde.noise_level(torch.tensor([sde.T, eps], dtype=torch.float64)))
    lam = torch.linspace(float(lam[0]), float(lam[1]), steps + 1, dtype=torch.float64)
    return sde.noise_level_time(torch.exp(-lam))


def _uniform_times(sde, steps, eps):
    """Uniform in time (DPM-Solver's choice at high resolution)."""
    return torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64)


def _quadratic_times(sde, steps, eps):
    """Uniform in sqrt(t) (DPM-Solver's 'time_quadratic')."""
    return torch.linspace(sde.T**0.5, eps**0.5, steps + 1, dtype=torch.float64) ** 2


SCHEDULES = {"edm": _edm_times, "logsnr": _logsnr_times, "time": _uniform_times, "quadratic": _quadratic_times}


def schedule_times(sde, name, steps, eps, device=None):
    """Times [steps + 1] from T to eps, float32 on `device`, spaced by schedule `name` (SCHEDULES)."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    t = SCHEDULES[name](sde, steps, eps)
    t[0], t[-1] = sde.T, eps
    return t.to(device=device, dtype=torch.float32)


# EDM's samplers: Heun on dx/dsigma in x / alpha, with optional churn.


def edm(sde, score_fn, x, times, generator=None, cuda_graph=False, S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003):
    """EDM's stochastic sampler (Karras et al. 2022, Alg. 2): each step first adds noise to raise sigma
    by gamma = min(S_churn / n, sqrt(2) - 1) where S_min <= sigma <= S_max, then takes a Heun step of
    the probability-flow ODE (the last step is Euler). Defaults: EDM's ImageNet settings."""
    B, n = x.shape[0], len(times) - 1
    alphas, stds = sde.marginal_coef(times)
    sigmas = sde.noise_level(times)
    gamma = torch.where((S_min <= sigmas) & (sigmas <= S_max), min(S_churn / n, math.sqrt(2) - 1), 0.0)
    churned = gamma > 0
    sigma_hats = torch.where(churned, sigmas * (1 + gamma), sigmas)
    t_hats = torch.where(churned, sde.noise_level_time(sigma_hats), times)
    alpha_hats, std_hats = (torch.where(churned, a, b) for a, b in zip(sde.marginal_coef(t_hats), (alphas, stds)))
    noise_stds = torch.sqrt(torch.clamp(sigma_hats**2 - sigmas**2, min=0)) * S_noise
    stochastic = S_churn > 0

    def slope(x_hat, t, alpha, std):  # d(x/alpha)/dsigma = -sigma grad_{x/alpha} log p = -std(t) score(x, t)
        return -std * _score(score_fn, alpha * x_hat, t.expand(B))

    def start(i, x_hat):
        """x_hat churned to sigma_hat_i, and the slope there."""
        if stochastic:
            x_hat = x_hat + _at(noise_stds, i) * _random.randn(x.shape, generator, x.device, x.dtype)
        return x_hat, slope(x_hat, _at(t_hats, i), _at(alpha_hats, i), _at(std_hats, i))

    def step(i, x_hat):
        x_hat, d = start(i, x_hat)
        h = _at(sigmas, i + 1) - _at(sigma_hats, i)
        x_next = x_hat + h * d
        return (x_hat + h * (d + slope(x_next, _at(times, i + 1), _at(alphas, i + 1), _at(stds, i + 1))) / 2,)

    (x_hat,) = run_steps(
        step, (x / alphas[0],), range(n - 1), cuda_graph, _generators(generator), "edm" if stochastic else "heun", times
    )
    last = torch.full((), n - 1, dtype=torch.long, device=x.device)
    x_hat, d = start(last, x_hat)
    x_hat = x_hat + (sigmas[n] - _at(sigma_hats, last)) * d
    return alphas[n] * x_hat, 2 * n - 1


def heun(sde, score_fn, x, times, generator=None, cuda_graph=False):
    """Heun's 2nd-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1): edm without churn."""
    return edm(sde, score_fn, x, times, generator, cuda_graph, S_churn=0.0)


# Multistep solvers in the data-prediction form: x_{i+1} = a_i x_i + sum_j c_ij D_{i-j} (+ noise),
# D_k the denoised estimate at t_k.


def _orders(n, order, lower_order_final):
    """Each step's order: as high as the history allows, and with lower_order_final (default: for
    fewer than 15 steps, as DPM-Solver) falling to 1 on the last step."""
    final = n < 15 if lower_order_final is None else lower_order_final
    return [min(order, i + 1, n - i if final else order) for i in range(n)]


def _lambdas(sde, times):
    alpha, std = sde.marginal_coef(times.double().cpu())
    return alpha.numpy(), std.numpy(), torch.log(alpha / std).numpy()


def _dpmpp_coefficients(sde, times, order, eta, lower_order_final, s_noise):
    """a [n], c [n, 3] (on D_i, D_{i-1}, D_{i-2}) and the noise std [n] of DPM-Solver++(2M / 3M),
    with eta > 0 its SDE form (Lu et al. 2022, 'DPM-Solver++', Sec. 5 and App. B)."""
    alpha, std, lam = _lambdas(sde, times)
    n = len(times) - 1
    a, c, noise = np.zeros(n), np.zeros((n, 3)), np.zeros(n)
    for i, k in enumerate(_orders(n, order, lower_order_final)):
        h = lam[i + 1] - lam[i]
        he = h * (1 + eta)
        phi1 = math.expm1(-he)
        a[i] = std[i + 1] / std[i] * math.exp(-eta * h)
        c[i, 0] = -alpha[i + 1] * phi1
        noise[i] = std[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise
        if k == 2:  # the midpoint form of Lu et al.'s Alg. 2: -alpha phi1 (D_i - D_{i-1}) / (2 r0)
            r0 = (lam[i] - lam[i - 1]) / h
            c[i, :2] += -alpha[i + 1] * phi1 / (2 * r0) * np.array([1.0, -1.0])
        elif k == 3:  # a second-order Taylor expansion of D in lambda, from three points
            r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
            phi2 = phi1 / he + 1
            phi3 = phi2 / he - 0.5
            d1_0 = np.array([1 / r0, -1 / r0, 0.0])
            diff = np.array([1 / r0, -(1 / r0 + 1 / r1), 1 / r1])  # d1_0 - d1_1
            c[i] += alpha[i + 1] * (phi2 * (d1_0 + r0 / (r0 + r1) * diff) - 2 * phi3 * diff / (r0 + r1))
    return a, c, noise


def dpmpp(
    sde, score_fn, x, times, generator=None, cuda_graph=False, order=2, eta=0.0, lower_order_final=None, s_noise=1.0
):
    """DPM-Solver++ multistep of `order` 1-3 (Lu et al. 2022, Alg. 2 and its third-order form); eta > 0
    takes its SDE form, adding noise each step (eta = 1: SDE-DPM-Solver++). One evaluation a step."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3 for DPM-Solver++, got {order!r}")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    a, c, noise = (_table(v, x) for v in _dpmpp_coefficients(sde, times, order, eta, lower_order_final, s_noise))
    B = x.shape[0]

    def step(i, x, d1, d2):
        d0 = _denoised(sde, score_fn, x, _at(times, i).expand(B))
        ci = _at(c, i)[0]
        x = _at(a, i) * x + ci[0] * d0 + ci[1] * d1 + ci[2] * d2
        if eta > 0:
            x = x + _at(noise, i) * _random.randn(x.shape, generator, x.device, x.dtype)
        return x, d0, d1

    zero = torch.zeros_like(x)
    x, _, _ = run_steps(
        step,
        (x, zero, zero),
        range(len(times) - 1),
        cuda_graph,
        _generators(generator),
        f"dpmpp_{order}m{'_sde' if eta > 0 else ''}",
        times,
    )
    return x, len(times) - 1


def _unipc_coefficients(sde, times, order, lower_order_final):
    """UniPC-bh2 (Zhao et al. 2023): a [n]; the predictor's coefficients p [n, 3] on (D_i, D_{i-1},
    D_{i-2}); the corrector's q [n, 4] on those and D_{i+1}, the evaluation at the predicted point."""
    alpha, std, lam = _lambdas(sde, times)
    n = len(times) - 1
    a, p, q = np.zeros(n), np.zeros((n, 3)), np.zeros((n, 4))
    for i, k in enumerate(_orders(n, order, lower_order_final)):
        h = lam[i + 1] - lam[i]
        hh = -h  # data prediction
        phi1 = math.expm1(hh)
        B_h = math.expm1(hh)  # bh2
        a[i] = std[i + 1] / std[i]
        # The order conditions: R rho = b, R's rows the powers of r_k = (lambda_{i-k} - lambda_i) / h.
        rks = np.array([(lam[i - j] - lam[i]) / h for j in range(1, k)] + [1.0])
        R = np.stack([rks**j for j in range(k)])
        b, h_phi_k, factorial = [], phi1 / hh - 1, 1
        for j in range(1, k + 1):
            b.append(h_phi_k * factorial / B_h)
            factorial *= j + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        b = np.array(b)
        rho_p = np.array([0.5]) if k == 2 else np.linalg.solve(R[:-1, :-1], b[:-1]) if k > 2 else np.zeros(0)
        rho_c = np.array([0.5]) if k == 1 else np.linalg.solve(R, b)
        # D1s_j = (D_{i-j} - D_i) / r_j, j = 1..k-1.
        base = -alpha[i + 1] * phi1
        p[i, 0] = base + alpha[i + 1] * B_h * sum(rho_p[j - 1] / rks[j - 1] for j in range(1, k))
        q[i, 0] = base + alpha[i + 1] * B_h * (sum(rho_c[j - 1] / rks[j - 1] for j in range(1, k)) + rho_c[-1])
        for j in range(1, k):
            p[i, j] = -alpha[i + 1] * B_h * rho_p[j - 1] / rks[j - 1]
            q[i, j] = -alpha[i + 1] * B_h * rho_c[j - 1] / rks[j - 1]
        q[i, 3] = -alpha[i + 1] * B_h * rho_c[-1]
    return a, p, q


def unipc(sde, score_fn, x, times, generator=None, cuda_graph=False, order=3, lower_order_final=None):
    """UniPC with the bh2 coefficients (Zhao et al. 2023): a multistep predictor of `order` (1-3),
    corrected after each step with the evaluation at the predicted point, which the next step reuses;
    the last step is not corrected. One evaluation a step."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3 for UniPC, got {order!r}")
    a, p, q = (_table(v, x) for v in _unipc_coefficients(sde, times, order, lower_order_final))
    B, n = x.shape[0], len(times) - 1

    def step(i, x, d0, d1, d2):
        ai, pi, qi = _at(a, i), _at(p, i)[0], _at(q, i)[0]
        predicted = ai * x + pi[0] * d0 + pi[1] * d1 + pi[2] * d2
        d_new = _denoised(sde, score_fn, predicted, _at(times, i + 1).expand(B))
        return ai * x + qi[0] * d0 + qi[1] * d1 + qi[2] * d2 + qi[3] * d_new, d_new, d0, d1

    d0 = _denoised(sde, score_fn, x, times[:1].expand(B))
    zero = torch.zeros_like(x)
    x, d0, d1, d2 = run_steps(step, (x, d0, zero, zero), range(n - 1), cuda_graph, name="unipc", times=times)
    last = n - 1
    x = a[last] * x + p[last, 0] * d0 + p[last, 1] * d1 + p[last, 2] * d2
    return x, n


# Adaptive solvers: each sample its own time and step size, accepted or rejected on its own.


def _rms_rows(v):
    return v.flatten(1).double().pow(2).mean(1).sqrt()


def _adaptive_loop(name, advance, remaining, h, max_attempts):
    """Runs advance(rows, h) -> (accept [b] bool, new h [b]) over the rows still `remaining` (> 0)
    until none is; h: each row's step size (float64 [B]). Raises if any row needs more attempts."""
    for _ in range(max_attempts):
        rows = torch.nonzero(remaining() > 0).flatten()
        if len(rows) == 0:
            return
        accept, h_new = advance(rows, h[rows])
        if not torch.isfinite(h_new).all():
            bad = rows[~torch.isfinite(h_new)].tolist()
            raise FloatingPointError(f"{name}: NaN or Inf in the state (samples {bad[:5]})")
        h[rows] = h_new
    raise RuntimeError(f"{name}: {max_attempts} attempts without reaching the end; loosen its tolerances")


def _tolerance(new, prev, abstol, reltol):
    """Gotta Go Fast's mixed tolerance: max(abstol, reltol max(|new|, |prev|)), elementwise."""
    return torch.clamp(reltol * torch.maximum(new.abs(), prev.abs()), min=abstol)


def _check_tolerances(**tolerances):
    for name, v in tolerances.items():
        if not (isinstance(v, (int, float)) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")


class _BrownianStack:
    """Each sample's known future Brownian path: a stack of (dt, dW) intervals from its current time
    on, topmost first. A rejected step's increment goes back on the stack, and a shorter retry draws
    its part from the Brownian bridge, so rejections do not bias the noise ('rejection sampling with
    memory', Rackauckas & Nie 2017)."""

    def __init__(self, x):
        self.depth = torch.zeros(x.shape[0], dtype=torch.long)  # [B] entries held
        self.dt = torch.zeros(x.shape[0], 1, dtype=torch.float64)  # [B, capacity], host
        self.dW = x.new_zeros((1, *x.shape))  # [capacity, B, ...]

    def take(self, rows, h, z):
        """Step sizes (<= h, float64 [b]) and increments [b, ...] of the rows' next steps, drawn
        from z (standard normal, [b, ...]): a fresh increment past the known path, else the top
        interval (the step shortened to it) or a bridge sample of its first part."""
        dev = z.device
        depth = self.depth[rows]
        held = depth > 0
        top = (depth - 1).clamp(min=0)
        dt_top = torch.where(held, self.dt[rows, top], h)
        h = torch.where(held, torch.minimum(h, dt_top), h)
        whole = held & (h >= dt_top * (1 - 1e-12))
        dW_top = self.dW[top.to(dev), rows.to(dev)]
        r = (h / dt_top).to(dev, z.dtype)  # bridge: N(r dW_top, r (1 - r) dt_top)
        bridge = (
            batch_view(r, z) * dW_top
            + batch_view((r * (1 - r)).clamp(min=0).sqrt() * dt_top.to(dev, z.dtype).sqrt(), z) * z
        )
        fresh = batch_view(h.to(dev, z.dtype).sqrt(), z) * z
        dW = torch.where(batch_view(held.to(dev), z), torch.where(batch_view(whole.to(dev), z), dW_top, bridge), fresh)
        part = held & ~whole
        if part.any():  # the rest of the split interval stays on top
            keep, at = rows[part], top[part]
            self.dt[keep, at] -= h[part]
            self.dW[at.to(dev), keep.to(dev)] -= dW[part.to(dev)]
        self.depth[rows[whole]] -= 1
        return h, dW

    def put(self, rows, h, dW):
        """Pushes the rejected steps' (h, dW) back on the rows' stacks."""
        if len(rows) == 0:
            return
        at = self.depth[rows]
        if int(at.max()) == self.dt.shape[1]:  # one level more, for all samples
            self.dt = torch.cat([self.dt, torch.zeros_like(self.dt[:, :1])], 1)
            self.dW = torch.cat([self.dW, torch.zeros_like(self.dW[:1])])
        self.dt[rows, at] = h
        self.dW[at.to(dW.device), rows.to(dW.device)] = dW
        self.depth[rows] += 1


def gotta_go_fast(
    sde,
    score_fn,
    x,
    times,
    generator=None,
    cuda_graph=False,
    abstol=0.0078,
    reltol=0.05,
    safety=0.9,
    exponent=0.9,
    h_init=0.01,
    max_attempts=100_000,
):
    """The adaptive SDE solver of Jolicoeur-Martineau et al. 2021 ('Gotta Go Fast', Alg. 1): Euler-Maruyama
    and improved Euler with the same noise, the error between them against a mixed tolerance, the
    improved step kept; per sample, with rejection sampling with memory. abstol suits data in [-1, 1]."""
    _check_tolerances(abstol=abstol, reltol=reltol, safety=safety, exponent=exponent, h_init=h_init)
    B, dev = x.shape[0], x.device
    t = torch.full((B,), float(times[0]), dtype=torch.float64)
    eps = float(times[-1])
    h = torch.full((B,), min(h_init, float(times[0]) - eps), dtype=torch.float64)
    x, prev = x.clone(), x.clone()  # prev: the Euler-Maruyama proposal of each sample's last accepted step
    nfe = torch.zeros(B, dtype=torch.long)
    path = _BrownianStack(x)

    def reverse_drift(x, t):
        drift, g = sde.sde(x, t)
        return drift - batch_view(g**2, x) * _score(score_fn, x, t), g

    def advance(rows, h):
        xs, ts = x[rows.to(dev)], t[rows].to(dev, x.dtype)
        h, dW = path.take(rows, h, _random.randn(xs.shape, generator, dev, x.dtype, rows=rows))
        hs = h.to(dev, x.dtype)
        f1, g1 = reverse_drift(xs, ts)
        em = xs - batch_view(hs, xs) * f1 + batch_view(g1, xs) * dW
        f2, g2 = reverse_drift(em, ts - hs)
        heun = (em + xs - batch_view(hs, xs) * f2 + batch_view(g2, xs) * dW) / 2
        error = _rms_rows((em - heun) / _tolerance(em, prev[rows.to(dev)], abstol, reltol)).cpu()
        nfe[rows] += 2
        accept = error <= 1
        keep = accept.to(dev)
        x[rows.to(dev)] = torch.where(batch_view(keep, xs), heun, xs)
        prev[rows.to(dev)] = torch.where(batch_view(keep, xs), em, prev[rows.to(dev)])
        path.put(rows[~accept], h[~accept], dW[~keep])
        t[rows] = torch.where(accept, t[rows] - h, t[rows])
        grown = safety * h * error.clamp(min=1e-10) ** -exponent
        return accept, torch.minimum(grown, t[rows] - eps)

    _adaptive_loop("gotta_go_fast", advance, lambda: t - eps, h, max_attempts)
    return x, nfe


def dpm_adaptive(
    sde,
    score_fn,
    x,
    times,
    generator=None,
    cuda_graph=False,
    order=3,
    atol=0.0078,
    rtol=0.05,
    theta=0.9,
    h_init=0.05,
    max_attempts=100_000,
):
    """Adaptive DPM-Solver-12 (order 2) or -23 (order 3) (Lu et al. 2022, 'DPM-Solver', Sec. 3.3 and
    App. C) in DPM-Solver++'s data-prediction form: singlestep solvers of two orders sharing their
    evaluations, the step in lambda sized by their difference; per sample. A step grows at most
    10-fold, as in scipy's RK45: at high noise both orders agree exactly, and the paper's rule then
    jumps to the end in one step. The default tolerances are the paper's, for VP; VE needs tighter
    ones (measured on a 2-D mixture: a spread 2.3x too wide at rtol 0.05, within 3% at 0.005)."""
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3 for the adaptive DPM-Solver, got {order!r}")
    _check_tolerances(atol=atol, rtol=rtol, theta=theta, h_init=h_init)
    B, dev = x.shape[0], x.device
    ends = torch.tensor([float(times[0]), float(times[-1])], dtype=torch.float64)
    lam_start, lam_end = (-torch.log(sde.noise_level(ends))).tolist()
    lam = torch.full((B,), lam_start, dtype=torch.float64)
    h = torch.full((B,), min(h_init, lam_end - lam_start), dtype=torch.float64)
    x, prev = x.clone(), x.clone()
    nfe = torch.zeros(B, dtype=torch.long)

    def coef(lam):  # (t, alpha, std) at lambda [b], t and the rest on the device
        t = sde.noise_level_time(torch.exp(-lam))
        alpha, std = sde.marginal_coef(t)
        return (v.to(dev, x.dtype) for v in (t, alpha, std))

    def phi1(z):
        return torch.expm1(-z)

    def advance(rows, h):
        xs, r = x[rows.to(dev)], rows.to(dev)
        ls = lam[rows]
        (t_s, _, s_s), (_, a_t, s_t) = coef(ls), coef(ls + h)
        hd = h.to(dev, x.dtype)
        v = lambda c: batch_view(c, xs)  # noqa: E731
        d_s = _denoised(sde, score_fn, xs, t_s)
        r1 = 0.5 if order == 2 else 1 / 3
        t_1, a_1, s_1 = coef(ls + r1 * h)
        u1 = v(s_1 / s_s) * xs - v(a_1 * phi1(r1 * hd)) * d_s
        d_1 = _denoised(sde, score_fn, u1, t_1)
        first = v(s_t / s_s) * xs - v(a_t * phi1(hd)) * d_s
        second = first - v(a_t * phi1(hd) / (2 * r1)) * (d_1 - d_s)
        if order == 2:
            low, high = first, second
        else:
            r2 = 2 / 3
            t_2, a_2, s_2 = coef(ls + r2 * h)
            phi2_r2 = phi1(r2 * hd) / (r2 * hd) + 1
            u2 = v(s_2 / s_s) * xs - v(a_2 * phi1(r2 * hd)) * d_s + v(r2 / r1 * a_2 * phi2_r2) * (d_1 - d_s)
            d_2 = _denoised(sde, score_fn, u2, t_2)
            low, high = second, first + v(a_t * (phi1(hd) / hd + 1) / r2) * (d_2 - d_s)
        error = _rms_rows((high - low) / _tolerance(low, prev[r], atol, rtol)).cpu()
        nfe[rows] += order
        accept = error <= 1
        keep = v(accept.to(dev))
        x[r] = torch.where(keep, high, xs)
        prev[r] = torch.where(keep, low, prev[r])
        lam[rows] = torch.where(accept, ls + h, ls)
        grown = theta * h * error.clamp(min=1e-10) ** (-1 / order)
        return accept, torch.minimum(torch.minimum(grown, 10 * h), lam_end - lam[rows])

    _adaptive_loop("dpm_adaptive", advance, lambda: lam_end - lam, h, max_attempts)
    return x, nfe


SOLVERS = {
    "heun": heun,
    "edm": edm,
    "dpmpp_2m": dpmpp,
    "dpmpp_3m": dpmpp,
    "dpmpp_2m_sde": dpmpp,
    "dpmpp_3m_sde": dpmpp,
    "unipc": unipc,
    "dpm_adaptive": dpm_adaptive,
    "gotta_go_fast": gotta_go_fast,
}
# Each name's options, over its function's defaults.
PRESETS = {
    "dpmpp_2m": dict(order=2),
    "dpmpp_3m": dict(order=3),
    "dpmpp_2m_sde": dict(order=2, eta=1.0),
    "dpmpp_3m_sde": dict(order=3, eta=1.0),
}
DETERMINISTIC = ("heun", "dpmpp_2m", "dpmpp_3m", "unipc", "dpm_adaptive")  # probability-flow ODE solvers
ADAPTIVE = ("dpm_adaptive", "gotta_go_fast")  # steps of their own: no schedule, no CUDA graph
FIXED_STEP = tuple(s for s in SOLVERS if s not in ADAPTIVE)  # take steps and a schedule
ENCODERS = tuple(s for s in DETERMINISTIC if s in FIXED_STEP)  # run both ways: sampling and encoding


def solve(sde, score_fn, x, name, times, generator=None, cuda_graph=False, **options):
    """Solver `name` (SOLVERS) from x at times[0] along `times`, its preset options updated by `options`."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; known: {', '.join(SOLVERS)}")
    if cuda_graph and name in ADAPTIVE:
        raise ValueError(f"cuda_graph: {name} chooses its steps on the host, which a CUDA graph cannot replay")
    return SOLVERS[name](sde, score_fn, x, times, generator, cuda_graph, **{**PRESETS.get(name, {}), **options})


def sample(
    score_fn,
    sde,
    shape,
    name,
    steps=20,
    schedule="edm",
    eps=1e-3,
    denoise=True,
    z=None,
    generator=None,
    device=None,
    cuda_graph=False,
    **options,
):
    """Samples [B, ...] with solver `name`, from the prior (or z) at T to eps.

    steps: steps spaced by `schedule` (the adaptive solvers choose their own).
    denoise: the official noise removal at the end (one more evaluation).
    generator: a torch.Generator, one per sample, or a Philox. Returns (x, nfe).
    """
    _check_eps(eps, sde)
    device = _device_of(generator, device) if z is None else z.device
    generator = _random.as_generator(generator, device)
    with torch.no_grad():
        x = sde.prior_sampling(shape, generator, device=device) if z is None else z
        times = (
            torch.tensor([sde.T, eps], device=device)
            if name in ADAPTIVE  # the ends only
            else schedule_times(sde, schedule, steps, eps, device)
        )
        x, nfe = solve(sde, score_fn, x, name, times, generator, cuda_graph, **options)
        if denoise:
            x, nfe = denoise_step(sde, score_fn, x, eps), nfe + 1
    check_finite(x, name)
    return x, nfe
