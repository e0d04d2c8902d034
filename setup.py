"""Builds fastsde and its compiled extension fastsde._C from csrc/.

The C++ CPU kernels are always built. The CUDA kernels are built when FASTSDE_BUILD_CUDA=1, or
when it is unset and both a CUDA toolkit and a CUDA build of torch are present (FASTSDE_BUILD_CUDA=0
turns them off). Archs come from TORCH_CUDA_ARCH_LIST (default "8.0;9.0"); MAX_JOBS caps ninja.
"""
import glob
import os

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
        why = "no CUDA toolkit found (set CUDA_HOME)" if CUDA_HOME is None else \
            f"torch {torch.__version__} is a CPU-only build"
        raise SystemExit(f"FASTSDE_BUILD_CUDA=1 but the CUDA kernels cannot be built: {why}")
    return possible


def extension():
    sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-Wno-psabi", f'-DFASTSDE_TORCH_VERSION="{torch.__version__}"']
    if not build_cuda():
        return CppExtension("fastsde._C", sources, extra_compile_args={"cxx": cxx},
                            extra_link_args=["-fopenmp"])
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    archs = os.environ["TORCH_CUDA_ARCH_LIST"]
    defines = ["-DFASTSDE_WITH_CUDA", f'-DFASTSDE_CUDA_ARCHS="{archs}"']
    return CUDAExtension(
        "fastsde._C", sources + sorted(glob.glob("csrc/cuda/*.cu")),
        extra_compile_args={"cxx": cxx + defines,
                            "nvcc": ["-O3", "--use_fast_math", "-lineinfo"] + defines},
        extra_link_args=["-fopenmp"])


setup(
    # kernels/ (the Triton kernels) installs as fastsde.kernels
    packages=find_packages(include=["fastsde", "fastsde.*"]) + ["fastsde.kernels"],
    package_dir={"fastsde.kernels": "kernels"},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
