"""The CUDA kernels of csrc/cuda built for the host emulation of csrc/cuda/emulation.h, so that the
tests run them on the CPU where there is no GPU, as TRITON_INTERPRET=1 runs the Triton kernels.

Every csrc/cuda/*.cu is compiled as C++ with FASTSDE_CUDA_EMULATION (into build/cuda-emulation; ninja
rebuilds what changed) and registers as the CPU kernels of torch.ops.fastsde_cuda_emu, the same
schemas as torch.ops.fastsde, with the same fake kernels and autograd. The kernels that check the
emulation itself (cuda_emulation_checks.cpp) register as torch.ops.fastsde_emulation_checks.
"""

import glob
import importlib
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMESPACE = "fastsde_cuda_emu"


def _write(path, text):
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


def load():
    """Builds and loads the emulated CUDA kernels; returns their ops namespace."""
    from torch.utils import cpp_extension

    build = os.path.join(ROOT, "build", "cuda-emulation")
    os.makedirs(build, exist_ok=True)
    csrc = os.path.join(ROOT, "csrc")
    sources = [os.path.join(build, "library.cpp")]
    _write(sources[0], f'#include "schemas.h"\n\nTORCH_LIBRARY({NAMESPACE}, m) {{ fastsde::define_ops(m); }}\n')
    sources.append(os.path.join(ROOT, "tests", "cuda_emulation_checks.cpp"))
    for cu in sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu"))):
        sources.append(os.path.join(build, os.path.basename(cu) + ".cpp"))
        _write(sources[-1], f'#include "{cu}"\n')
    cpp_extension.load(
        name=NAMESPACE,
        sources=sources,
        extra_include_paths=[csrc],
        build_directory=build,
        extra_cflags=["-O2", "-std=c++20", "-DFASTSDE_CUDA_EMULATION"],
        is_python_module=False,
    )
    for op in ("group_norm", "pc_update", "upfirdn2d"):
        importlib.import_module(f"fastsde.ops.{op}")._register(NAMESPACE)
    return getattr(torch.ops, NAMESPACE)
