"""Exact log-likelihoods through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2).

log p_0(x) = log p_T(x(T)) + int_0^T div f~(x(t), t) dt, where f~ is the probability-flow drift;
the divergence is estimated with the Hutchinson-Skilling trace estimator, one probe per sample
drawn once per call, as in the official code.
"""

import math

import torch

from . import _random
from .sampling import _check_eps, _ode_drift, solve_rk45


def hutchinson_probe(x, kind, generator=None):
    """A probe shaped like x [B, ...] for the Hutchinson-Skilling estimate E[v^T J v] = tr J:
    'rademacher' (+-1, probability 1/2 each) or 'gaussian'."""
    z = _random.randn(x.shape, generator, device=x.device, dtype=x.dtype)
    if kind == "gaussian":
        return z
    if kind == "rademacher":
        return torch.sign(z) + (z == 0)
    raise ValueError(f"hutchinson must be 'rademacher' or 'gaussian', got {kind!r}")


def ode_with_divergence(sde, score_fn, probe):
    """rhs(t, state) of the probability-flow ODE together with the estimate of its divergence:
    state [B, n + 1] holds x flattened (n = probe[0].numel()) and the integral so far; each call is
    one score evaluation plus one vector-Jacobian product. t: a float or one time per sample [B]."""
    drift = _ode_drift(sde, score_fn)
    n = probe[0].numel()

    def rhs(t, state):
        y = state[:, :n].reshape(probe.shape)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            dy = drift(t, y)
            (vjp,) = torch.autograd.grad((dy * probe).sum(), y)
        div = (vjp * probe).flatten(1).sum(1)
        return torch.cat([dy.detach().flatten(1), div[:, None]], dim=1)

    return rhs


def log_likelihood(score_fn, sde, x, hutchinson="rademacher", rtol=1e-5, atol=1e-5, eps=1e-5, generator=None):
    """log p(x) in nats per sample, [B], from the probability-flow ODE and its divergence.

    RK45 integrates from eps to T on x's device. Returns (logp, z, nfe): z = x(T), the latent code;
    each of the nfe evaluations is one score call plus one vector-Jacobian product.
    """
    _check_eps(eps, sde)
    probe = hutchinson_probe(x, hutchinson, _random.as_generator(generator, x.device))
    B, n = x.shape[0], x[0].numel()
    state = torch.cat([x.detach().flatten(1), x.new_zeros(B, 1)], dim=1)
    state, nfe = solve_rk45(ode_with_divergence(sde, score_fn, probe), state, eps, sde.T, rtol, atol)
    z = state[:, :n].reshape(x.shape)
    return sde.prior_logp(z) + state[:, n], z, nfe


def bits_per_dim(score_fn, sde, x, centered=True, **kwargs):
    """Bits per dimension of 8-bit data, [B], with the official convention.

    x: the uniformly dequantized image in model space: (U + 255 img) / 256 in [0, 1), then 2x - 1
    when `centered`. The density moves to [0, 256) pixel units by log2(256 / the data range's
    width): +7 for centered data, +8 for [0, 1) data (the official `7 - inverse_scaler(-1)`).
    Returns (bpd, z, nfe); kwargs go to log_likelihood.
    """
    logp, z, nfe = log_likelihood(score_fn, sde, x, **kwargs)
    D = x[0].numel()
    offset = 7.0 if centered else 8.0
    return -logp / math.log(2) / D + offset, z, nfe


def dataset_bits_per_dim(
    score_fn,
    sde,
    images,
    centered,
    batch_size=100,
    repeats=1,
    seed=0,
    device="cpu",
    progress=None,
    skip=(),
    on_batch=None,
    rank=0,
    world=1,
    **kwargs,
):
    """Bits/dim of uint8 images [N, C, H, W] as the official evaluation computes them: each of
    `repeats` passes dequantizes every image afresh ((img + U) / 256) and integrates with its own
    Hutchinson probes, on `device`. Item r * N + i is image i in pass r; a batch is images [k, k +
    batch_size) of one pass, its noise drawn from seeds of its own (seed, r, k), so that any batch
    can be computed alone: skip (item numbers) leaves out the batches it covers, rank of `world`
    processes computes every world-th of the others, and on_batch(items, bpd [b]) is called after
    each batch. progress: called with the number of images after each batch. Returns (mean bpd,
    bpd of the items computed [n], their item numbers [n], network evaluations)."""
    from .data import to_model

    for name, v in (("batch_size", batch_size), ("repeats", repeats), ("world", world)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"dataset_bits_per_dim: {name} must be a positive integer, got {v!r}")
    skip, N = set(skip), len(images)
    batches = [
        (r, k)
        for r in range(repeats)
        for k in range(0, N, batch_size)
        if not skip.issuperset(range(r * N + k, r * N + min(k + batch_size, N)))
    ]
    results, items, nfe = [], [], 0
    for r, k in batches[rank::world]:
        uniform = torch.Generator().manual_seed(_random.derive_seed(seed, r, k, 0))
        probes = torch.Generator(device).manual_seed(_random.derive_seed(seed, r, k, 1))
        x = to_model(images[k : k + batch_size], centered, dequantize=True, generator=uniform).to(device)
        bpd, _, n = bits_per_dim(score_fn, sde, x, centered=centered, generator=probes, **kwargs)
        results.append(bpd.cpu())
        items += range(r * N + k, r * N + k + len(x))
        nfe += n
        if on_batch:
            on_batch(items[-len(x) :], results[-1])
        if progress:
            progress(len(x))
    results = torch.cat(results) if results else torch.zeros(0)
    return float(results.mean()), results, torch.tensor(items, dtype=torch.long), nfe
