"""Builds fastsde and its compiled extension fastsde._C from csrc/.

The C++ CPU kernels are always built. The CUDA kernels are built when FASTSDE_BUILD_CUDA=1, or
when it is unset and a CUDA build of torch and a CUDA toolkit of the same major version are present
(FASTSDE_BUILD_CUDA=0 turns them off). Archs come from TORCH_CUDA_ARCH_LIST (default "8.0;9.0");
MAX_JOBS caps ninja.
"""

import glob
import os
import re
import subprocess
import warnings

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


def build_cuda():
    flag = os.environ.get("FASTSDE_BUILD_CUDA", "")
    if flag not in ("", "0", "1"):
        raise SystemExit(f"FASTSDE_BUILD_CUDA must be 0 or 1, got {flag!r}")
    if flag == "0":
        return False
    possible = CUDA_HOME is not None and torch.version.cuda is not None
    if flag == "1" and not possible:
        why = (
            "no CUDA toolkit found (set CUDA_HOME)"
            if CUDA_HOME is None
            else f"torch {torch.__version__} is a CPU-only build"
        )
        raise SystemExit(f"FASTSDE_BUILD_CUDA=1 but the CUDA kernels cannot be built: {why}")
    if flag == "" and possible:
        # torch refuses to build against a toolkit of another major version: unasked, install
        # without the CUDA kernels (the triton backend still runs on the GPU) rather than fail.
        toolkit, major = toolkit_version(), torch.version.cuda.split(".")[0]
        if toolkit is None or toolkit.split(".")[0] != major:
            warnings.warn(
                f"fastsde: not building the CUDA kernels: the CUDA toolkit at {CUDA_HOME} is "
                f"{toolkit or 'of unknown version'}, torch {torch.__version__} was built with CUDA "
                f"{torch.version.cuda}; set CUDA_HOME to a {major}.x toolkit, or FASTSDE_BUILD_CUDA=1 "
                f"to try anyway"
            )
            return False
    return possible


def toolkit_version():
    """The release of the CUDA toolkit at CUDA_HOME ("13.0"), from its nvcc; None if it does not say."""
    try:
        out = subprocess.run(
            [os.path.join(CUDA_HOME, "bin", "nvcc"), "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def extension():
    sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-Wno-psabi", f'-DFASTSDE_TORCH_VERSION="{torch.__version__}"']
    if not build_cuda():
        return CppExtension("fastsde._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    archs = os.environ["TORCH_CUDA_ARCH_LIST"]
    defines = ["-DFASTSDE_WITH_CUDA", f'-DFASTSDE_CUDA_ARCHS="{archs}"']
    return CUDAExtension(
        "fastsde._C",
        sources + sorted(glob.glob("csrc/cuda/*.cu")),
        extra_compile_args={"cxx": cxx + defines, "nvcc": ["-O3", "--use_fast_math", "-lineinfo"] + defines},
        extra_link_args=["-fopenmp"],
    )


setup(
    # kernels/ (the Triton kernels) installs as fastsde.kernels
    packages=find_packages(include=["fastsde", "fastsde.*"]) + ["fastsde.kernels"],
    package_dir={"fastsde.kernels": "kernels"},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
