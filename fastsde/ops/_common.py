"""Rules shared by every op's reference and fake implementations (the C++ twins are in csrc/common.h)."""

import torch


def output_format(x):
    """Outputs are channels_last when x is (and is not also plain contiguous), else contiguous."""
    cl = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)  # what the kernels compute in


def describe(v):
    """What was passed, as error messages name it."""
    if not isinstance(v, torch.Tensor):
        return f"a {type(v).__name__}"
    return f"shape [{', '.join(map(str, v.shape))}], dtype {str(v.dtype).removeprefix('torch.')}, on {v.device}"


def _has_shape(t, shape):
    if isinstance(shape, str):  # a layout: '[N, C, H, W]' is 4 dims, '[N, C, ...]' at least 2
        n = shape.count(",") + 1
        return t.numel() > 0 and (t.dim() >= n - 1 if shape.endswith("...]") else t.dim() == n)
    return t.shape == shape


def check_tensor(op, name, t, shape, dtype, device=None, what="a tensor"):
    """Raises unless t is a tensor of `shape` and `dtype` on `device`, with a message that names the
    op, the argument, what was expected and what was passed: TypeError for a wrong type or dtype, else
    ValueError. shape: sizes, or a layout such as '[N, C, ...]' (then any sizes, at least 2 dims, and
    not empty); dtype: one dtype, or a tuple of them (FLOATS); device: None for any. The C++ twins,
    check_tensor and check_input in csrc/common.h, say the same for direct torch.ops calls."""
    dtype_ok = isinstance(t, torch.Tensor) and (t.dtype in dtype if isinstance(dtype, tuple) else t.dtype == dtype)
    if dtype_ok and _has_shape(t, shape) and (device is None or t.device == device):
        return
    names = [str(d).removeprefix("torch.") for d in (dtype if isinstance(dtype, tuple) else (dtype,))]
    want = f"{what} of shape {shape if isinstance(shape, str) else list(shape)}, dtype "
    want += (", ".join(names[:-1]) + " or " if len(names) > 1 else "") + names[-1]
    want += "" if device is None else f", on {device}"
    raise (ValueError if dtype_ok else TypeError)(f"{op}: {name} must be {want}; got {describe(t)}")


def acc_dtype(x):
    """The dtype kernels accumulate in for x: float64 for float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


_EAGER = {}  # op (an OpOverloadPacket) -> the autograd.Function that call() applies for it


def register_autograd(op, backward, setup_context):
    """Registers backward / setup_context as the derivative of `op` (an OpOverloadPacket) with
    torch.library (for torch.ops calls and torch.compile), and keeps the same two functions as an
    autograd.Function that call() applies in eager mode: the wrapper torch.library generates
    spends some 20 us a call filling in default arguments from the schema, more than a small kernel
    (every call of a network that is differentiated: training, the likelihood's VJP)."""
    torch.library.register_autograd(op.default, backward, setup_context=setup_context)

    # (forward with ctx, not a separate setup_context, which apply() would answer with an
    # inspect.signature binding at every call.)
    def forward(ctx, *args):
        with torch._C._AutoDispatchBelowAutograd():
            output = op(*args)
        setup_context(ctx, args, output)
        return output

    # Named after the op (fastsde_group_norm, its node fastsde_group_normBackward in profiles).
    name = op._qualified_op_name.replace("::", "_")
    _EAGER[op] = type(
        name, (torch.autograd.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)}
    )


def call(op, *args):
    """Calls a compiled op with every argument given (no defaults left to fill in). When no argument
    needs a gradient, the call goes straight to the kernel, past autograd; when one does, through
    the op's derivative (register_autograd)."""
    # _AutoDispatchBelowAutograd is private API. The public path (the op's Autograd kernel, which
    # redispatches) costs 1.4x per op and 1.16-1.19x per network call at batch 1 on two CPU cores
    # (benchmarks/bench_dispatch.py, results/dispatch-cpu-2core.csv): kept.
    if torch.compiler.is_compiling():
        return op(*args)
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        return _EAGER[op].apply(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)
