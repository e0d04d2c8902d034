"""fastsde: score-based generative modeling through SDEs (Song et al., ICLR 2021), with fused kernels."""
from . import ops
from .likelihood import bits_per_dim, log_likelihood
from .sampling import CORRECTORS, PREDICTORS, ode_sample, pc_sample, register_corrector, register_predictor
from .sde import SDE, VESDE, VPSDE, subVPSDE

__version__ = "0.1.0"

__all__ = ["ops", "SDE", "VESDE", "VPSDE", "subVPSDE", "pc_sample", "ode_sample", "log_likelihood",
           "bits_per_dim", "PREDICTORS", "CORRECTORS", "register_predictor", "register_corrector"]
