"""The compiled extension: it loads, and registers a kernel per op for each device it was built for.
CI runs this file against the CUDA build too (no GPU needed to check registrations)."""
import torch

import fastsde._C  # noqa: F401
from fastsde import ops

OPS = ["upfirdn2d", "group_norm", "group_norm_backward", "predictor_step", "langevin_step"]


def has_kernel(op, key):
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"fastsde::{op}", key)


def test_cpu_kernels_registered():
    for op in OPS:
        assert has_kernel(op, "CPU"), op


def test_cuda_kernels_registered_when_built_with_cuda():
    built = ops.build_info()
    assert built["torch_version"] == torch.__version__
    for op in OPS:
        assert has_kernel(op, "CUDA") == built["cuda"], op
    if built["cuda"]:
        assert built["cuda_archs"]


def test_fake_kernels_registered():
    x = torch.empty(2, 8, 6, 6, device="meta")
    y = torch.ops.fastsde.upfirdn2d(x, torch.ones(4, device="meta"), 2, 1, [2, 1, 2, 1])
    assert y.shape == (2, 8, 12, 12)
    y, mean, rstd = torch.ops.fastsde.group_norm(x, 4, None, None, 1e-6, True)
    assert y.shape == x.shape and mean.shape == rstd.shape == (2, 4) and mean.dtype == torch.float32
