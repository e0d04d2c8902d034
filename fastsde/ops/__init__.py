"""The ops that fastsde's kernels implement; the only door to the kernels.

Each op takes `backend=` ('auto', 'reference', 'cpp', 'cuda', 'triton'; default FASTSDE_BACKEND or
'auto'). See _backend.py for how a backend is chosen.
"""

from ._backend import BACKENDS, available_backends, build_info, unavailable_reason
from .group_norm import group_norm
from .pc_update import langevin_step, predictor_step
from .upfirdn2d import upfirdn2d

__all__ = [
    "BACKENDS",
    "available_backends",
    "build_info",
    "unavailable_reason",
    "group_norm",
    "langevin_step",
    "predictor_step",
    "upfirdn2d",
]
