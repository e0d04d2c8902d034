"""Triton kernel of upfirdn2d: zero-insertion upsampling, padding, FIR filtering and downsampling in
one pass, with no upsampled or padded intermediate.

Output sample o of an axis reads the taps k = 0..K-1 at upsampled-and-padded position
o * DOWN + k, that is upsampled position i = o * DOWN + k - p0, which is an input sample (i / UP)
when 0 <= i < in * UP and UP divides i, and a zero otherwise; the filter is applied flipped (a true
convolution). Each program computes a block of the flattened outputs (n, c, y, x); taps, factors
and the separable form are compile-time constants, so each NCSN++ case (up 2, down 2, blur;
[1, 3, 3, 1]) is its own specialised kernel. Any strides (NCHW, channels_last) are followed;
arithmetic in float32 (float64 for float64 data). The backward is this kernel with up and down
swapped, the filter flipped and adjoint pads (fastsde/ops/upfirdn2d.py).
"""
import torch
import triton
import triton.language as tl

from ._tuning import autotune


# Outputs per program: on a GPU blocks that keep the taps' loads coalesced along rows, tuned per
# output size; under the interpreter, which runs programs one after another in Python, few large ones.
@autotune(gpu=[({"BLOCK": b}, w) for b in (256, 512, 1024) for w in (4, 8)], interpret=({"BLOCK": 8192}, 4),
          key=["total", "OW"])
@triton.jit
def _kernel(x_ptr, f_ptr, y_ptr, C, H, W, OH, OW, total, px0, py0,
            sxn, sxc, sxh, sxw, syn, syc, syh, syw,
            UP: tl.constexpr, DOWN: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
            SEPARABLE: tl.constexpr, BLOCK: tl.constexpr):
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = o < total
    ox = o % OW
    oy = (o // OW) % OH
    c = (o // (OW * OH)) % C
    n = o // (OW * OH * C)
    acc_t = f_ptr.dtype.element_ty
    x_base = x_ptr + n * sxn + c * sxc
    acc = tl.zeros((BLOCK,), acc_t)
    for ky in tl.static_range(KH):
        iy = oy * DOWN + ky - py0
        row_ok = (iy >= 0) & (iy < H * UP) & (iy % UP == 0)
        for kx in tl.static_range(KW):
            ix = ox * DOWN + kx - px0
            ok = inside & row_ok & (ix >= 0) & (ix < W * UP) & (ix % UP == 0)
            if SEPARABLE:
                tap = tl.load(f_ptr + (KH - 1 - ky)) * tl.load(f_ptr + (KW - 1 - kx))
            else:
                tap = tl.load(f_ptr + (KH - 1 - ky) * KW + (KW - 1 - kx))
            # Clamped indices keep masked lanes' addresses inside the tensor.
            v = tl.load(x_base + (tl.maximum(iy, 0) // UP) * sxh + (tl.maximum(ix, 0) // UP) * sxw, mask=ok, other=0.0)
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
    total = y.numel()
    _kernel[lambda meta: (triton.cdiv(total, meta["BLOCK"]),)](
        x, f.to(acc_dtype).contiguous(), y, C, H, W, out_h, out_w, total, pad[0], pad[2], *x.stride(),
        *y.stride(), UP=up, DOWN=down, KH=kh, KW=kw, SEPARABLE=separable)
    return y
