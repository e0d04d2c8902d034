"""Rules shared by every op's reference and fake implementations (the C++ twins are in csrc/common.h)."""
import torch


def output_format(x):
    """Outputs are channels_last when x is (and is not also plain contiguous), else contiguous."""
    cl = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


def acc_dtype(x):
    """The dtype kernels accumulate in for x: float64 for float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
