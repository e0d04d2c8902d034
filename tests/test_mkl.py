"""The oneMKL first-call race (fastsde/_mkl.py): importing fastsde calls each VML function once on
one element, in float32 and float64, so that no later multithreaded call makes MKL's first choice."""

import json
import subprocess
import sys

import pytest
import torch

from fastsde import _mkl

RECORD = """
import json, torch
calls = []
def recorder(name, f):
    def call(x, *args, **kwargs):
        calls.append((name, str(x.dtype), x.numel()))
        return f(x, *args, **kwargs)
    return call
for name in NAMES:
    setattr(torch, name, recorder(name, getattr(torch, name)))
import fastsde
print(json.dumps(calls))
"""


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="the race is in oneMKL; this torch has none")
def test_importing_fastsde_settles_each_vml_function_first():
    # The race itself shows in about one fresh process of twenty (a first float32 log of 12,000 elements on two
    # threads off by ~1e-4 relative), too rarely for a test; what is tested is that the warm-up happens.
    names = [f.__name__ for f in _mkl.VML_FUNCTIONS]
    assert {"log", "exp", "sqrt", "cos", "sin", "tanh", "erfinv"} <= set(names)
    out = subprocess.run(
        [sys.executable, "-c", f"NAMES = {names!r}\n" + RECORD], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    calls = {tuple(c) for c in json.loads(out)}
    assert {(n, d, 1) for n in names for d in ("torch.float32", "torch.float64")} <= calls
