"""Triton kernels of the predictor-corrector updates and the Langevin step's norms.

How it works, and why: docs/ops.md, "How the Triton kernels work".
"""

import torch
import triton
import triton.language as tl

from ._tuning import autotune, row_tile

BLOCK = 1024  # the squared norms' tile


@triton.jit
def _tile(D, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Program (i, j)'s tile of the [B, D] samples: samples [ROWS, 1], positions [1, COLS], storage
    offsets [ROWS, COLS]."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]
    cols = tl.program_id(1) * COLS + tl.arange(0, COLS)[None, :]
    return rows, cols, rows.to(tl.int64) * D + cols


@triton.jit
def _noise(z_ptr, key_ptr, offs, rows, p, inside, C, HW, NOISE: tl.constexpr):
    """The noise at storage offsets offs (samples rows, positions p within them): loaded, or tl.randn
    of the sample's key at the element's NCHW index within the sample (position p is (h W + w) C + c
    in a channels_last sample, whose C is passed; C = 1 otherwise)."""
    if NOISE == 1:
        z = tl.load(z_ptr + offs, mask=inside, other=0.0)
    else:
        seed = tl.load(key_ptr + 2 * rows, mask=inside, other=0)
        offset = tl.load(key_ptr + 2 * rows + 1, mask=inside, other=0)
        z = tl.randn(seed, offset + (p % C) * HW + p // C)
    return z


@autotune(
    gpu=[({"BLOCK": 1024}, 4), ({"BLOCK": 2048}, 4), ({"BLOCK": 4096}, 8)],
    interpret=({"BLOCK": 1024}, 4),
    key=["B", "D"],
)
@triton.heuristics(
    {"ROWS": lambda a: row_tile(a["D"], a["BLOCK"])[0], "COLS": lambda a: row_tile(a["D"], a["BLOCK"])[1]}
)
@triton.jit
def _affine_kernel(
    x_ptr,
    s_ptr,
    z_ptr,
    key_ptr,
    a_ptr,
    b_ptr,
    c_ptr,
    new_ptr,
    mean_ptr,
    B,
    D,
    C,
    HW,
    NOISE: tl.constexpr,
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
):
    rows, cols, offs = _tile(D, ROWS, COLS)
    inside = (rows < B) & (cols < D)
    a = tl.load(a_ptr + rows, mask=rows < B, other=0.0)
    b = tl.load(b_ptr + rows, mask=rows < B, other=0.0)
    x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(a.dtype)
    s = tl.load(s_ptr + offs, mask=inside, other=0.0).to(a.dtype)
    mean = a * x + b * s
    new = mean
    if NOISE != 0:
        c = tl.load(c_ptr + rows, mask=rows < B, other=0.0)
        new = mean + c * _noise(z_ptr, key_ptr, offs, rows, cols, inside, C, HW, NOISE).to(a.dtype)
    tl.store(mean_ptr + offs, mean.to(mean_ptr.dtype.element_ty), mask=inside)
    tl.store(new_ptr + offs, new.to(new_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _sq_norms_kernel(
    s_ptr,
    z_ptr,
    key_ptr,
    out_s_ptr,
    out_z_ptr,
    B,
    D,
    C,
    HW,
    NBLOCKS,
    NOISE: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
):
    rows, cols, offs = _tile(D, ROWS, COLS)
    inside = (rows < B) & (cols < D)
    s = tl.load(s_ptr + offs, mask=inside, other=0.0).to(out_s_ptr.dtype.element_ty)
    z = _noise(z_ptr, key_ptr, offs, rows, cols, inside, C, HW, NOISE)
    z = tl.where(inside, z.to(out_z_ptr.dtype.element_ty), 0.0)
    out = rows * NBLOCKS + tl.program_id(1)
    tl.store(out_s_ptr + out, tl.sum(s * s, axis=1)[:, None], mask=rows < B)
    tl.store(out_z_ptr + out, tl.sum(z * z, axis=1)[:, None], mask=rows < B)


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
    B = x.shape[0]
    D = x.numel() // B
    z, k, C, HW, mode = _noise_args(x, noise, key, out_format)
    _affine_kernel[lambda meta: (triton.cdiv(B, meta["ROWS"]), triton.cdiv(D, meta["COLS"]))](
        x, score, z, k, a, b, c, new, mean, B, D, C, HW, NOISE=mode
    )
    return new, mean


def squared_norms(score, noise, key, acc, out_format):
    """(|score_b|^2, |z_b|^2), each [B] in `acc`, z = noise or drawn from key: block partial sums,
    added in a fixed order."""
    B = score.shape[0]
    D = score.numel() // B
    rows, cols = row_tile(D, BLOCK)
    grid = (triton.cdiv(B, rows), triton.cdiv(D, cols))
    parts_s = torch.empty((B, grid[1]), dtype=acc, device=score.device)
    parts_z = torch.empty((B, grid[1]), dtype=acc, device=score.device)
    z, k, C, HW, mode = _noise_args(score, noise, key, out_format)
    _sq_norms_kernel[grid](score, z, k, parts_s, parts_z, B, D, C, HW, grid[1], NOISE=mode, ROWS=rows, COLS=cols)
    return parts_s.sum(1), parts_z.sum(1)
