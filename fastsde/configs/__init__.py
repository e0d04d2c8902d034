"""Configs in the official nested layout (training, sampling, data, model, optim, eval), as plain data.

`Config` is a dict with attribute access, so code written for ml_collections' ConfigDict
(`config.model.nf`) works on it; `load(path_or_dict)` reads a dict or a JSON file, and
`get(name)` gives an official config by its upstream name ('ve/cifar10_ncsnpp_continuous') or one
of fastsde's own ('digits', the embedded default model).
"""

import copy
import json
import os

from . import builtin, official
from .official import BASE

CONFIGS = {**official.CONFIGS, **builtin.CONFIGS}


class Config(dict):
    """A nested dict whose keys read as attributes: config.model.nf == config['model']['nf']."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for k, v in self.items():
            if isinstance(v, dict) and not isinstance(v, Config):
                self[k] = Config(v)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no {name!r} (has: {', '.join(sorted(self))})") from None

    def __setattr__(self, name, value):
        self[name] = Config(value) if isinstance(value, dict) and not isinstance(value, Config) else value


def load(config):
    """A Config from a dict, a Config, a config name ('vp/ddpm/cifar10', 'digits'), or the path of a
    JSON file in the official layout."""
    if isinstance(config, str) and config.removesuffix(".py") in CONFIGS:
        return get(config)
    if isinstance(config, (str, os.PathLike)):
        if not os.path.isfile(config):
            raise ValueError(
                f"config {str(config)!r} is neither a config name (fastsde.configs.names(), "
                "`fastsde configs`) nor a JSON file"
            )
        with open(config) as fh:
            try:
                config = json.load(fh)
            except json.JSONDecodeError as e:
                raise ValueError(f"config {str(fh.name)!r}: not a JSON file ({e})") from None
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict or a JSON file path, got {type(config).__name__}")
    return Config(config)


def names(official_only=False):
    """The names of the official configs (and of fastsde's own unless official_only), sorted."""
    return sorted(official.CONFIGS if official_only else CONFIGS)


def get(name):
    """The config `name`: an official one as upstream's configs/<name>.py builds it (device
    'cuda'), or one of fastsde's own."""
    name = name[:-3] if name.endswith(".py") else name
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; known: {', '.join(names())}")
    overrides, removed = CONFIGS[name]
    config = copy.deepcopy(BASE)
    for key in removed:
        section, leaf = key.split(".")
        del config[section][leaf]
    for key, value in overrides.items():
        section, leaf = key.split(".")
        config[section][leaf] = copy.deepcopy(value)
    config["device"] = "cuda"
    return Config(config)
