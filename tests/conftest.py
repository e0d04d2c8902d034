"""Shared test helpers: the backends under test, dtype tolerances, and output poisoning."""

import importlib
import os

import pytest
import torch

# Without a GPU the Triton kernels run under the interpreter, which @triton.jit reads at import. On a
# GPU they run their first autotuning config only (kernels/_tuning.py; test_triton_configs.py runs
# every config): tuning would compile each config for each of the tests' hundreds of shapes.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    os.environ.setdefault("FASTSDE_TRITON_AUTOTUNE", "0")

# Under pytest-xdist (the README's `-n auto`) each worker is one process of several: one thread each,
# for torch and for the subprocesses that tests start, so that the workers do not oversubscribe the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

from fastsde.ops import _backend  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")  # checkpoints made by the official code

# (backend, device) pairs checked against the reference backend. The CUDA and Triton kernels run on
# the GPU (these tests are marked gpu; the device check script benchmarks/device_check.sh runs them),
# or, where there is none, on the CPU: the CUDA kernels in the host emulation of csrc/cuda/emulation.h
# ("cuda" on "cpu", see _emulated_cuda), the Triton kernels in Triton's interpreter.
GPU = torch.cuda.is_available()
KERNEL_BACKENDS = [
    pytest.param("cpp", "cpu", id="cpp"),
    pytest.param("cuda", "cuda", id="cuda", marks=pytest.mark.gpu)
    if GPU
    else pytest.param("cuda", "cpu", id="cuda-emulated"),
    pytest.param("triton", "cuda", id="triton", marks=pytest.mark.gpu)
    if GPU
    else pytest.param("triton", "cpu", id="triton-interpret"),
]
OP_MODULES = [importlib.import_module(f"fastsde.ops.{op}") for op in ("group_norm", "pc_update", "upfirdn2d")]


def ops_namespace(backend):
    """Where a backend's ops are registered (torch.ops.fastsde for cpp and cuda, torch.ops.fastsde_triton;
    torch.ops.fastsde_cuda_emu for the emulated CUDA kernels)."""
    return OP_MODULES[0]._OPS[backend]


@pytest.fixture(scope="session")
def emulated_cuda_ops():
    import cuda_emulation

    return cuda_emulation.load()


@pytest.fixture(autouse=True)
def _emulated_cuda(request, monkeypatch):
    """A test that runs the cuda backend on the CPU gets the emulated CUDA kernels behind it."""
    params = getattr(request.node, "callspec", None)
    params = params.params if params else {}
    if params.get("backend") != "cuda" or params.get("device") != "cpu":
        return
    emulated = request.getfixturevalue("emulated_cuda_ops")
    monkeypatch.setitem(_backend._reasons, ("cuda", "cpu"), None)
    for module in OP_MODULES:
        monkeypatch.setitem(module._OPS, "cuda", emulated)


TOL = {  # (rtol, atol) for outputs of O(1) magnitude
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def require(backend, device):
    """Fail unless `backend` runs on `device`: every backend under test must be built and working
    wherever its device exists (GPU tests are deselected on machines without one)."""
    reason = _backend.unavailable_reason(backend, device)
    if reason:
        pytest.fail(f"backend {backend} is not available on {device}: {reason}")


def poison(like):
    """Fill and free a block of NaN the size of `like` (the expected output) so that the op's output,
    allocated next, likely reuses it (the CPU allocator's free list, the CUDA caching allocator) and
    shows NaN wherever the kernel did not write."""
    block = torch.full((like.numel(),), float("nan"), dtype=like.dtype, device=like.device)
    del block


def laid_out(x, layout):
    """x in `layout`: "channels_last", or as it is ("nchw")."""
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def assert_close(actual, expected, dtype=None):
    rtol, atol = TOL[dtype or expected.dtype]
    assert not torch.isnan(actual).any(), "NaN in the output (an element was not written?)"
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def assert_close_scaled(actual, expected, dtype=None):
    """assert_close relative to the size of `expected`: sums of many terms (parameter gradients, a
    group's statistics) carry errors that grow with it."""
    scale = expected.abs().max().clamp(min=1)
    assert_close(actual / scale, expected / scale, dtype)


def pytest_collection_modifyitems(config, items):
    """Without a CUDA device the GPU tests cannot run: deselect them (and say so) rather than skip."""
    if torch.cuda.is_available():
        return
    gpu = [item for item in items if "gpu" in item.keywords]
    if gpu:
        items[:] = [item for item in items if "gpu" not in item.keywords]
        config.hook.pytest_deselected(items=gpu)


def pytest_report_header(config):
    if not torch.cuda.is_available():
        return "no CUDA device: tests marked gpu are deselected (benchmarks/device_check.sh runs them)"
