"""`python -m fastsde.info`: what was built and which backends run here (and why not, for the rest)."""

import platform

import torch

import fastsde
from fastsde.ops import _backend


def report():
    """The build and backend report as a list of lines."""
    built = _backend.build_info()
    lines = [
        f"fastsde {fastsde.__version__}, Python {platform.python_version()}",
        f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), "
        f"CUDA devices visible: {torch.cuda.device_count()}",
    ]
    if built is None:
        lines.append(f"extension fastsde._C: not loaded: {_backend._C_ERROR}")
    else:
        cuda = f"with CUDA for archs {built['cuda_archs']}" if built["cuda"] else "CPU kernels only"
        lines.append(f"extension fastsde._C: built against torch {built['torch_version']}, {cuda}")
    lines.append("backends:")
    for name in _backend.BACKENDS:
        reason = _backend.unavailable_reason(name)
        lines.append(f"  {name:10s} {'available' if reason is None else 'unavailable: ' + reason}")
    return lines


if __name__ == "__main__":
    print("\n".join(report()))
