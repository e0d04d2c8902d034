"""Triton kernels of the predictor-corrector updates: one pass that reads x, the score and the noise
once and writes x_new and x_mean once, and the per-sample squared norms of the Langevin step.

Tensors arrive dense (contiguous or channels_last) with the same strides, so sample b is the
contiguous block [b D, (b + 1) D) of storage in either layout. Arithmetic runs in the dtype of the
coefficients (float32, or float64 for float64 data); half-precision data is converted on load.
"""
import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _affine_kernel(x_ptr, s_ptr, z_ptr, a_ptr, b_ptr, c_ptr, new_ptr, mean_ptr, N, D,
                   HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < N
    row = offs // D  # the sample each element belongs to
    a = tl.load(a_ptr + row, mask=inside, other=0.0)
    b = tl.load(b_ptr + row, mask=inside, other=0.0)
    x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(a.dtype)
    s = tl.load(s_ptr + offs, mask=inside, other=0.0).to(a.dtype)
    mean = a * x + b * s
    new = mean
    if HAS_NOISE:
        c = tl.load(c_ptr + row, mask=inside, other=0.0)
        z = tl.load(z_ptr + offs, mask=inside, other=0.0).to(a.dtype)
        new = mean + c * z
    tl.store(mean_ptr + offs, mean.to(mean_ptr.dtype.element_ty), mask=inside)
    tl.store(new_ptr + offs, new.to(new_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _sq_norms_kernel(s_ptr, z_ptr, out_s_ptr, out_z_ptr, B, D, NBLOCKS, ROWS: tl.constexpr, COLS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    blk = tl.program_id(1)
    cols = blk * COLS + tl.arange(0, COLS)
    inside = (rows[:, None] < B) & (cols[None, :] < D)
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    s = tl.load(s_ptr + offs, mask=inside, other=0.0).to(out_s_ptr.dtype.element_ty)
    z = tl.load(z_ptr + offs, mask=inside, other=0.0).to(out_z_ptr.dtype.element_ty)
    out = rows * NBLOCKS + blk
    tl.store(out_s_ptr + out, tl.sum(s * s, axis=1), mask=rows < B)
    tl.store(out_z_ptr + out, tl.sum(z * z, axis=1), mask=rows < B)


def affine(x, score, noise, a, b, c, out_format):
    """(x_new, x_mean) = (a x + b score + c noise, a x + b score), per-sample a, b, c [B] in the
    accumulation dtype; x, score, noise dense in `out_format`."""
    new = torch.empty_like(x, memory_format=out_format)
    mean = torch.empty_like(x, memory_format=out_format)
    N = x.numel()
    _affine_kernel[(triton.cdiv(N, BLOCK),)](x, score, x if noise is None else noise, a, b, c, new, mean, N,
                                             N // x.shape[0], HAS_NOISE=noise is not None, BLOCK=BLOCK)
    return new, mean


def squared_norms(score, noise, acc):
    """(|score_b|^2, |noise_b|^2), each [B] in `acc`: block partial sums, added in a fixed order."""
    B = score.shape[0]
    D = score.numel() // B
    cols = min(triton.next_power_of_2(D), BLOCK)
    rows = max(1, BLOCK // cols)
    grid = (triton.cdiv(B, rows), triton.cdiv(D, cols))
    parts_s = torch.empty((B, grid[1]), dtype=acc, device=score.device)
    parts_z = torch.empty((B, grid[1]), dtype=acc, device=score.device)
    _sq_norms_kernel[grid](score, noise, parts_s, parts_z, B, D, grid[1], ROWS=rows, COLS=cols)
    return parts_s.sum(1), parts_z.sum(1)
