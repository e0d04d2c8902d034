"""The compiled extension: it loads, and registers a kernel per op for each device it was built for.
CI runs this file against the CUDA build too (no GPU needed to check registrations)."""

import os
import runpy
import subprocess
import sys

import pytest
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


def test_extension_built_against_another_torch_is_not_used():
    """torch keeps no C++ ABI across releases, so an extension that still loads under another torch is
    left unused, with a reason that names both versions, and `auto` falls back with a warning."""
    code = """if True:
        import warnings, torch
        torch.__version__ = "2.99.0"
        from fastsde import ops
        x = torch.randn(2, 8, 4, 4)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = ops.group_norm(x, 4)
        assert torch.allclose(y, torch.nn.functional.group_norm(x, 4, eps=1e-6), atol=1e-5)
        print(*ops.available_backends("cpu"))
        print(ops.unavailable_reason("cpp", "cpu"))
        print(*[w.message for w in caught], sep="\\n")
    """
    env = {k: v for k, v in os.environ.items() if k != "FASTSDE_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    available, reason, warned = out.splitlines()[:3]
    assert "cpp" not in available.split() and "reference" in available.split()
    built = ops.build_info()["torch_version"]
    assert f"built against torch {built} but torch 2.99.0 is installed" in reason
    assert "using the reference backend on cpu: cpp is not available" in warned and reason in warned
    assert "cpp" in ops.available_backends("cpu")  # under the torch it was built against, it runs


SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


def built_by_setup(monkeypatch, tmp_path, flag, torch_cuda, nvcc_says):
    """The extension setup.py makes, with FASTSDE_BUILD_CUDA=flag (None: unset), a torch built with
    CUDA `torch_cuda` (None: a CPU build) and a toolkit whose nvcc prints `nvcc_says`."""
    import setuptools
    import torch.utils.cpp_extension as cpp

    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir(exist_ok=True)
    nvcc.write_text(f"#!/bin/sh\necho '{nvcc_says}'\n")
    nvcc.chmod(0o755)
    monkeypatch.setattr(cpp, "CUDA_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")  # (setup.py sets a default in the environment)
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    if flag is None:
        monkeypatch.delenv("FASTSDE_BUILD_CUDA", raising=False)
    else:
        monkeypatch.setenv("FASTSDE_BUILD_CUDA", flag)
    made = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: made.update(kwargs))
    monkeypatch.chdir(os.path.dirname(SETUP))
    runpy.run_path(SETUP)
    (ext,) = made["ext_modules"]
    return any(s.endswith(".cu") for s in ext.sources)


def test_setup_builds_cuda_only_with_a_toolkit_of_torchs_major_version(monkeypatch, tmp_path):
    release = "Cuda compilation tools, release {}, V{}.1"
    assert built_by_setup(monkeypatch, tmp_path, None, "13.0", release.format("13.0", "13.0"))
    assert built_by_setup(monkeypatch, tmp_path, None, "12.8", release.format("12.4", "12.4"))
    # Another major version: torch's build would refuse it; without the CUDA kernels, with a warning.
    with pytest.warns(UserWarning, match=r"toolkit at .* is 13\.0, torch .* was built with CUDA 12\.8"):
        assert not built_by_setup(monkeypatch, tmp_path, None, "12.8", release.format("13.0", "13.0"))
    with pytest.warns(UserWarning, match="of unknown version"):
        assert not built_by_setup(monkeypatch, tmp_path, None, "13.0", "no version here")
    assert not built_by_setup(monkeypatch, tmp_path, None, None, release.format("13.0", "13.0"))  # CPU torch
    assert not built_by_setup(monkeypatch, tmp_path, "0", "13.0", release.format("13.0", "13.0"))
    # Asked for: built whatever the toolkit says (torch's own check decides), refused with a CPU torch.
    assert built_by_setup(monkeypatch, tmp_path, "1", "12.8", release.format("13.0", "13.0"))
    with pytest.raises(SystemExit, match="CPU-only build"):
        built_by_setup(monkeypatch, tmp_path, "1", None, release.format("13.0", "13.0"))
