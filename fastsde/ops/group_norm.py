"""GroupNorm with an optional fused SiLU and an optional per-(sample, channel) offset added to its
input, as NCSN++ / DDPM++ use it: act(GroupNorm(x)), and act(GroupNorm(h + Dense(temb))) where a
residual block adds the time embedding."""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import _backend
from ._common import FLOATS, acc_dtype, call, check_tensor, output_format, register_autograd

ACTS = (None, "silu")


def group_norm_reference(x, num_groups, weight, bias, eps, silu, offset=None):
    """The specification: x + offset (offset [N, C] or None), then torch's group_norm (statistics per
    (sample, group) over C/G channels and all positions, biased variance), then SiLU, in float32
    (float64 for float64 x); returns x's dtype. x: [N, C, ...]. What the official code runs (the
    addition, nn.GroupNorm, then the activation), so that the official loop's speed and memory are
    the official code's."""
    acc = acc_dtype(x)
    x_in = x.to(acc)
    if offset is not None:
        x_in = x_in + offset.to(acc).reshape(offset.shape + (1,) * (x.dim() - 2))
    y = F.group_norm(
        x_in, num_groups, None if weight is None else weight.to(acc), None if bias is None else bias.to(acc), eps
    )
    if silu:
        y = F.silu(y)
    return y.to(x.dtype).contiguous(memory_format=output_format(x))


def _check(x, num_groups, weight, bias, eps, act, offset):
    check_tensor("group_norm", "x", x, "[N, C, ...]", FLOATS, what="a non-empty tensor")
    C = x.shape[1]
    if not isinstance(num_groups, int) or num_groups < 1 or C % num_groups:
        raise ValueError(
            f"group_norm: num_groups ({num_groups!r}) must be a positive integer that "
            f"divides the number of channels ({C})"
        )
    for name, t, shape in (("weight", weight, (C,)), ("bias", bias, (C,)), ("offset", offset, (x.shape[0], C))):
        if t is not None:
            check_tensor("group_norm", name, t, shape, x.dtype, x.device)
    if not eps >= 0:  # NaN too
        raise ValueError(f"group_norm: eps must be a number >= 0, got {eps:g}")
    if act not in ACTS:
        raise ValueError(f"group_norm: act must be None or 'silu', got {act!r}")


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-6, act=None, offset=None, backend=None):
    """act(GroupNorm(x + offset)), differentiable in x, weight, bias and offset.

    x: [N, C, ...] float tensor (NCHW or channels_last); weight, bias: [C] of x's dtype or None;
    act: None or 'silu'; offset: [N, C] of x's dtype at any strides (read where it lies, no copy),
    added at every position before the statistics (the kernels never form x + offset), or None.
    Statistics accumulate in float32.
    Returns a tensor shaped like x.
    """
    _check(x, num_groups, weight, bias, eps, act, offset)
    silu = act == "silu"
    name = _backend.resolve(backend, x.device)
    if name == "reference":
        return group_norm_reference(x, num_groups, weight, bias, eps, silu, offset)
    return call(_OPS[name].group_norm, x, num_groups, weight, bias, float(eps), silu, offset)[0]


def _fake_forward(x, num_groups, weight, bias, eps, silu, offset=None):
    stats = x.new_empty(x.shape[0], num_groups, dtype=acc_dtype(x))
    return torch.empty_like(x, memory_format=output_format(x)), stats, torch.empty_like(stats)


def _fake_backward(grad_y, x, mean, rstd, weight, bias, silu, offset=None):
    C = x.shape[1]
    return torch.empty_like(x, memory_format=output_format(x)), x.new_empty(C), x.new_empty(C)


def _setup_context(ctx, inputs, output):
    x, num_groups, weight, bias, eps, silu, *rest = inputs
    offset = rest[0] if rest else None
    _, mean, rstd = output
    ctx.save_for_backward(x, mean, rstd, weight, bias, offset)
    ctx.silu = silu
    ctx.mark_non_differentiable(mean, rstd)


def _register(namespace):
    """Fake kernels and autograd for namespace::group_norm, whose backward is namespace::group_norm_backward."""
    ops_ = getattr(torch.ops, namespace)

    def backward(ctx, grad_y, _grad_mean, _grad_rstd):
        x, mean, rstd, weight, bias, offset = ctx.saved_tensors
        needs = ctx.needs_input_grad + (False,) * (7 - len(ctx.needs_input_grad))  # (offset may be left out)
        dx, dw, db = ops_.group_norm_backward(grad_y, x, mean, rstd, weight, bias, ctx.silu, offset)
        # dx is also the gradient of x + offset: the offset's sums it over the positions.
        d_offset = dx.reshape(*dx.shape[:2], -1).sum(2) if needs[6] else None
        return dx, None, dw if needs[2] else None, db if needs[3] else None, None, None, d_offset

    torch.library.register_fake(f"{namespace}::group_norm")(_fake_forward)
    torch.library.register_fake(f"{namespace}::group_norm_backward")(_fake_backward)
    register_autograd(ops_.group_norm, backward, _setup_context)


_OPS = {}  # backend -> the namespace of its ops
if _backend._C is not None:
    _register("fastsde")
    _OPS["cpp"] = _OPS["cuda"] = torch.ops.fastsde

_triton = _backend.triton_kernels("group_norm")
if _triton is not None:

    def _dense(t, fmt):
        return None if t is None else t.contiguous(memory_format=fmt)

    @torch.library.custom_op("fastsde_triton::group_norm", mutates_args=())
    def _triton_group_norm(
        x: torch.Tensor,
        num_groups: int,
        weight: Optional[torch.Tensor],
        bias: Optional[torch.Tensor],
        eps: float,
        silu: bool,
        offset: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmt, dense = output_format(x), torch.contiguous_format
        return _triton.forward(
            _dense(x, fmt),
            num_groups,
            _dense(weight, dense),
            _dense(bias, dense),
            eps,
            silu,
            fmt == torch.channels_last,
            acc_dtype(x),
            offset,
        )

    @torch.library.custom_op("fastsde_triton::group_norm_backward", mutates_args=())
    def _triton_group_norm_backward(
        grad_y: torch.Tensor,
        x: torch.Tensor,
        mean: torch.Tensor,
        rstd: torch.Tensor,
        weight: Optional[torch.Tensor],
        bias: Optional[torch.Tensor],
        silu: bool,
        offset: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmt, dense = output_format(x), torch.contiguous_format
        return _triton.backward(
            _dense(grad_y, fmt),
            _dense(x, fmt),
            mean.contiguous(),
            rstd.contiguous(),
            _dense(weight, dense),
            _dense(bias, dense),
            silu,
            fmt == torch.channels_last,
            offset,
        )

    _register("fastsde_triton")
    _OPS["triton"] = torch.ops.fastsde_triton
