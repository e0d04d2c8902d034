"""fastsde: score-based generative modeling through SDEs (Song et al., ICLR 2021), with fused kernels."""
from . import ops

__version__ = "0.1.0"
