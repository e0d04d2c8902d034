"""Samplers of Song et al. (ICLR 2021): predictor-corrector and the probability-flow ODE (RK45, or a
deterministic solver of fastsde.solvers), with encoding and interpolation.

Everything takes a score function score_fn(x, t) -> [B, ...] (x [B, ...], t [B]) and an SDE from
fastsde.sde, and knows nothing of networks. Predictors and correctors are plain functions in
registries (add your own with register_predictor / register_corrector):

    predictor(sde, score_fn, x, t, probability_flow=False, generator=None) -> (x, x_mean)
    corrector(sde, score_fn, x, t, snr, n_steps=1, generator=None, per_sample=False) -> (x, x_mean)

Each update is one fused op of fastsde.ops with per-sample coefficients taken from the SDE, so a
step has no host synchronisation and no Python work beyond the score call; the loops run through
fastsde.engine.run_steps, which can capture a whole step in a CUDA graph (cuda_graph=True).
"""

import math
import sys

import numpy as np
import torch

from . import _random, ops
from .engine import check_finite, run_steps
from .sde import VESDE, VPSDE, subVPSDE

PREDICTORS, CORRECTORS = {}, {}


def register_predictor(name):
    """Decorator: make a predictor available to pc_sample under `name`."""

    def register(fn):
        PREDICTORS[name] = fn
        return fn

    return register


def register_corrector(name):
    """Decorator: make a corrector available to pc_sample under `name`."""

    def register(fn):
        CORRECTORS[name] = fn
        return fn

    return register


def _lookup(table, kind, name):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def score(score_fn, x, t):
    """score_fn(x, t), checked to have x's shape."""
    s = score_fn(x, t)
    if not isinstance(s, torch.Tensor) or s.shape != x.shape:
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValueError(f"score_fn returned {got} for x of shape {tuple(x.shape)}; it must return x's shape")
    return s.to(x.dtype)


@register_predictor("euler_maruyama")
def euler_maruyama(sde, score_fn, x, t, probability_flow=False, generator=None):
    """Euler-Maruyama step of the reverse SDE (Song et al. 2021, Eq. 6) with dt = -1/N."""
    k = 0.5 if probability_flow else 1.0
    g = sde.diffusion(t)
    a, b = 1.0 - sde.drift_coef(t) / sde.N, k * g**2 / sde.N
    c = None if probability_flow else g / math.sqrt(sde.N)
    return ops.predictor_step(x, score(score_fn, x, t), a, b, c, generator=generator)


@register_predictor("reverse_diffusion")
def reverse_diffusion(sde, score_fn, x, t, probability_flow=False, generator=None):
    """Reverse diffusion predictor (Song et al. 2021, Eq. 46): the forward discretisation run backwards."""
    k = 0.5 if probability_flow else 1.0
    f, G = sde.discretize_coef(t)
    c = None if probability_flow else G
    return ops.predictor_step(x, score(score_fn, x, t), 1.0 - f, k * G**2, c, generator=generator)


@register_predictor("ancestral_sampling")
def ancestral_sampling(sde, score_fn, x, t, probability_flow=False, generator=None):
    """Ancestral sampling of SMLD (VE) or DDPM (VP) (Song et al. 2021, Eq. 47 and Appendix F)."""
    if probability_flow:
        raise ValueError("ancestral_sampling has no probability-flow form")
    if isinstance(sde, VESDE):
        sigma, prev = sde.discrete_sigma_pair(t)
        d = sigma**2 - prev**2
        a, b, c = torch.ones_like(t), d, torch.sqrt(prev**2 * d / sigma**2)
    elif isinstance(sde, VPSDE) and not isinstance(sde, subVPSDE):
        beta = sde.discrete_betas(t)[sde._index(t)]
        a = 1.0 / torch.sqrt(1.0 - beta)
        b, c = beta * a, torch.sqrt(beta)
    else:
        raise NotImplementedError(f"ancestral_sampling is defined for VESDE and VPSDE, not {type(sde).__name__}")
    return ops.predictor_step(x, score(score_fn, x, t), a, b, c, generator=generator)


@register_predictor("none")
def no_predictor(sde, score_fn, x, t, probability_flow=False, generator=None):
    """No predictor: x unchanged."""
    return x, x


@register_corrector("langevin")
def langevin(sde, score_fn, x, t, snr, n_steps=1, generator=None, per_sample=False):
    """Langevin MCMC corrector (Song et al. 2021, Alg. 4): step size from the signal-to-noise ratio
    `snr`; norms averaged over the batch (official) or per sample (samples independent of the batch)."""
    alpha = sde.langevin_alpha(t)
    x_mean = x
    for _ in range(n_steps):
        x, x_mean = ops.langevin_step(x, score(score_fn, x, t), alpha, snr, generator=generator, per_sample=per_sample)
    return x, x_mean


@register_corrector("ald")
def annealed_langevin(sde, score_fn, x, t, snr, n_steps=1, generator=None, per_sample=False):
    """Annealed Langevin dynamics of NCSN (Song & Ermon 2019): step 2 alpha (snr std(t))^2."""
    eps = 2 * sde.langevin_alpha(t) * (snr * sde.marginal_coef(t)[1]) ** 2
    x_mean = x
    for _ in range(n_steps):
        x, x_mean = ops.predictor_step(x, score(score_fn, x, t), 1.0, eps, torch.sqrt(2 * eps), generator=generator)
    return x, x_mean


@register_corrector("none")
def no_corrector(sde, score_fn, x, t, snr, n_steps=1, generator=None, per_sample=False):
    """No corrector: x unchanged."""
    return x, x


def _device_of(generator, device):
    if device is not None:
        return torch.device(device)
    if isinstance(generator, (torch.Generator, _random.Philox)):
        return generator.device
    return torch.device("cpu")


def _check_eps(eps, sde):
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}")


def _steps(n, progress, label):
    if not progress:
        return range(n)
    return _ProgressRange(n, label)


def _at(v, i):
    """v[i] as a [1] tensor for a 0-dim long tensor i, without the host sync of v[i]."""
    return v.index_select(0, i.reshape(1))


def _generators(generator):
    """The torch generators a sampler draws from (a Philox stream's state is a device tensor)."""
    if generator is None or isinstance(generator, _random.Philox):
        return []
    return [generator] if isinstance(generator, torch.Generator) else generator


class _ProgressRange:
    """range(n) that draws a one-line progress bar on stderr."""

    def __init__(self, n, label):
        self.n, self.label = n, label

    def __iter__(self):
        width = 30
        for i in range(self.n):
            if i % max(1, self.n // 100) == 0 or i == self.n - 1:
                done = (i + 1) * width // self.n
                sys.stderr.write(f"\r{self.label} [{'#' * done}{'.' * (width - done)}] {i + 1}/{self.n}")
                sys.stderr.flush()
            yield i
        sys.stderr.write("\n")


def pc_sample(
    score_fn,
    sde,
    shape,
    predictor="reverse_diffusion",
    corrector="langevin",
    snr=0.16,
    n_steps=1,
    probability_flow=False,
    denoise=True,
    eps=1e-3,
    generator=None,
    device=None,
    per_sample=False,
    progress=False,
    constraint=None,
    cuda_graph=False,
):
    """Predictor-corrector sampling (Song et al. 2021, Alg. 1), the official order of steps.

    At each of N times from T to eps: n_steps corrector steps, then one predictor step.
    shape: [B, ...]. generator: a torch.Generator, or one per sample (generators or integer seeds),
    so that each sample is the same whatever the batch; then pass per_sample=True too, since the
    official batch-averaged Langevin step mixes the batch.
    constraint(x, x_mean, t) -> (x, x_mean): applied to the prior sample and after every update
    (how inpainting and colorization impose what is known).
    cuda_graph: on CUDA, each step is one replay of a captured graph (same results).
    Returns (x, nfe): the last x_mean with `denoise` (the official noise removal), else the last x;
    nfe = N (n_steps + 1), less what a 'none' predictor or corrector skips.
    """
    predictor_fn = _lookup(PREDICTORS, "predictor", predictor)
    corrector_fn = _lookup(CORRECTORS, "corrector", corrector)
    _check_eps(eps, sde)
    if not snr >= 0:
        raise ValueError(f"snr must be >= 0 (the Langevin step's signal-to-noise ratio), got {snr!r}")
    device = _device_of(generator, device)
    generator = _random.as_generator(generator, device)
    constrain = constraint or (lambda x, x_mean, t: (x, x_mean))
    with torch.no_grad():
        x = sde.prior_sampling(shape, generator, device=device)
        timesteps = torch.linspace(sde.T, eps, sde.N, device=device)
        x, x_mean = constrain(x, x, timesteps[0].expand(shape[0]))

        def step(i, x, x_mean):
            t = _at(timesteps, i).expand(shape[0])
            x, x_mean = constrain(*corrector_fn(sde, score_fn, x, t, snr, n_steps, generator, per_sample), t)
            x, x_mean = constrain(*predictor_fn(sde, score_fn, x, t, probability_flow, generator), t)
            return x, x_mean

        x, x_mean = run_steps(
            step,
            (x, x_mean),
            _steps(sde.N, progress, "pc_sample"),
            cuda_graph,
            _generators(generator),
            "pc_sample",
            timesteps,
        )
    per_step = (n_steps if corrector_fn is not no_corrector else 0) + (predictor_fn is not no_predictor)
    return (x_mean if denoise else x), sde.N * per_step


# Dormand-Prince 5(4) tableau, as scipy's RK45 (the official ODE sampler's solver).
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_DP_E = (-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40)


def _rms(v, groups):
    """The RMS norm of each of `groups` equal row blocks of v [B, ...], float64 numpy [groups]."""
    return torch.sqrt(torch.mean(v.double().reshape(groups, -1) ** 2, dim=1)).cpu().numpy()


def solve_rk45(f, y, t0, t1, rtol=1e-5, atol=1e-5, max_steps=100_000, per_sample=False):
    """Integrates dy/dt = f(t, y) from t0 to t1 with adaptive Dormand-Prince 5(4) steps, on y's device.

    The step control is scipy's RK45 (error in the RMS norm scaled by atol + rtol |y|; the same
    initial step choice, step factors, smallest step and last step), so results and evaluation counts
    follow the official scipy-based code. y: [B, ...]. per_sample=False (the official way): the batch
    is one system with one step size. per_sample=True: each row y[b] is a system of its own, with its
    own time, step sizes and rejections, so that its result does not depend on the batch; f then sees
    only the rows still moving. f(t, y): t [B'] (each row's time), y [B', ...]. One array of B numbers
    a step goes to the host. Returns (y(t1), nfe): the evaluations, an int for the whole batch, one
    per row (a [B] int64 tensor) per sample.
    """
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got {rtol!r} and {atol!r}")
    B = y.shape[0]
    G = B if per_sample else 1  # the systems, each of B // G rows
    direction, span = (1.0 if t1 > t0 else -1.0), abs(t1 - t0)
    nfe = np.zeros(G, dtype=np.int64)

    def column(v):
        """One number per system -> one per row, shaped to broadcast over y's other dimensions."""
        col = torch.as_tensor(np.repeat(v, B // G), device=y.device, dtype=y.dtype)
        return col.reshape((-1,) + (1,) * (y.dim() - 1))

    def fn(t, y, active):
        nfe[active] += 1
        return f(column(t).reshape(-1), y)

    t, every = np.full(G, float(t0)), np.ones(G, dtype=bool)
    f0 = fn(t, y, every)
    scale = atol + y.abs() * rtol
    d0, d1 = _rms(y / scale, G), _rms(f0 / scale, G)
    if not (np.isfinite(d0).all() and np.isfinite(d1).all()):
        raise FloatingPointError(f"solve_rk45: NaN or Inf in the state or its derivative at t = {t0:.6g}")
    tiny = (d0 < 1e-5) | (d1 < 1e-5)
    # The trial step stays within [t0, t1], where f is defined.
    h0 = np.minimum(np.where(tiny, 1e-6, 0.01 * d0 / np.where(tiny, 1.0, d1)), span)
    f1 = fn(t + direction * h0, y + direction * column(h0) * f0, every)
    d2 = _rms((f1 - f0) / scale, G) / h0
    top = np.maximum(d1, d2)
    flat = top <= 1e-15
    h1 = np.where(flat, np.maximum(1e-6, h0 * 1e-3), (0.01 / np.where(flat, 1.0, top)) ** (1 / 5))
    h = np.minimum(np.minimum(100 * h0, h1), span)
    rejected, steps = np.zeros(G, dtype=bool), np.zeros(G, dtype=np.int64)
    while True:
        active = direction * (t1 - t) > 0
        if not active.any():
            return y, (torch.from_numpy(nfe) if per_sample else int(nfe[0]))
        if steps.max() >= max_steps:
            raise RuntimeError(f"solve_rk45: no convergence in {max_steps} steps (at t = {t[active][0]:.6g})")
        # The systems still moving (all of them with one system): their rows, times and step sizes.
        idx = None if active.all() else torch.as_tensor(np.flatnonzero(np.repeat(active, B // G)), device=y.device)
        ya, fa = (y, f0) if idx is None else (y.index_select(0, idx), f0.index_select(0, idx))
        ta, ha, ra = t[active], h[active], rejected[active]
        min_step = 10 * np.abs(np.nextafter(ta, direction * np.inf) - ta)
        if (ra & (ha < min_step)).any():
            raise RuntimeError(f"solve_rk45: step size underflow at t = {ta[ra & (ha < min_step)][0]:.6g}")
        ha = np.where(ra, ha, np.maximum(ha, min_step))  # a new step takes at least the smallest step
        # The last step lands on t1 exactly: a step cut to the distance left could fall an ulp
        # short and cost a needless step.
        t_new = ta + direction * ha
        t_new = np.where(direction * (t_new - t1) > 0, t1, t_new)
        dt = t_new - ta
        dtc = column(dt)
        K = [fa]
        for c, a in zip(_DP_C[1:], _DP_A[1:]):
            K.append(fn(ta + c * dt, ya + dtc * sum(ai * k for ai, k in zip(a, K)), active))
        y_new = ya + dtc * sum(b * k for b, k in zip(_DP_B, K) if b)
        f_new = fn(t_new, y_new, active)
        K.append(f_new)
        err = dtc * sum(e * k for e, k in zip(_DP_E, K) if e)
        err_norm = _rms(err / (atol + torch.maximum(ya.abs(), y_new.abs()) * rtol), len(ta))
        if not np.isfinite(err_norm).all():
            near = ta[~np.isfinite(err_norm)][0]
            raise FloatingPointError(f"solve_rk45: NaN or Inf in the state near t = {near:.6g}")
        accept = err_norm < 1
        with np.errstate(divide="ignore"):
            grow = np.where(err_norm == 0, 10.0, np.minimum(10.0, 0.9 * err_norm**-0.2))
            shrink = np.maximum(0.2, 0.9 * err_norm**-0.2)
        # No growth right after a rejection.
        h[active] = np.abs(dt) * np.where(accept, np.where(ra, np.minimum(1.0, grow), grow), shrink)
        t[active], rejected[active] = np.where(accept, t_new, ta), ~accept
        steps[active] += accept
        keep = column(accept).bool()
        y_next, f_next = torch.where(keep, y_new, ya), torch.where(keep, f_new, fa)
        y, f0 = (y_next, f_next) if idx is None else (y.index_copy(0, idx, y_next), f0.index_copy(0, idx, f_next))


def denoise_step(sde, score_fn, x, eps):
    """The official noise removal of the ODE sampler: the mean of a reverse-diffusion step at eps."""
    t = torch.full((x.shape[0],), eps, device=x.device)
    f, G = sde.discretize_coef(t)
    return ops.predictor_step(x, score(score_fn, x, t), 1.0 - f, G**2)[1]


def _ode_drift(sde, score_fn):
    """The probability-flow ODE's right-hand side, f(t, x) with t a float or one time per sample [B]."""
    rsde = sde.reverse(lambda x, t: score(score_fn, x, t), probability_flow=True)
    return lambda t, x: rsde.sde(x, torch.as_tensor(t, device=x.device, dtype=x.dtype).expand(x.shape[0]))[0]


def _check_method(method, steps, encode=False):
    from .solvers import DETERMINISTIC, ENCODERS, FIXED_STEP

    known = ["RK45", "scipy", *(ENCODERS if encode else DETERMINISTIC)]
    if method not in known:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(known)}")
    if method in FIXED_STEP and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"method {method!r} needs steps, a positive integer, got {steps!r}")


def _solve_flow(score_fn, sde, x, t0, t1, method, rtol, atol, steps, cuda_graph, per_sample=False, schedule="edm"):
    """x(t1) from x(t0) along the probability-flow ODE, t0 and t1 being T and eps in either order:
    RK45 / scipy adaptively, or a deterministic solver of fastsde.solvers on `schedule` (run backwards
    from eps to T). Returns (x, nfe)."""
    from . import solvers  # it builds on this module

    if method == "RK45":
        return solve_rk45(_ode_drift(sde, score_fn), x, t0, t1, rtol, atol, per_sample=per_sample)
    if method == "scipy":
        return _solve_scipy(_ode_drift(sde, score_fn), x, t0, t1, rtol, atol)
    times = solvers.schedule_times(sde, schedule, steps, min(t0, t1), device=x.device)
    return solvers.solve(sde, score_fn, x, method, times if t0 > t1 else times.flip(0), cuda_graph=cuda_graph)


def ode_sample(
    score_fn,
    sde,
    shape,
    method="RK45",
    rtol=1e-5,
    atol=1e-5,
    steps=None,
    denoise=True,
    eps=1e-3,
    z=None,
    generator=None,
    device=None,
    cuda_graph=False,
    per_sample=False,
    schedule="edm",
):
    """Samples by solving the probability-flow ODE (Song et al. 2021, Sec. 4.3) from T to eps.

    method: 'RK45' (adaptive Dormand-Prince on the device, rtol / atol); 'scipy' (the official
    solve_ivp path, float64 on the host); or a deterministic solver of fastsde.solvers, with `steps`
    steps on `schedule`.
    z: the prior sample to start from (default: drawn with `generator`), or a code from ode_encode.
    denoise: one reverse-diffusion step at eps, taking its mean (the official noise removal).
    cuda_graph: the fast solvers' steps replay a CUDA graph (RK45's adaptive steps need the host).
    per_sample: RK45 steps each sample on its own (see solve_rk45), so it does not depend on the batch.
    Returns (x, nfe): nfe the score evaluations a sample (per_sample: one count each).
    """
    _check_eps(eps, sde)
    _check_method(method, steps)
    device = _device_of(generator, device) if z is None else z.device
    with torch.no_grad():
        x = sde.prior_sampling(shape, _random.as_generator(generator, device), device=device) if z is None else z
        x, nfe = _solve_flow(score_fn, sde, x, sde.T, eps, method, rtol, atol, steps, cuda_graph, per_sample, schedule)
        if denoise:
            x = denoise_step(sde, score_fn, x, eps)
            nfe += 1
    check_finite(x, f"ode_sample ({method})")
    return x, nfe


def ode_encode(score_fn, sde, x, method="RK45", rtol=1e-5, atol=1e-5, steps=None, eps=1e-3, cuda_graph=False):
    """The latent code z = x(T) of data x = x(eps), both [B, ...] (Song et al. 2021, Sec. 4.3).

    The probability-flow ODE runs forward from eps to T, with ode_sample's methods but the adaptive
    solvers. ode_sample(z=z, denoise=False) with the same method and eps maps z back to x, up to the
    solvers' error. Returns (z, nfe).
    """
    _check_eps(eps, sde)
    _check_method(method, steps, encode=True)
    with torch.no_grad():
        z, nfe = _solve_flow(score_fn, sde, x, eps, sde.T, method, rtol, atol, steps, cuda_graph)
    check_finite(z, f"ode_encode ({method})")
    return z, nfe


def slerp(z0, z1, w):
    """Spherical interpolation between latent codes z0 and z1, [B, ...], at weights w in [0, 1].

    w: a float, or [B], or [F] for codes [1, ...] (F frames). For Gaussian latents it keeps a norm
    typical of the prior, which a straight line does not. Parallel codes are interpolated linearly.
    """
    a, b = z0.flatten(1).double(), z1.flatten(1).double()
    w = torch.as_tensor(w, dtype=torch.float64, device=z0.device).reshape(-1, 1)
    cos = ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).clamp(-1, 1)[:, None]
    theta = torch.acos(cos)
    sin = torch.sin(theta)
    curved = (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / sin.clamp_min(1e-12)
    z = torch.where(sin > 1e-6, curved, (1 - w) * a + w * b)
    return z.to(z0.dtype).reshape((-1,) + tuple(z0.shape[1:]))


def interpolate(score_fn, sde, x0, x1, frames, method="RK45", steps=None, eps=1e-3, cuda_graph=False):
    """The images along the path between data x0 and x1, [P, ...], in latent space (Song et al. 2021, Fig. 3).

    Both are encoded with ode_encode, their codes joined by slerp at `frames` evenly spaced weights,
    and each decoded with ode_sample(denoise=False). The ends are x0 and x1 reconstructed.
    Returns ([P, frames, ...], nfe per image: encoding plus decoding).
    """
    if not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer of at least 2 (the two ends), got {frames!r}")
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have one shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    P = x0.shape[0]
    z, nfe_in = ode_encode(score_fn, sde, torch.cat([x0, x1]), method, steps=steps, eps=eps, cuda_graph=cuda_graph)
    w = torch.linspace(0, 1, frames, device=z.device)
    path = torch.cat([slerp(z[p : p + 1], z[P + p : P + p + 1], w) for p in range(P)])
    x, nfe_out = ode_sample(
        score_fn, sde, path.shape, method, steps=steps, denoise=False, eps=eps, z=path, cuda_graph=cuda_graph
    )
    return x.reshape((P, frames) + tuple(x0.shape[1:])), nfe_in + nfe_out


def _solve_scipy(f, x, t0, t1, rtol, atol):
    try:
        from scipy import integrate
    except ImportError as e:
        raise ImportError("method='scipy' needs scipy (pip install scipy); method='RK45' does not") from e
    shape, device = x.shape, x.device

    def rhs(t, y):
        state = torch.from_numpy(y).to(device=device, dtype=torch.float32).reshape(shape)
        return f(t, state).detach().cpu().double().numpy().reshape(-1)

    sol = integrate.solve_ivp(
        rhs, (t0, t1), x.detach().cpu().double().numpy().reshape(-1), rtol=rtol, atol=atol, method="RK45"
    )
    y = torch.from_numpy(sol.y[:, -1]).to(device=device, dtype=torch.float32).reshape(shape)
    return y, sol.nfev
