"""The op layer's contract: backend choice, and clear errors for bad input from every backend alike."""
import os
import subprocess
import sys
import warnings

import pytest
import torch

from fastsde import ops
from fastsde.ops import _backend

CPU_BACKENDS = ["reference", "cpp"]


def test_available_backends():
    names = ops.available_backends()
    assert "reference" in names and "cpp" in names
    assert ops.available_backends("cpu")[:2] == ["reference", "cpp"]
    for name in ops.BACKENDS:
        if name not in names:
            assert ops.unavailable_reason(name)  # every missing backend says why


def test_unknown_backend_lists_known():
    with pytest.raises(ValueError, match="reference, cpp, triton, cuda"):
        ops.group_norm(torch.randn(2, 4, 3, 3), 2, backend="fast")


def test_unavailable_backend_says_why():
    # On a CPU tensor the cuda backend is unavailable on any machine (and says why).
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available: .+"):
        ops.upfirdn2d(torch.randn(1, 1, 4, 4), torch.ones(2), backend="cuda")


def test_cpp_backend_rejects_meta_tensors():
    with pytest.raises(RuntimeError, match="cpp backend runs on CPU tensors only"):
        ops.group_norm(torch.empty(2, 4, 3, 3, device="meta"), 2, backend="cpp")


def test_env_var_selects_backend(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.ops.fastsde, "group_norm", lambda *a: calls.append(a) or (a[0],))
    monkeypatch.setenv("FASTSDE_BACKEND", "reference")
    ops.group_norm(torch.randn(2, 4, 3, 3), 2)
    assert not calls
    monkeypatch.setenv("FASTSDE_BACKEND", "cpp")
    ops.group_norm(torch.randn(2, 4, 3, 3), 2)
    assert len(calls) == 1


def test_auto_falls_back_with_a_single_warning(monkeypatch):
    real = _backend.unavailable_reason
    monkeypatch.setattr(_backend, "unavailable_reason",
                        lambda b, d=None: "pretend it is missing" if b == "cpp" else real(b, d))
    monkeypatch.setattr(_backend, "_warned", set())
    x = torch.randn(2, 4, 3, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops.group_norm(x, 2, backend="auto")
        ops.group_norm(x, 2, backend="auto")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "using the reference backend" in messages[0]
    assert "pretend it is missing" in messages[0]


# (call, exception, words the message must contain). Each runs on every CPU backend.
x4 = torch.randn(2, 4, 5, 5)
BAD = [
    (lambda b: ops.upfirdn2d(torch.randn(4, 5, 5), torch.ones(2), backend=b), ValueError, "x must be a 4-D"),
    (lambda b: ops.upfirdn2d(x4.int(), torch.ones(2), backend=b), TypeError, "x must be float"),
    (lambda b: ops.upfirdn2d(x4[:0], torch.ones(2), backend=b), ValueError, "x must not be empty"),
    (lambda b: ops.upfirdn2d(x4, torch.ones(2, 2, 2), backend=b), ValueError, "kernel must be a 1-D"),
    (lambda b: ops.upfirdn2d(x4, torch.ones(0), backend=b), ValueError, "kernel must be a non-empty"),
    (lambda b: ops.upfirdn2d(x4, torch.ones(2, device="meta"), backend=b), ValueError, "kernel must be on the same device"),
    (lambda b: ops.upfirdn2d(x4, torch.ones(2), up=0, backend=b), ValueError, "up must be an integer >= 1"),
    (lambda b: ops.upfirdn2d(x4, torch.ones(2), down=1.5, backend=b), ValueError, "down must be an integer"),
    (lambda b: ops.upfirdn2d(x4, torch.ones(2), pad=(1, 2, 3), backend=b), ValueError, "pad must be"),
    (lambda b: ops.upfirdn2d(x4, torch.ones(4), pad=(-3, -3), backend=b), ValueError, "empty output"),
    (lambda b: ops.group_norm(torch.randn(4), 2, backend=b), ValueError, "at least 2 dims"),
    (lambda b: ops.group_norm(x4.long(), 2, backend=b), TypeError, "x must be float"),
    (lambda b: ops.group_norm(x4, 0, backend=b), ValueError, "num_groups (0) must be a positive"),
    (lambda b: ops.group_norm(x4[:0], 2, backend=b), ValueError, "x must not be empty"),
    (lambda b: ops.group_norm(x4, 3, backend=b), ValueError, "divides the number of channels (4)"),
    (lambda b: ops.group_norm(x4, 2, torch.ones(5), backend=b), ValueError, "weight must have shape [4]"),
    (lambda b: ops.group_norm(x4, 2, None, torch.ones(4).double(), backend=b), TypeError, "bias must have the dtype"),
    (lambda b: ops.group_norm(x4, 2, torch.ones(4, device="meta"), backend=b), ValueError, "weight must be on the same device"),
    (lambda b: ops.group_norm(x4, 2, act="relu", backend=b), ValueError, "act must be None or 'silu'"),
    (lambda b: ops.group_norm(x4, 2, offset=torch.ones(2, 4, 1, 1), backend=b), ValueError, "offset must have shape [2, 4]"),
    (lambda b: ops.group_norm(x4, 2, offset=torch.ones(2, 4).double(), backend=b), TypeError, "offset must have the dtype"),
    (lambda b: ops.group_norm(x4, 2, offset=torch.ones(2, 4, device="meta"), backend=b), ValueError,
     "offset must be on the same device"),
    (lambda b: ops.predictor_step(x4, x4[:1], 1, 1, backend=b), ValueError, "score must have the shape of x"),
    (lambda b: ops.predictor_step(x4, x4.double(), 1, 1, backend=b), TypeError, "score must have the dtype"),
    (lambda b: ops.predictor_step(x4, x4, torch.ones(3), 1, backend=b), ValueError, "a must be a float tensor of shape [2]"),
    (lambda b: ops.predictor_step(x4, x4, 1, 1, 1, noise=x4[:, :2], backend=b), ValueError, "noise must have the shape"),
    (lambda b: ops.predictor_step(x4.int(), x4.int(), 1, 1, backend=b), TypeError, "x must be a float tensor"),
    (lambda b: ops.langevin_step(x4, x4, torch.ones(2, device="meta"), 0.1, backend=b), ValueError, "alpha must be on the device"),
    (lambda b: ops.langevin_step(x4, x4, 1, 0.1, generator=[torch.Generator()], backend=b), ValueError, "1 per-sample generators for a batch of 2"),
]


@pytest.mark.parametrize("call,exc,words", BAD, ids=[b[2] for b in BAD])
def test_bad_input_same_error_from_every_backend(call, exc, words):
    messages = []
    # The Triton backend too, interpreted on the CPU.
    triton = ["triton"] if not torch.cuda.is_available() else []
    for b in CPU_BACKENDS + triton:
        with pytest.raises(exc) as info:
            call(b)
        messages.append(str(info.value))
    assert words in messages[0], messages[0]
    assert len(set(messages)) == 1, messages


@pytest.mark.parametrize("call,words", [
    (lambda: torch.ops.fastsde.upfirdn2d(torch.randn(4, 5, 5), torch.ones(2), 1, 1, [0, 0, 0, 0]), "x must be 4-D"),
    (lambda: torch.ops.fastsde.upfirdn2d(torch.randn(1, 1, 4, 4), torch.ones(2), 0, 1, [0, 0, 0, 0]), "up must be >= 1"),
    (lambda: torch.ops.fastsde.upfirdn2d(torch.randn(1, 1, 4, 4), torch.ones(4), 1, 1, [-3, -3, 0, 0]),
     "4x4 kernel leaves an empty output"),
    (lambda: torch.ops.fastsde.group_norm(torch.randn(2, 4, 3), 3, None, None, 1e-6, False), "num_groups (3)"),
    (lambda: torch.ops.fastsde.group_norm(torch.randn(2, 4, 3), 2, torch.ones(3), None, 1e-6, False), "weight must have shape [4]"),
    (lambda: torch.ops.fastsde.group_norm(torch.randn(2, 4, 3), 2, None, None, 1e-6, False, torch.ones(4)),
     "offset must have shape [2, 4]"),
    (lambda: torch.ops.fastsde.predictor_step(torch.randn(2, 3), torch.randn(2, 3), None, torch.ones(2),
                                              torch.ones(3), torch.ones(2)), "b must have shape [2]"),
    (lambda: torch.ops.fastsde.langevin_step(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 3),
                                             torch.ones(2), 0.1, False), "score must have the shape of x"),
])
def test_direct_op_calls_check_their_arguments(call, words):
    with pytest.raises(RuntimeError) as info:
        call()
    assert words in str(info.value)


def test_info_command_reports_backends():
    out = subprocess.run([sys.executable, "-m", "fastsde.info"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"}).stdout
    assert "extension fastsde._C: built against torch" in out
    for name in ops.BACKENDS:
        assert f"  {name} " in out
    assert "  cpp        available" in out
