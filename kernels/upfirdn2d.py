"""Triton kernel of upfirdn2d: upsampling, padding, FIR filtering and downsampling in one pass.

How it works, and why: docs/ops.md, "How the Triton kernels work".
"""

import torch
import triton
import triton.language as tl

from ._tuning import autotune, row_tile

MAX_COLS = 128  # a tile's columns at most; the rows fill the rest of BLOCK
INDEX32_LIMIT = 2**31 - 2**14  # offsets (and rows, which a last tile overshoots) below it: 32-bit indices


def _tuned(fn):
    """Outputs per program (BLOCK) tuned per output size on a GPU; under the interpreter, which runs
    programs one after another in Python, few large ones. The tile's shape follows."""
    shape = lambda a: row_tile(a["NCOLS"], a["BLOCK"], MAX_COLS)  # noqa: E731
    tiles = triton.heuristics({"ROWS": lambda a: shape(a)[0], "COLS": lambda a: shape(a)[1]})(fn)
    return autotune(
        gpu=[({"BLOCK": b}, w) for b in (256, 512, 1024) for w in (4, 8)],
        interpret=({"BLOCK": 8192}, 4),
        key=["NROWS", "NCOLS", "OW", "UP", "DOWN", "CHANNELS_LAST"],
    )(tiles)


@triton.jit
def _phase(o, p0, UP: tl.constexpr, DOWN: tl.constexpr):
    """(k0, i0) of outputs o along an axis: the first tap that meets an input sample, and that sample."""
    b = o * DOWN - p0
    if UP == 1:
        return tl.zeros_like(b), b
    k0 = ((-b) % UP + UP) % UP  # the same under C's remainder (GPU) and NumPy's (interpreter)
    return k0, (b + k0) // UP  # an exact division


@triton.jit
def _tap(f_ptr, ky, kx, KH: tl.constexpr, KW: tl.constexpr, SEPARABLE: tl.constexpr):
    """The flipped filter's tap (ky, kx). Indices past the filter (a phase's missing taps, whose
    input is masked to zero) are clamped to its first tap; unmasked, a tap that is the same for
    every lane (no upsampling) is one load."""
    fy, fx = tl.maximum(KH - 1 - ky, 0), tl.maximum(KW - 1 - kx, 0)
    if SEPARABLE:
        return tl.load(f_ptr + fy) * tl.load(f_ptr + fx)
    return tl.load(f_ptr + fy * KW + fx)


@_tuned
@triton.jit
def _kernel(
    x_ptr,
    f_ptr,
    y_ptr,
    C,
    H,
    W,
    OH,
    OW,
    NROWS,
    NCOLS,
    px0,
    py0,
    sxn,
    sxc,
    sxh,
    sxw,
    syn,
    syc,
    syh,
    syw,
    UP: tl.constexpr,
    DOWN: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    SEPARABLE: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    INDEX64: tl.constexpr,
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
):
    pid = tl.program_id(0)
    col_blocks = tl.cdiv(NCOLS, COLS)
    row_block = pid // col_blocks
    if INDEX64:
        row_block = row_block.to(tl.int64)
    r = row_block * ROWS + tl.arange(0, ROWS)[:, None]
    q = pid % col_blocks * COLS + tl.arange(0, COLS)[None, :]
    if CHANNELS_LAST:
        ox = r % OW
        oy = r // OW % OH
        n = r // OW // OH
        c = q
    else:
        oy = r % OH
        c = r // OH % C
        n = r // OH // C
        ox = q
    inside = (r < NROWS) & (q < NCOLS)
    acc_t = f_ptr.dtype.element_ty
    x_base = x_ptr + n * sxn + c * sxc
    ky0, iy0 = _phase(oy, py0, UP, DOWN)
    kx0, ix0 = _phase(ox, px0, UP, DOWN)
    acc = tl.zeros((ROWS, COLS), acc_t)
    for jy in tl.static_range((KH + UP - 1) // UP):
        ky, iy = ky0 + jy * UP, iy0 + jy
        row_ok = (ky < KH) & (iy >= 0) & (iy < H)
        for jx in tl.static_range((KW + UP - 1) // UP):
            kx, ix = kx0 + jx * UP, ix0 + jx
            ok = row_ok & (kx < KW) & (ix >= 0) & (ix < W)
            tap = _tap(f_ptr, ky, kx, KH, KW, SEPARABLE)
            # Clamped indices keep masked lanes' addresses inside the tensor.
            v = tl.load(x_base + tl.maximum(iy, 0) * sxh + tl.maximum(ix, 0) * sxw, mask=ok & inside, other=0.0)
            acc += v.to(acc_t) * tap
    tl.store(y_ptr + n * syn + c * syc + oy * syh + ox * syw, acc.to(y_ptr.dtype.element_ty), mask=inside)


def upfirdn2d(x, f, up, down, pad, out_h, out_w, channels_last, acc_dtype):
    """y [N, C, out_h, out_w] in x's layout. x: [N, C, H, W]; f: [k] (separable) or [kh, kw];
    pad: (x0, x1, y0, y1)."""
    N, C, H, W = x.shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty((N, C, out_h, out_w), device=x.device, dtype=x.dtype, memory_format=fmt)
    separable = f.dim() == 1
    kh, kw = (f.shape[0], f.shape[0]) if separable else tuple(f.shape)
    rows, cols = (N * out_h * out_w, C) if channels_last else (N * C * out_h, out_w)
    x_span = 1 + sum((size - 1) * stride for size, stride in zip(x.shape, x.stride()))
    _kernel[lambda meta: (triton.cdiv(rows, meta["ROWS"]) * triton.cdiv(cols, meta["COLS"]),)](
        x,
        f.to(acc_dtype).contiguous(),
        y,
        C,
        H,
        W,
        out_h,
        out_w,
        rows,
        cols,
        pad[0],
        pad[2],
        *x.stride(),
        *y.stride(),
        UP=up,
        DOWN=down,
        KH=kh,
        KW=kw,
        SEPARABLE=separable,
        CHANNELS_LAST=channels_last,
        INDEX64=max(x_span, y.numel()) >= INDEX32_LIMIT,
    )
    return y
