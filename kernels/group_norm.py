"""Triton kernels of GroupNorm with an optional fused SiLU, forward and backward.

One program per (sample, group). Loops run over a constexpr number of chunks: Triton's interpreter
cannot loop to a runtime bound under NumPy >= 2.4 (it calls int() on a one-element array). Element k of a group of Cg channels and HW positions lies at
k in NCHW order (channel k // HW) or at (k // Cg) C + k % Cg in NHWC order (channel k % Cg), from the
group's first element. Statistics are two-pass (mean, then the mean squared deviation) in float32
(float64 for float64 data); the forward saves only mean and rstd. Weight and bias gradients are
reduced in two deterministic stages: per (sample, channel) here, over samples by the caller.
"""
import torch
import triton
import triton.language as tl

from ._tuning import autotune

BLOCK = 1024  # the largest block of the parameter-gradient kernel


def _tuned(fn):
    """Chunk size tuned per group size M on a GPU (1024 under the interpreter); CHUNKS follows."""
    chunks = triton.heuristics({"CHUNKS": lambda args: triton.cdiv(args["M"], args["BLOCK"])})(fn)
    return autotune(gpu=[({"BLOCK": b}, w) for b in (1024, 2048, 4096) for w in (4, 8)],
                    interpret=({"BLOCK": 1024}, 4), key=["M", "C"])(chunks)


@triton.jit
def _offsets(k, n, g, C, HW, Cg, CHANNELS_LAST: tl.constexpr):
    """Storage offsets and channel indices of elements k of group (n, g)."""
    if CHANNELS_LAST:
        offs = n.to(tl.int64) * HW * C + (k // Cg).to(tl.int64) * C + g * Cg + k % Cg
        ch = g * Cg + k % Cg
    else:
        offs = (n.to(tl.int64) * C + g * Cg) * HW + k
        ch = g * Cg + k // HW
    return offs, ch


@triton.jit
def _xhat_chunk(x_ptr, chunk, n, g, C, HW, Cg, M, mean, rstd, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    """(offsets, channels, in-group mask, normalised x) of one chunk of group (n, g)."""
    k = chunk * BLOCK + tl.arange(0, BLOCK)
    inside = k < M
    offs, ch = _offsets(k, n, g, C, HW, Cg, CHANNELS_LAST)
    xhat = (tl.load(x_ptr + offs, mask=inside, other=0.0).to(mean.dtype) - mean) * rstd
    return offs, ch, inside, xhat


@triton.jit
def _silu_grad(pre):
    s = tl.sigmoid(pre)
    return s * (1 + pre * (1 - s))


@_tuned
@triton.jit
def _forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, C, HW, Cg, G, M, eps,
                    HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr,
                    CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr, CHUNKS: tl.constexpr):
    n, g = tl.program_id(0), tl.program_id(1)
    acc_t = mean_ptr.dtype.element_ty
    total = tl.zeros((BLOCK,), acc_t)
    for chunk in range(CHUNKS):
        k = chunk * BLOCK + tl.arange(0, BLOCK)
        offs, _ = _offsets(k, n, g, C, HW, Cg, CHANNELS_LAST)
        total += tl.load(x_ptr + offs, mask=k < M, other=0.0).to(acc_t)
    mean = tl.sum(total, axis=0) / M
    total = tl.zeros((BLOCK,), acc_t)
    for chunk in range(CHUNKS):
        k = chunk * BLOCK + tl.arange(0, BLOCK)
        offs, _ = _offsets(k, n, g, C, HW, Cg, CHANNELS_LAST)
        d = tl.load(x_ptr + offs, mask=k < M, other=0.0).to(acc_t) - mean
        total += tl.where(k < M, d * d, 0.0)
    rstd = 1 / tl.sqrt(tl.sum(total, axis=0) / M + eps)
    for chunk in range(CHUNKS):
        offs, ch, inside, y = _xhat_chunk(x_ptr, chunk, n, g, C, HW, Cg, M, mean, rstd, CHANNELS_LAST, BLOCK)
        if HAS_W:
            y = y * tl.load(w_ptr + ch, mask=inside, other=0.0).to(acc_t)
        if HAS_B:
            y = y + tl.load(b_ptr + ch, mask=inside, other=0.0).to(acc_t)
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=inside)
    tl.store(mean_ptr + n * G + g, mean)
    tl.store(rstd_ptr + n * G + g, rstd)


@_tuned
@triton.jit
def _backward_kernel(dy_ptr, x_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, dx_ptr, C, HW, Cg, G, M,
                     HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr,
                     CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr, CHUNKS: tl.constexpr):
    # dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dL/dxhat = dy' w, dy' = dy silu'(pre).
    n, g = tl.program_id(0), tl.program_id(1)
    acc_t = mean_ptr.dtype.element_ty
    mean, rstd = tl.load(mean_ptr + n * G + g), tl.load(rstd_ptr + n * G + g)
    sum_g = tl.zeros((BLOCK,), acc_t)
    sum_gx = tl.zeros((BLOCK,), acc_t)
    for chunk in range(CHUNKS):
        offs, ch, inside, xhat = _xhat_chunk(x_ptr, chunk, n, g, C, HW, Cg, M, mean, rstd, CHANNELS_LAST, BLOCK)
        grad = _dxhat(dy_ptr, w_ptr, b_ptr, offs, ch, inside, xhat, acc_t, HAS_W, HAS_B, SILU)
        sum_g += grad
        sum_gx += grad * xhat
    mean_g = tl.sum(sum_g, axis=0) / M
    mean_gx = tl.sum(sum_gx, axis=0) / M
    for chunk in range(CHUNKS):
        offs, ch, inside, xhat = _xhat_chunk(x_ptr, chunk, n, g, C, HW, Cg, M, mean, rstd, CHANNELS_LAST, BLOCK)
        grad = _dxhat(dy_ptr, w_ptr, b_ptr, offs, ch, inside, xhat, acc_t, HAS_W, HAS_B, SILU)
        dx = rstd * (grad - mean_g - xhat * mean_gx)
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _dy_pre(dy_ptr, w_ptr, b_ptr, offs, ch, inside, xhat, acc_t, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
            SILU: tl.constexpr):
    """dL/d(affine output): dy, times silu' of the pre-activation when SiLU is fused."""
    dy = tl.load(dy_ptr + offs, mask=inside, other=0.0).to(acc_t)
    if SILU:
        pre = xhat
        if HAS_W:
            pre = pre * tl.load(w_ptr + ch, mask=inside, other=0.0).to(acc_t)
        if HAS_B:
            pre = pre + tl.load(b_ptr + ch, mask=inside, other=0.0).to(acc_t)
        dy = dy * _silu_grad(pre)
    return dy


@triton.jit
def _dxhat(dy_ptr, w_ptr, b_ptr, offs, ch, inside, xhat, acc_t, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
           SILU: tl.constexpr):
    grad = _dy_pre(dy_ptr, w_ptr, b_ptr, offs, ch, inside, xhat, acc_t, HAS_W, HAS_B, SILU)
    if HAS_W:
        grad = grad * tl.load(w_ptr + ch, mask=inside, other=0.0).to(acc_t)
    return tl.where(inside, grad, 0.0)


@triton.jit
def _param_grad_kernel(dy_ptr, x_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, dw_ptr, db_ptr, C, HW, Cg, G,
                       HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr,
                       CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr, CHUNKS: tl.constexpr):
    # Stage one of the weight and bias gradients: sums over the positions of channel c of sample n.
    n, c = tl.program_id(0), tl.program_id(1)
    g = c // Cg
    acc_t = mean_ptr.dtype.element_ty
    mean, rstd = tl.load(mean_ptr + n * G + g), tl.load(rstd_ptr + n * G + g)
    sum_dw = tl.zeros((BLOCK,), acc_t)
    sum_db = tl.zeros((BLOCK,), acc_t)
    for chunk in range(CHUNKS):
        p = chunk * BLOCK + tl.arange(0, BLOCK)
        inside = p < HW
        if CHANNELS_LAST:
            offs = n.to(tl.int64) * HW * C + p.to(tl.int64) * C + c
        else:
            offs = (n.to(tl.int64) * C + c) * HW + p
        ch = tl.zeros((BLOCK,), tl.int32) + c
        xhat = (tl.load(x_ptr + offs, mask=inside, other=0.0).to(acc_t) - mean) * rstd
        dy = tl.where(inside, _dy_pre(dy_ptr, w_ptr, b_ptr, offs, ch, inside, xhat, acc_t, HAS_W, HAS_B, SILU), 0.0)
        sum_dw += dy * xhat
        sum_db += dy
    tl.store(dw_ptr + n * C + c, tl.sum(sum_dw, axis=0))
    tl.store(db_ptr + n * C + c, tl.sum(sum_db, axis=0))


def _shape(x, num_groups):
    N, C = x.shape[:2]
    HW = x.numel() // (N * C)
    return N, C, HW, C // num_groups


def forward(x, num_groups, weight, bias, eps, silu, channels_last, acc):
    """(y, mean [N, G], rstd [N, G]) for x dense in the layout `channels_last` says."""
    N, C, HW, Cg = _shape(x, num_groups)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty_like(x, memory_format=fmt)
    mean = torch.empty((N, num_groups), dtype=acc, device=x.device)
    rstd = torch.empty_like(mean)
    _forward_kernel[(N, num_groups)](x, weight if weight is not None else x, bias if bias is not None else x,
                                     y, mean, rstd, C, HW, Cg, num_groups, Cg * HW, eps, HAS_W=weight is not None,
                                     HAS_B=bias is not None, SILU=silu, CHANNELS_LAST=channels_last)
    return y, mean, rstd


def backward(dy, x, mean, rstd, weight, bias, silu, channels_last):
    """(dx, dw, db): dw and db summed over samples in a fixed order (zeros where absent)."""
    N, C, HW, Cg = _shape(x, mean.shape[1])
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    dx = torch.empty_like(x, memory_format=fmt)
    w = weight if weight is not None else x
    b = bias if bias is not None else x
    flags = dict(HAS_W=weight is not None, HAS_B=bias is not None, SILU=silu, CHANNELS_LAST=channels_last)
    _backward_kernel[(N, mean.shape[1])](dy, x, mean, rstd, w, b, dx, C, HW, Cg, mean.shape[1], Cg * HW, **flags)
    dw_part = torch.empty((N, C), dtype=mean.dtype, device=x.device)
    db_part = torch.empty_like(dw_part)
    block = min(BLOCK, triton.next_power_of_2(HW))
    _param_grad_kernel[(N, C)](dy, x, mean, rstd, w, b, dw_part, db_part, C, HW, Cg, mean.shape[1],
                               BLOCK=block, CHUNKS=triton.cdiv(HW, block), **flags)
    return dx, dw_part.sum(0).to(x.dtype), db_part.sum(0).to(x.dtype)
