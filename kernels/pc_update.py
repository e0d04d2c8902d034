"""Triton kernels of the predictor-corrector updates: one pass that reads x, the score and the noise
once and writes x_new and x_mean once, and the per-sample squared norms of the Langevin step.

Tensors arrive dense (contiguous or channels_last) with the same strides, so sample b is the
contiguous block [b D, (b + 1) D) of storage in either layout. Arithmetic runs in the dtype of the
coefficients (float32, or float64 for float64 data); half-precision data is converted on load.
The noise is a tensor (NOISE = 1), drawn with tl.randn from a per-sample key (NOISE = 2; see
fastsde/ops/philox.py), or absent (NOISE = 0).
"""
import torch
import triton
import triton.language as tl

from ._tuning import autotune

BLOCK = 1024  # the squared norms' block


@triton.jit
def _noise(z_ptr, key_ptr, offs, row, inside, D, C, HW, NOISE: tl.constexpr):
    """The noise at storage offsets offs (sample row): loaded, or tl.randn of the sample's key at
    the element's NCHW index within the sample (storage position p is (h W + w) C + c in a
    channels_last sample, whose C is passed; C = 1 otherwise)."""
    if NOISE == 1:
        z = tl.load(z_ptr + offs, mask=inside, other=0.0)
    else:
        seed = tl.load(key_ptr + 2 * row, mask=inside, other=0)
        offset = tl.load(key_ptr + 2 * row + 1, mask=inside, other=0)
        p = offs - row * D
        z = tl.randn(seed, offset + (p % C) * HW + p // C)
    return z


@autotune(gpu=[({"BLOCK": 1024}, 4), ({"BLOCK": 2048}, 4), ({"BLOCK": 4096}, 8)], interpret=({"BLOCK": 1024}, 4),
          key=["N"])
@triton.jit
def _affine_kernel(x_ptr, s_ptr, z_ptr, key_ptr, a_ptr, b_ptr, c_ptr, new_ptr, mean_ptr, N, D, C, HW,
                   NOISE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < N
    row = offs // D  # the sample each element belongs to
    a = tl.load(a_ptr + row, mask=inside, other=0.0)
    b = tl.load(b_ptr + row, mask=inside, other=0.0)
    x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(a.dtype)
    s = tl.load(s_ptr + offs, mask=inside, other=0.0).to(a.dtype)
    mean = a * x + b * s
    new = mean
    if NOISE != 0:
        c = tl.load(c_ptr + row, mask=inside, other=0.0)
        new = mean + c * _noise(z_ptr, key_ptr, offs, row, inside, D, C, HW, NOISE).to(a.dtype)
    tl.store(mean_ptr + offs, mean.to(mean_ptr.dtype.element_ty), mask=inside)
    tl.store(new_ptr + offs, new.to(new_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _sq_norms_kernel(s_ptr, z_ptr, key_ptr, out_s_ptr, out_z_ptr, B, D, C, HW, NBLOCKS,
                     NOISE: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    blk = tl.program_id(1)
    cols = blk * COLS + tl.arange(0, COLS)
    inside = (rows[:, None] < B) & (cols[None, :] < D)
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    s = tl.load(s_ptr + offs, mask=inside, other=0.0).to(out_s_ptr.dtype.element_ty)
    z = _noise(z_ptr, key_ptr, offs, rows[:, None].to(tl.int64), inside, D, C, HW, NOISE)
    z = tl.where(inside, z.to(out_z_ptr.dtype.element_ty), 0.0)
    out = rows * NBLOCKS + blk
    tl.store(out_s_ptr + out, tl.sum(s * s, axis=1), mask=rows < B)
    tl.store(out_z_ptr + out, tl.sum(z * z, axis=1), mask=rows < B)


def _noise_args(x, noise, key, out_format):
    """(z_ptr, key_ptr, C, HW, NOISE) for the kernels; C, HW map a channels_last sample's storage
    position to its NCHW index, as the counter of its noise."""
    cl = out_format == torch.channels_last
    C, HW = (x.shape[1], x.shape[2] * x.shape[3]) if cl else (1, 1)
    mode = 1 if noise is not None else 2 if key is not None else 0
    return (x if noise is None else noise), (x if key is None else key), C, HW, mode


def affine(x, score, noise, key, a, b, c, out_format):
    """(x_new, x_mean) = (a x + b score + c z, a x + b score), per-sample a, b, c [B] in the
    accumulation dtype; x, score and noise dense in `out_format`; z = noise, or drawn from key
    (int64 [B, 2]), or no noise term when both are None."""
    new = torch.empty_like(x, memory_format=out_format)
    mean = torch.empty_like(x, memory_format=out_format)
    N = x.numel()
    z, k, C, HW, mode = _noise_args(x, noise, key, out_format)
    _affine_kernel[lambda meta: (triton.cdiv(N, meta["BLOCK"]),)](x, score, z, k, a, b, c, new, mean, N,
                                                                   N // x.shape[0], C, HW, NOISE=mode)
    return new, mean


def squared_norms(score, noise, key, acc, out_format):
    """(|score_b|^2, |z_b|^2), each [B] in `acc`, z = noise or drawn from key: block partial sums,
    added in a fixed order."""
    B = score.shape[0]
    D = score.numel() // B
    cols = min(triton.next_power_of_2(D), BLOCK)
    rows = max(1, BLOCK // cols)
    grid = (triton.cdiv(B, rows), triton.cdiv(D, cols))
    parts_s = torch.empty((B, grid[1]), dtype=acc, device=score.device)
    parts_z = torch.empty((B, grid[1]), dtype=acc, device=score.device)
    z, k, C, HW, mode = _noise_args(score, noise, key, out_format)
    _sq_norms_kernel[grid](score, z, k, parts_s, parts_z, B, D, C, HW, grid[1], NOISE=mode, ROWS=rows, COLS=cols)
    return parts_s.sum(1), parts_z.sum(1)
