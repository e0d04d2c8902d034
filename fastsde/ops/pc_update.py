"""Fused predictor-corrector update steps of the samplers.

Every predictor of the paper (reverse diffusion, Euler-Maruyama, ancestral sampling) and the annealed
Langevin corrector are one affine step with per-sample coefficients, which the sampler derives from
its SDE: x_mean = a x + b score, x_new = x_mean + c z. The Langevin corrector also needs norms of the
score and the noise before it can step, so it has its own op. The noise z is a tensor, or drawn
inside the kernel from a per-sample Philox key (philox.py), so that no noise tensor is written or read.
"""

from typing import Optional, Tuple

import torch

from .. import _random
from . import _backend
from ._common import FLOATS, acc_dtype, call, check_tensor, output_format, register_autograd
from .philox import philox_normal_reference


def predictor_step_reference(x, score, noise, a, b, c, noise_key=None):
    """The specification of predictor_step (noise and noise_key None: no noise term; the noise of a
    key is float32). Returns (x_new, x_mean)."""
    if noise_key is not None:
        noise = philox_normal_reference(noise_key, x.shape)
    acc = acc_dtype(x)
    col = (-1,) + (1,) * (x.dim() - 1)
    x_mean = a.to(acc).view(col) * x.to(acc) + b.to(acc).view(col) * score.to(acc)
    x_new = x_mean if noise is None else x_mean + c.to(acc).view(col) * noise.to(acc)
    fmt = output_format(x)
    return x_new.to(x.dtype).contiguous(memory_format=fmt), x_mean.to(x.dtype).contiguous(memory_format=fmt)


def langevin_eps(score, noise, alpha, snr, per_sample):
    """Step size of the Langevin corrector, [B]: 2 alpha (snr |z| / |score|)^2 with per-sample norms,
    or with norms averaged over the batch (the official code; it couples the samples of a batch)."""
    grad_norm = score.double().flatten(1).norm(dim=1)
    noise_norm = noise.double().flatten(1).norm(dim=1)
    if not per_sample:
        grad_norm, noise_norm = grad_norm.mean().expand_as(grad_norm), noise_norm.mean().expand_as(noise_norm)
    return 2 * alpha.double() * (snr * noise_norm / grad_norm) ** 2


def langevin_step_reference(x, score, noise, alpha, snr, per_sample, noise_key=None):
    """The specification of langevin_step (the noise from `noise` or `noise_key`). Returns (x_new, x_mean)."""
    if noise_key is not None:
        noise = philox_normal_reference(noise_key, x.shape)
    eps = langevin_eps(score, noise, alpha, snr, per_sample)
    return predictor_step_reference(x, score, noise, torch.ones_like(eps), eps, (2 * eps).sqrt())


def _check_like(op, x, name, t):
    check_tensor(op, name, t, x.shape, x.dtype, x.device)


def _per_sample(op, x, name, v):
    """A coefficient as a [B] float tensor on x's device; a Python number is broadcast."""
    if not isinstance(v, torch.Tensor):
        return torch.full((x.shape[0],), float(v), dtype=acc_dtype(x), device=x.device)
    check_tensor(op, name, v, (x.shape[0],), FLOATS, x.device, what="a number or a tensor")
    return v


def _noise(op, x, noise, generator, noise_key):
    """(noise, key): the noise tensor, or the Philox key the kernel draws it from."""
    if noise_key is not None:
        if noise is not None or generator is not None:
            raise ValueError(f"{op}: pass noise, generator or noise_key, not more than one")
        check_tensor(
            op, "noise_key", noise_key, (x.shape[0], 2), torch.int64, x.device, what="a tensor of (seed, offset) pairs"
        )
        return None, noise_key
    if noise is None:
        if isinstance(generator, _random.Philox):
            return None, generator.draw(x.shape)
        return _random.randn(x.shape, generator, device=x.device, dtype=x.dtype), None
    _check_like(op, x, "noise", noise)
    return noise, None


def predictor_step(x, score, a, b, c=None, noise=None, generator=None, noise_key=None, backend=None):
    """x_mean = a x + b score; x_new = x_mean + c noise. Returns (x_new, x_mean).

    x, score: [B, ...]; a, b, c: [B] tensors or numbers. c=None: no noise term (x_new equals x_mean,
    as in probability-flow steps). noise: [B, ...] standard normal noise, or None to draw it from
    `generator` (a torch.Generator, one per sample, or a fastsde.Philox, whose noise the kernel
    draws itself), or from noise_key (int64 [B, 2], (seed, offset) per sample; see ops/philox.py).
    """
    op = "predictor_step"
    check_tensor(op, "x", x, "[B, ...]", FLOATS, what="a non-empty tensor")
    _check_like(op, x, "score", score)
    a, b = _per_sample(op, x, "a", a), _per_sample(op, x, "b", b)
    if c is None:
        noise, key, c = None, None, torch.zeros_like(a)
    else:
        c, (noise, key) = _per_sample(op, x, "c", c), _noise(op, x, noise, generator, noise_key)
    name = _backend.resolve(backend, x.device)
    if name == "reference":
        return predictor_step_reference(x, score, noise, a, b, c, key)
    return call(_OPS[name].predictor_step, x, score, noise, a, b, c, key)


def langevin_step(x, score, alpha, snr, noise=None, generator=None, per_sample=False, noise_key=None, backend=None):
    """One Langevin corrector step (Song et al. 2021, Alg. 4). Returns (x_new, x_mean).

    eps = 2 alpha (snr |noise| / |score|)^2; x_mean = x + eps score; x_new = x_mean + sqrt(2 eps) noise.
    The norms are per sample (per_sample=True: samples independent of the batch) or averaged over
    the batch (the official behaviour). alpha: [B] or a number (1 for VE, 1 - beta_i for VP).
    noise, generator, noise_key: as in predictor_step.
    """
    op = "langevin_step"
    check_tensor(op, "x", x, "[B, ...]", FLOATS, what="a non-empty tensor")
    _check_like(op, x, "score", score)
    alpha = _per_sample(op, x, "alpha", alpha)
    noise, key = _noise(op, x, noise, generator, noise_key)
    name = _backend.resolve(backend, x.device)
    if name == "reference":
        return langevin_step_reference(x, score, noise, alpha, float(snr), per_sample, key)
    return call(_OPS[name].langevin_step, x, score, noise, alpha, float(snr), per_sample, key)


def _fake_step(x, *args):
    fmt = output_format(x)
    return torch.empty_like(x, memory_format=fmt), torch.empty_like(x, memory_format=fmt)


def _predictor_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _predictor_backward(ctx, g_new, g_mean):
    # Both outputs are linear: x_mean = a x + b s, x_new = x_mean + c z.
    x, score, noise, a, b, c, key = ctx.saved_tensors
    z = philox_normal_reference(key, x.shape) if key is not None else noise
    col = (-1,) + (1,) * (x.dim() - 1)
    g = g_new + g_mean
    per_sample = lambda t: t.flatten(1).sum(1)  # noqa: E731
    return (
        g * a.view(col).to(g.dtype),
        g * b.view(col).to(g.dtype),
        None if noise is None else g_new * c.view(col).to(g.dtype),
        per_sample(g * x).to(a.dtype),
        per_sample(g * score).to(b.dtype),
        None if z is None else per_sample(g_new * z).to(c.dtype),
        None,
    )


def _langevin_backward(ctx, *grads):
    raise NotImplementedError(
        "langevin_step has no derivative in the compiled backends; use backend='reference' to differentiate through it"
    )


def _register(namespace):
    torch.library.register_fake(f"{namespace}::predictor_step")(_fake_step)
    torch.library.register_fake(f"{namespace}::langevin_step")(_fake_step)
    ops_ = getattr(torch.ops, namespace)
    register_autograd(ops_.predictor_step, _predictor_backward, _predictor_setup)
    register_autograd(ops_.langevin_step, _langevin_backward, lambda ctx, inputs, output: None)


_OPS = {}  # backend -> the namespace of its ops (torch.ops.fastsde, torch.ops.fastsde_triton)
if _backend._C is not None:
    _register("fastsde")
    _OPS["cpp"] = _OPS["cuda"] = torch.ops.fastsde

_triton = _backend.triton_kernels("pc_update")
if _triton is not None:

    @torch.library.custom_op("fastsde_triton::predictor_step", mutates_args=())
    def _triton_predictor_step(
        x: torch.Tensor,
        score: torch.Tensor,
        noise: Optional[torch.Tensor],
        a: torch.Tensor,
        b: torch.Tensor,
        c: torch.Tensor,
        noise_key: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        fmt, acc = output_format(x), acc_dtype(x)
        dense = lambda t: None if t is None else t.contiguous(memory_format=fmt)  # noqa: E731
        key = None if noise_key is None else noise_key.contiguous()
        return _triton.affine(
            dense(x),
            dense(score),
            dense(noise),
            key,
            a.to(acc).contiguous(),
            b.to(acc).contiguous(),
            c.to(acc).contiguous(),
            fmt,
        )

    @torch.library.custom_op("fastsde_triton::langevin_step", mutates_args=())
    def _triton_langevin_step(
        x: torch.Tensor,
        score: torch.Tensor,
        noise: Optional[torch.Tensor],
        alpha: torch.Tensor,
        snr: float,
        per_sample: bool,
        noise_key: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        fmt, acc = output_format(x), acc_dtype(x)
        x, score = (t.contiguous(memory_format=fmt) for t in (x, score))
        noise = None if noise is None else noise.contiguous(memory_format=fmt)
        key = None if noise_key is None else noise_key.contiguous()
        grad_sq, noise_sq = _triton.squared_norms(score, noise, key, acc, fmt)
        grad_norm, noise_norm = grad_sq.double().sqrt(), noise_sq.double().sqrt()
        if not per_sample:
            grad_norm, noise_norm = grad_norm.mean().expand_as(grad_norm), noise_norm.mean().expand_as(noise_norm)
        eps = 2 * alpha.double() * (snr * noise_norm / grad_norm) ** 2
        return _triton.affine(
            x, score, noise, key, torch.ones_like(eps, dtype=acc), eps.to(acc), (2 * eps).sqrt().to(acc), fmt
        )

    _register("fastsde_triton")
    _OPS["triton"] = torch.ops.fastsde_triton
