"""Which kernel backend runs an op: availability, the reasons a backend is missing, and the choice.

Backends:
  reference  pure PyTorch, the executable specification; every device.
  cpp        C++ CPU kernels of the compiled extension fastsde._C.
  cuda       CUDA kernels of fastsde._C (built with FASTSDE_BUILD_CUDA=1).
  triton     Triton kernels (kernels/, installed as fastsde.kernels); on the CPU only under
             TRITON_INTERPRET=1 (set before fastsde is imported).

`auto` (the default, or FASTSDE_BACKEND) takes the first available of the device's preference
list and warns once when it has to fall back.
"""

import os
import warnings

import torch

BACKENDS = ("reference", "cpp", "triton", "cuda")
_PREFERENCE = {"cpu": ("cpp", "reference"), "cuda": ("cuda", "triton", "reference")}


def torch_mismatch(built, installed):
    """Why an extension built against torch version `built` must not run under `installed`, or None."""
    if built == installed:
        return None
    # torch keeps no C++ ABI from one release (or build variant) to the next: an extension built
    # against another torch may still load and then read its tensors wrongly or crash.
    return (
        f"fastsde._C was built against torch {built} but torch {installed} is installed; reinstall "
        "fastsde to rebuild it (pip install --no-build-isolation, as in its README)"
    )


try:
    from fastsde import _C  # noqa: F401  (loading it registers the ops with the dispatcher)
except ImportError as e:  # a source checkout that was never built, or a torch mismatch
    _C = None
    _C_ERROR = f"the compiled extension fastsde._C did not load ({e})"
else:
    _C_ERROR = torch_mismatch(_C.build_info()["torch_version"], torch.__version__)


def build_info():
    """How fastsde._C was built: {'cuda': bool, 'cuda_archs': str, 'torch_version': str}, or None."""
    return None if _C is None else _C.build_info()


def _interpreting():
    return os.environ.get("TRITON_INTERPRET") == "1"


def _triton_reason(device_type):
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (pip install 'fastsde[triton]')"
    try:
        import fastsde.kernels  # noqa: F401
    except ImportError as e:
        return f"fastsde's Triton kernels did not import ({e})"
    if device_type == "cpu" and not _interpreting():
        return "Triton runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1 set before importing fastsde"
    if device_type in (None, "cuda") and not torch.cuda.is_available() and not _interpreting():
        return "no CUDA device is visible (TRITON_INTERPRET=1 runs the kernels on the CPU)"
    return None


def triton_kernels(name):
    """The module fastsde.kernels.<name>, or None where the triton backend cannot run at all."""
    if _triton_reason(None if _interpreting() else "cuda") is not None:
        return None
    import importlib

    return importlib.import_module(f"fastsde.kernels.{name}")


_reasons = {}


def unavailable_reason(backend, device_type=None):
    """Why `backend` cannot run on `device_type` ('cpu', 'cuda' or None for any), or None if it can."""
    key = (backend, device_type)
    if key not in _reasons:  # a plain dict, which torch.compile traces (it warns on lru_cache)
        _reasons[key] = _reason(backend, device_type)
    return _reasons[key]


def _reason(backend, device_type):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} or 'auto', got {backend!r}")
    if backend == "reference":
        return None
    if backend == "triton":
        return _triton_reason(device_type)
    if _C_ERROR:
        return _C_ERROR
    if backend == "cpp":
        if device_type not in (None, "cpu"):
            return f"the cpp backend runs on CPU tensors only, got a {device_type} tensor"
        return None
    if not _C.build_info()["cuda"]:
        return "fastsde._C was built without CUDA (reinstall with FASTSDE_BUILD_CUDA=1)"
    if device_type not in (None, "cuda"):
        return f"the cuda backend runs on CUDA tensors only, got a {device_type} tensor"
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    return None


def available_backends(device=None):
    """Names of the backends that can run on `device` (a torch.device or str; None: on any device
    here). Every backend has a kernel for every op."""
    device_type = None if device is None else torch.device(device).type
    return [b for b in BACKENDS if unavailable_reason(b, device_type) is None]


_warned = set()


def resolve(backend, device):
    """The backend that runs on `device`, for a requested name, 'auto' or None (FASTSDE_BACKEND)."""
    backend = backend or os.environ.get("FASTSDE_BACKEND") or "auto"
    device_type = device.type
    if backend != "auto":
        reason = unavailable_reason(backend, device_type)
        if reason:
            raise RuntimeError(f"fastsde backend {backend!r} is not available: {reason}")
        return backend
    preferred = _PREFERENCE.get(device_type, ("reference",))
    for name in preferred:
        if unavailable_reason(name, device_type) is None:
            break
    if name != preferred[0] and (device_type, name) not in _warned:
        _warned.add((device_type, name))
        why = unavailable_reason(preferred[0], device_type)
        warnings.warn(
            f"fastsde: using the {name} backend on {device_type}: {preferred[0]} is not available ({why})",
            RuntimeWarning,
            stacklevel=3,
        )
    return name
