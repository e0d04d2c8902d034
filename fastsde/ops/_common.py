"""Rules shared by every op's reference and fake implementations (the C++ twins are in csrc/common.h)."""
import torch


def output_format(x):
    """Outputs are channels_last when x is (and is not also plain contiguous), else contiguous."""
    cl = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


def acc_dtype(x):
    """The dtype kernels accumulate in for x: float64 for float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def call(op, *args):
    """Calls a compiled op. When no argument needs a gradient, the call goes straight to the kernel,
    past the op's Python autograd wrapper, which costs more than a small kernel itself."""
    if torch.compiler.is_compiling() or (
            torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)):
        return op(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)
