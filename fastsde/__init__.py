"""fastsde: score-based generative modeling through SDEs (Song et al., ICLR 2021), with fused kernels."""

from . import ops
from ._mkl import warm_vml
from ._random import Philox
from .checkpoint import load_checkpoint
from .likelihood import bits_per_dim, log_likelihood
from .models import get_score_fn
from .official import get_likelihood_fn, get_ode_sampler, get_pc_sampler, get_sampling_fn
from .sampling import (
    CORRECTORS,
    PREDICTORS,
    interpolate,
    ode_encode,
    ode_sample,
    pc_sample,
    register_corrector,
    register_predictor,
    slerp,
)
from .score_model import ScoreModel, load
from .sde import SDE, VESDE, VPSDE, subVPSDE
from .solvers import SCHEDULES, SOLVERS
from .solvers import sample as solver_sample

__version__ = "0.1.0"

warm_vml()  # before the user computes anything: see _mkl.py

__all__ = [
    "load",
    "ScoreModel",
    "load_checkpoint",
    "ops",
    "Philox",
    "SDE",
    "VESDE",
    "VPSDE",
    "subVPSDE",
    "pc_sample",
    "ode_sample",
    "ode_encode",
    "solver_sample",
    "SOLVERS",
    "SCHEDULES",
    "slerp",
    "interpolate",
    "log_likelihood",
    "bits_per_dim",
    "PREDICTORS",
    "CORRECTORS",
    "register_predictor",
    "register_corrector",
    "get_score_fn",
    "get_pc_sampler",
    "get_ode_sampler",
    "get_likelihood_fn",
    "get_sampling_fn",
]
