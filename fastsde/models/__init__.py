"""Score networks (to come) and the conversion of a network into a score function."""
from .utils import get_score_fn

__all__ = ["get_score_fn"]
