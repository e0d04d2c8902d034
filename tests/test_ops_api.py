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
    monkeypatch.setattr(
        _backend, "unavailable_reason", lambda b, d=None: "pretend it is missing" if b == "cpp" else real(b, d)
    )
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
FLOATS = "dtype float32, float64, float16 or bfloat16"
BAD = [
    (
        lambda b: ops.upfirdn2d(torch.randn(4, 5, 5), torch.ones(2), backend=b),
        ValueError,
        f"upfirdn2d: x must be a non-empty tensor of shape [N, C, H, W], {FLOATS}; "
        "got shape [4, 5, 5], dtype float32, on cpu",
    ),
    (
        lambda b: ops.upfirdn2d(x4.int(), torch.ones(2), backend=b),
        TypeError,
        "got shape [2, 4, 5, 5], dtype int32, on cpu",
    ),
    (
        lambda b: ops.upfirdn2d(x4.tolist(), torch.ones(2), backend=b),
        TypeError,
        f"x must be a non-empty tensor of shape [N, C, H, W], {FLOATS}; got a list",
    ),
    (
        lambda b: ops.upfirdn2d(x4[:0], torch.ones(2), backend=b),
        ValueError,
        f"x must be a non-empty tensor of shape [N, C, H, W], {FLOATS}; got shape [0, 4, 5, 5]",
    ),
    (
        lambda b: ops.upfirdn2d(x4, torch.ones(2, 2, 2), backend=b),
        ValueError,
        "kernel must be a tensor of shape [k] (separable) or [kh, kw]; got shape [2, 2, 2]",
    ),
    (
        lambda b: ops.upfirdn2d(x4, torch.ones(0), backend=b),
        ValueError,
        f"kernel must be a non-empty tensor of shape [k], {FLOATS}, on cpu; got shape [0]",
    ),
    (
        lambda b: ops.upfirdn2d(x4, torch.ones(2, 2).long(), backend=b),
        TypeError,
        f"kernel must be a non-empty tensor of shape [kh, kw], {FLOATS}, on cpu; got shape [2, 2], dtype int64",
    ),
    (
        lambda b: ops.upfirdn2d(x4, torch.ones(2, device="meta"), backend=b),
        ValueError,
        f"kernel must be a non-empty tensor of shape [k], {FLOATS}, on cpu; got shape [2], dtype float32, on meta",
    ),
    (lambda b: ops.upfirdn2d(x4, torch.ones(2), up=0, backend=b), ValueError, "up must be an integer >= 1, got 0"),
    (
        lambda b: ops.upfirdn2d(x4, torch.ones(2), down=1.5, backend=b),
        ValueError,
        "down must be an integer >= 1, got 1.5",
    ),
    (lambda b: ops.upfirdn2d(x4, torch.ones(2), pad=(1, 2, 3), backend=b), ValueError, "pad must be"),
    (
        lambda b: ops.upfirdn2d(x4, torch.ones(4), pad=(-3, -3), backend=b),
        ValueError,
        "pad [-3, -3, -3, -3] with up=1, down=1 and a 4x4 kernel leaves an empty output for a 5x5 input",
    ),
    (
        lambda b: ops.group_norm(torch.randn(4), 2, backend=b),
        ValueError,
        f"group_norm: x must be a non-empty tensor of shape [N, C, ...], {FLOATS}; got shape [4]",
    ),
    (
        lambda b: ops.group_norm(x4.long(), 2, backend=b),
        TypeError,
        f"x must be a non-empty tensor of shape [N, C, ...], {FLOATS}; got shape [2, 4, 5, 5], dtype int64",
    ),
    (
        lambda b: ops.group_norm(x4.to(torch.float8_e4m3fn), 2, backend=b),
        TypeError,
        "got shape [2, 4, 5, 5], dtype float8_e4m3fn, on cpu",
    ),
    (lambda b: ops.group_norm(x4, 0, backend=b), ValueError, "num_groups (0) must be a positive"),
    (lambda b: ops.group_norm(x4[:0], 2, backend=b), ValueError, "x must be a non-empty tensor"),
    (lambda b: ops.group_norm(x4, 3, backend=b), ValueError, "divides the number of channels (4)"),
    (
        lambda b: ops.group_norm(x4, 2, torch.ones(5), backend=b),
        ValueError,
        "weight must be a tensor of shape [4], dtype float32, on cpu; got shape [5], dtype float32, on cpu",
    ),
    (
        lambda b: ops.group_norm(x4, 2, None, torch.ones(4).double(), backend=b),
        TypeError,
        "bias must be a tensor of shape [4], dtype float32, on cpu; got shape [4], dtype float64",
    ),
    (
        lambda b: ops.group_norm(x4, 2, torch.ones(4, device="meta"), backend=b),
        ValueError,
        "weight must be a tensor of shape [4], dtype float32, on cpu; got shape [4], dtype float32, on meta",
    ),
    (lambda b: ops.group_norm(x4, 2, act="relu", backend=b), ValueError, "act must be None or 'silu'"),
    (
        lambda b: ops.group_norm(x4, 2, eps=-1e-5, backend=b),
        ValueError,
        "group_norm: eps must be a number >= 0, got -1e-05",
    ),
    (
        lambda b: ops.group_norm(x4, 2, offset=torch.ones(2, 4, 1, 1), backend=b),
        ValueError,
        "offset must be a tensor of shape [2, 4], dtype float32, on cpu; got shape [2, 4, 1, 1]",
    ),
    (
        lambda b: ops.group_norm(x4, 2, offset=torch.ones(2, 4).double(), backend=b),
        TypeError,
        "offset must be a tensor of shape [2, 4], dtype float32, on cpu; got shape [2, 4], dtype float64",
    ),
    (
        lambda b: ops.group_norm(x4, 2, offset=torch.ones(2, 4, device="meta"), backend=b),
        ValueError,
        "offset must be a tensor of shape [2, 4], dtype float32, on cpu; got shape [2, 4], dtype float32, on meta",
    ),
    (
        lambda b: ops.predictor_step(x4, x4[:1], 1, 1, backend=b),
        ValueError,
        "predictor_step: score must be a tensor of shape [2, 4, 5, 5], dtype float32, on cpu; got shape [1, 4, 5, 5]",
    ),
    (
        lambda b: ops.predictor_step(x4, x4.double(), 1, 1, backend=b),
        TypeError,
        "score must be a tensor of shape [2, 4, 5, 5], dtype float32, on cpu; got shape [2, 4, 5, 5], dtype float64",
    ),
    (
        lambda b: ops.predictor_step(x4, x4, torch.ones(3), 1, backend=b),
        ValueError,
        f"a must be a number or a tensor of shape [2], {FLOATS}, on cpu; got shape [3]",
    ),
    (
        lambda b: ops.predictor_step(x4, x4, 1, torch.ones(2).long(), backend=b),
        TypeError,
        f"b must be a number or a tensor of shape [2], {FLOATS}, on cpu; got shape [2], dtype int64",
    ),
    (
        lambda b: ops.predictor_step(x4, x4, 1, 1, 1, noise=x4[:, :2], backend=b),
        ValueError,
        "noise must be a tensor of shape [2, 4, 5, 5], dtype float32, on cpu; got shape [2, 2, 5, 5]",
    ),
    (
        lambda b: ops.predictor_step(x4.int(), x4.int(), 1, 1, backend=b),
        TypeError,
        f"predictor_step: x must be a non-empty tensor of shape [B, ...], {FLOATS}; "
        "got shape [2, 4, 5, 5], dtype int32",
    ),
    (
        lambda b: ops.langevin_step(x4, x4, torch.ones(2, device="meta"), 0.1, backend=b),
        ValueError,
        f"alpha must be a number or a tensor of shape [2], {FLOATS}, on cpu; got shape [2], dtype float32, on meta",
    ),
    (
        lambda b: ops.langevin_step(x4, x4, 1, 0.1, generator=[torch.Generator()], backend=b),
        ValueError,
        "1 per-sample generators for a batch of 2",
    ),
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


# (a call of the public function on the cpp backend, the same as a direct torch.ops call)
TWINS = [
    (
        lambda: ops.upfirdn2d(torch.randn(4, 5, 5), torch.ones(2), backend="cpp"),
        lambda: torch.ops.fastsde.upfirdn2d(torch.randn(4, 5, 5), torch.ones(2), 1, 1, [0, 0, 0, 0]),
    ),
    (
        lambda: ops.upfirdn2d(x4.half()[..., :0], torch.ones(2), backend="cpp"),
        lambda: torch.ops.fastsde.upfirdn2d(x4.half()[..., :0], torch.ones(2), 1, 1, [0, 0, 0, 0]),
    ),
    (
        lambda: ops.upfirdn2d(x4, torch.ones(2, 2).int(), backend="cpp"),
        lambda: torch.ops.fastsde.upfirdn2d(x4, torch.ones(2, 2).int(), 1, 1, [0, 0, 0, 0]),
    ),
    (
        lambda: ops.upfirdn2d(x4, torch.ones(1, 2, 2), backend="cpp"),
        lambda: torch.ops.fastsde.upfirdn2d(x4, torch.ones(1, 2, 2), 1, 1, [0, 0, 0, 0]),
    ),
    (
        lambda: ops.upfirdn2d(x4, torch.ones(2), up=0, backend="cpp"),
        lambda: torch.ops.fastsde.upfirdn2d(x4, torch.ones(2), 0, 1, [0, 0, 0, 0]),
    ),
    (
        lambda: ops.upfirdn2d(x4, torch.ones(4), pad=(-3, -3, 0, 0), backend="cpp"),
        lambda: torch.ops.fastsde.upfirdn2d(x4, torch.ones(4), 1, 1, [-3, -3, 0, 0]),
    ),
    (
        lambda: ops.group_norm(x4.long(), 2, backend="cpp"),
        lambda: torch.ops.fastsde.group_norm(x4.long(), 2, None, None, 1e-6, False),
    ),
    (
        lambda: ops.group_norm(torch.randn(2, 4, 3), 3, backend="cpp"),
        lambda: torch.ops.fastsde.group_norm(torch.randn(2, 4, 3), 3, None, None, 1e-6, False),
    ),
    (
        lambda: ops.group_norm(x4, 2, torch.ones(3), backend="cpp"),
        lambda: torch.ops.fastsde.group_norm(x4, 2, torch.ones(3), None, 1e-6, False),
    ),
    (
        lambda: ops.group_norm(x4, 2, None, torch.ones(4).double(), backend="cpp"),
        lambda: torch.ops.fastsde.group_norm(x4, 2, None, torch.ones(4).double(), 1e-6, False),
    ),
    (
        lambda: ops.group_norm(x4, 2, eps=float("nan"), backend="cpp"),
        lambda: torch.ops.fastsde.group_norm(x4, 2, None, None, float("nan"), False),
    ),
    (
        lambda: ops.group_norm(x4, 2, offset=torch.ones(4), backend="cpp"),
        lambda: torch.ops.fastsde.group_norm(x4, 2, None, None, 1e-6, False, torch.ones(4)),
    ),
    (
        lambda: ops.predictor_step(x4[0, 0, 0], x4[0, 0, 0], 1, 1, 1, noise=x4[0, 0, 0].double(), backend="cpp"),
        lambda: torch.ops.fastsde.predictor_step(
            x4[0, 0, 0], x4[0, 0, 0], x4[0, 0, 0].double(), torch.ones(5), torch.ones(5), torch.ones(5)
        ),
    ),
    (
        lambda: ops.predictor_step(x4, x4, 1, 1, 1, noise_key=torch.zeros(2, 3, dtype=torch.int64), backend="cpp"),
        lambda: torch.ops.fastsde.predictor_step(
            x4, x4, None, torch.ones(2), torch.ones(2), torch.ones(2), torch.zeros(2, 3, dtype=torch.int64)
        ),
    ),
    (
        lambda: ops.langevin_step(torch.randn(2, 3), torch.randn(2, 4), 1, 0.1, backend="cpp"),
        lambda: torch.ops.fastsde.langevin_step(
            torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 3), torch.ones(2), 0.1, False
        ),
    ),
]


@pytest.mark.parametrize("public,direct", TWINS)
def test_direct_op_calls_fail_as_the_public_functions_do(public, direct):
    """The C++ checks (csrc/common.h) guard direct torch.ops calls with the Python layer's exception
    and message."""
    with pytest.raises((TypeError, ValueError)) as expected:
        public()
    with pytest.raises(expected.type) as got:
        direct()
    assert str(got.value) == str(expected.value)


def test_info_command_reports_backends():
    out = subprocess.run(
        [sys.executable, "-m", "fastsde.info"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    ).stdout
    assert "extension fastsde._C: built against torch" in out
    for name in ops.BACKENDS:
        assert f"  {name} " in out
    assert "  cpp        available" in out
