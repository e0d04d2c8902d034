"""The Triton kernels compile for the GPU we target (sm_90, the H200), every autotuning config of
every dtype, layout and compile-time branch, through Triton's real compiler and ptxas
(tests/triton_compile.py); the interpreter that runs them elsewhere in the tests compiles nothing."""

import ast
import collections
import glob
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join(os.path.dirname(HERE), "kernels")
OPS = ("group_norm", "upfirdn2d", "pc_update")


def launched_kernels(op):
    """Names of the @triton.jit functions of kernels/<op>.py that the module launches (kernel[grid](...))."""
    tree = ast.parse(open(os.path.join(KERNELS, f"{op}.py")).read())
    jitted = {
        f.name
        for f in tree.body
        if isinstance(f, ast.FunctionDef) and any("jit" in ast.unparse(d) for d in f.decorator_list)
    }
    launched = {
        n.value.func.id if isinstance(n.value, ast.Call) else n.value.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load) and isinstance(n.value, ast.Name)
    }
    return jitted & launched


@pytest.fixture(scope="module")
def compiled():
    """{op: what tests/triton_compile.py printed for sm_90}, the three ops compiled side by side."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTSDE_TRITON_AUTOTUNE")}
    procs = {
        op: subprocess.Popen(
            [sys.executable, os.path.join(HERE, "triton_compile.py"), "90", op],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for op in OPS
    }
    out = {}
    for op, p in procs.items():
        stdout, stderr = p.communicate(timeout=1200)
        assert p.returncode == 0, f"{op}: the Triton kernels did not compile for sm_90:\n{stderr[-6000:]}"
        out[op] = json.loads(stdout)
    return out


@pytest.mark.parametrize("op", OPS)
def test_every_kernel_compiles_for_sm90(compiled, op):
    entries = compiled[op]["cubins"]
    assert launched_kernels(op) and {e["kernel"] for e in entries} == launched_kernels(op)
    assert all(e["arch"] == 90 and e["registers"] > 0 for e in entries)
    # Every autotuning config was built (the timing stand-in makes them tie), not only the first.
    configs = collections.defaultdict(set)
    for e in entries:
        configs[e["kernel"]].add((e["config"].get("BLOCK"), e["config"]["num_warps"]))
    tuned = compiled[op]["autotune_configs"]
    assert tuned and all(len(configs[name]) == n for name, n in tuned.items()), (tuned, dict(configs))


def test_every_kernel_module_is_checked():
    assert {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(KERNELS, "*.py"))} - {
        "__init__",
        "_tuning",
    } == set(OPS)
