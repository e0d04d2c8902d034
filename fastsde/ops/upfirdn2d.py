"""upfirdn2d: upsample by zero insertion, pad, FIR-filter, downsample (the FIR resampling of NCSN++).

Semantics of the official score_sde op (from StyleGAN2): (1) insert up-1 zeros after every sample
along H and W, (2) pad by (x0, x1, y0, y1) samples, a negative pad crops, (3) a true 2-D convolution
with the filter (flipped, then correlated), 'valid', per channel, (4) keep every down-th sample.
Output extent per axis: (in*up + p0 + p1 - k) // down + 1.
"""

from typing import List

import torch
import torch.nn.functional as F

from . import _backend
from ._common import FLOATS, acc_dtype, call, check_tensor, describe, output_format, register_autograd


def upfirdn2d_reference(x, f, up, down, pad):
    """The specification. x: [N, C, H, W]; f: [kh, kw], or [k] for outer(k, k); pad: (x0, x1, y0, y1).
    Computes in float32 (float64 for float64 x) and returns x's dtype."""
    acc = acc_dtype(x)
    f = f.to(acc)
    f = torch.outer(f, f) if f.dim() == 1 else f
    x0, x1, y0, y1 = pad
    N, C, H, W = x.shape
    u = x.new_zeros(N, C, H * up, W * up, dtype=acc)
    u[:, :, ::up, ::up] = x
    u = F.pad(u, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    u = u[:, :, max(-y0, 0) : u.shape[2] - max(-y1, 0), max(-x0, 0) : u.shape[3] - max(-x1, 0)]
    w = f.flip([0, 1])[None, None].expand(C, 1, -1, -1)
    y = F.conv2d(u, w, stride=down, groups=C)  # only the kept samples: [::down, ::down] of stride 1
    return y.to(x.dtype).contiguous(memory_format=output_format(x))


def _out_size(n, up, down, p0, p1, k):
    return (n * up + p0 + p1 - k) // down + 1


def _check(x, f, up, down, pad):
    check_tensor("upfirdn2d", "x", x, "[N, C, H, W]", FLOATS, what="a non-empty tensor")
    if not isinstance(f, torch.Tensor) or f.dim() not in (1, 2):
        raise ValueError(f"upfirdn2d: kernel must be a tensor of shape [k] (separable) or [kh, kw]; got {describe(f)}")
    check_tensor(
        "upfirdn2d", "kernel", f, "[k]" if f.dim() == 1 else "[kh, kw]", FLOATS, x.device, what="a non-empty tensor"
    )
    for name, v in (("up", up), ("down", down)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"upfirdn2d: {name} must be an integer >= 1, got {v!r}")
    oh = _out_size(x.shape[2], up, down, pad[2], pad[3], f.shape[0])
    ow = _out_size(x.shape[3], up, down, pad[0], pad[1], f.shape[-1])
    if oh < 1 or ow < 1:
        raise ValueError(
            f"upfirdn2d: pad {list(pad)} with up={up}, down={down} and a "
            f"{f.shape[0]}x{f.shape[-1]} kernel leaves an empty output for a "
            f"{x.shape[2]}x{x.shape[3]} input"
        )
    return oh, ow


def _parse_pad(pad):
    pad = tuple(pad)
    if len(pad) == 2:
        pad = (pad[0], pad[1], pad[0], pad[1])
    if len(pad) != 4 or not all(isinstance(p, int) for p in pad):
        raise ValueError(f"upfirdn2d: pad must be (p0, p1) or (x0, x1, y0, y1) integers, got {pad!r}")
    return pad


def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0), backend=None):
    """Upsample, FIR-filter and downsample a batch of images, differentiably in x.

    x: [N, C, H, W] float tensor (NCHW or channels_last). kernel: [kh, kw], or [k] for the separable
    filter outer(k, k) (faster); used as given (no normalisation, no gain). pad: (p0, p1) for both axes or
    (x0, x1, y0, y1). Returns [N, C, (H*up + y0 + y1 - kh)//down + 1, (W*up + x0 + x1 - kw)//down + 1].
    """
    pad = _parse_pad(pad)
    _check(x, kernel, up, down, pad)
    name = _backend.resolve(backend, x.device)
    if name == "reference":
        return upfirdn2d_reference(x, kernel, up, down, pad)
    return call(_OPS[name].upfirdn2d, x, kernel, up, down, list(pad))


def _adjoint_pad(x_shape, y_shape, f_shape, up, down, pad):
    # The gradient is upfirdn2d of the output gradient with up and down swapped, the filter flipped
    # and these pads, per axis: (k - p0 - 1, in*up - out*down + p0 - up + 1).
    (H, W), (OH, OW), kh, kw = x_shape[2:], y_shape[2:], f_shape[0], f_shape[-1]
    x0, _, y0, _ = pad
    return [kw - x0 - 1, W * up - OW * down + x0 - up + 1, kh - y0 - 1, H * up - OH * down + y0 - up + 1]


def _fake(x, kernel, up, down, pad):
    torch._check(x.dim() == 4 and kernel.dim() in (1, 2), lambda: "upfirdn2d: x must be 4-D and kernel 1-D or 2-D")
    oh = _out_size(x.shape[2], up, down, pad[2], pad[3], kernel.shape[0])
    ow = _out_size(x.shape[3], up, down, pad[0], pad[1], kernel.shape[-1])
    return x.new_empty(x.shape[0], x.shape[1], oh, ow).contiguous(memory_format=output_format(x))


def _setup_context(ctx, inputs, output):
    x, kernel, up, down, pad = inputs
    ctx.save_for_backward(kernel)
    ctx.args = (x.shape, output.shape, up, down, pad)


def _register(namespace):
    """Fake kernel and autograd for namespace::upfirdn2d, whose backward is a call of the op itself
    (so double backward comes for free)."""
    op = getattr(torch.ops, namespace).upfirdn2d

    def backward(ctx, grad):
        (kernel,) = ctx.saved_tensors
        x_shape, y_shape, up, down, pad = ctx.args
        gpad = _adjoint_pad(x_shape, y_shape, kernel.shape, up, down, pad)
        return call(op, grad, kernel.flip(list(range(kernel.dim()))), down, up, gpad), None, None, None, None

    torch.library.register_fake(f"{namespace}::upfirdn2d")(_fake)
    register_autograd(op, backward, _setup_context)


_OPS = {}  # backend -> the namespace of its ops
if _backend._C is not None:
    _register("fastsde")
    _OPS["cpp"] = _OPS["cuda"] = torch.ops.fastsde

_triton = _backend.triton_kernels("upfirdn2d")
if _triton is not None:

    @torch.library.custom_op("fastsde_triton::upfirdn2d", mutates_args=())
    def _triton_upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int, down: int, pad: List[int]) -> torch.Tensor:
        oh = _out_size(x.shape[2], up, down, pad[2], pad[3], kernel.shape[0])
        ow = _out_size(x.shape[3], up, down, pad[0], pad[1], kernel.shape[-1])
        return _triton.upfirdn2d(
            x, kernel, up, down, pad, oh, ow, output_format(x) == torch.channels_last, acc_dtype(x)
        )

    _register("fastsde_triton")
    _OPS["triton"] = torch.ops.fastsde_triton
