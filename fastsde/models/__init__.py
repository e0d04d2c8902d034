"""Score networks in the official layouts, and the conversion of a network into a score function."""

from .ddpm import DDPM
from .ncsnpp import NCSNpp, fold_constants
from .ncsnv2 import ncsn, ncsnv2_64, ncsnv2_128, ncsnv2_256
from .utils import get_score_fn

MODELS = {
    "ncsnpp": NCSNpp,
    "ddpm": DDPM,
    "ncsn": ncsn,
    "ncsnv2_64": ncsnv2_64,
    "ncsnv2_128": ncsnv2_128,
    "ncsnv2_256": ncsnv2_256,
}


def create_model(config):
    """The network that config.model.name names, built from the config (a fastsde Config)."""
    name = config.model.name.lower()
    if name not in MODELS:
        raise ValueError(f"model.name {name!r} is not available; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](config)


__all__ = ["MODELS", "DDPM", "NCSNpp", "create_model", "fold_constants", "get_score_fn"]
