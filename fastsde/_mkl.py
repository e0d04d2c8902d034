"""A workaround for a race in oneMKL 2024.2, which torch's x86 CPU builds bundle
(pytorch/pytorch#188792, open): MKL picks each VML function's kernel (log, exp, sqrt, cos, ...)
at its first call, and when that first call runs on several intra-op threads at once, one thread
can run a low-accuracy kernel for its whole chunk (errors of ~1000 ulp; seen here in one process
of ten for a float32 log of 12,000 elements). Sample i must come out the same in every process,
so each function is called once on one element, on one thread, before anything else. It costs
about 2 ms of the 230 ms that  takes on two CPU cores, so it always runs."""

import torch

VML_FUNCTIONS = (
    torch.abs,
    torch.acos,
    torch.asin,
    torch.atan,
    torch.cos,
    torch.cosh,
    torch.erf,
    torch.erfc,
    torch.erfinv,
    torch.exp,
    torch.expm1,
    torch.lgamma,
    torch.log,
    torch.log10,
    torch.log1p,
    torch.log2,
    torch.rsqrt,
    torch.sin,
    torch.sinh,
    torch.sqrt,
    torch.tan,
    torch.tanh,
    torch.trunc,
)


def warm_vml():
    """Settles MKL's choice of kernel for each VML function in float32 and float64."""
    if not torch.backends.mkl.is_available():
        return
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype)
        for f in VML_FUNCTIONS:
            f(x)
