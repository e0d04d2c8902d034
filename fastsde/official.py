"""Factories with the official code's names and arguments (sampling.py, likelihood.py of
yang-song/score_sde_pytorch), as thin wrappers over fastsde's functions, for porting scripts.

Each returns a function of the network (`model`), as upstream does; fastsde's own API takes a
score function instead (see fastsde.models.get_score_fn).
"""

import math

import torch

from .likelihood import log_likelihood
from .models.utils import get_score_fn
from .sampling import ode_sample, pc_sample


def _name(fn_or_name):
    # Upstream passes predictor/corrector classes; here names, or None for 'none'.
    return "none" if fn_or_name is None else fn_or_name


def get_pc_sampler(
    sde,
    shape,
    predictor,
    corrector,
    inverse_scaler,
    snr,
    n_steps=1,
    probability_flow=False,
    continuous=False,
    denoise=True,
    eps=1e-3,
    device="cuda",
):
    """pc_sampler(model) -> (samples, nfe), samples passed through inverse_scaler."""

    def pc_sampler(model):
        x, nfe = pc_sample(
            get_score_fn(sde, model, train=False, continuous=continuous),
            sde,
            shape,
            predictor=_name(predictor),
            corrector=_name(corrector),
            snr=snr,
            n_steps=n_steps,
            probability_flow=probability_flow,
            denoise=denoise,
            eps=eps,
            device=device,
        )
        return inverse_scaler(x), nfe

    return pc_sampler


def get_ode_sampler(
    sde, shape, inverse_scaler, denoise=False, rtol=1e-5, atol=1e-5, method="RK45", eps=1e-3, device="cuda"
):
    """ode_sampler(model, z=None) -> (samples, nfe); like upstream, the model is taken as continuous."""

    def ode_sampler(model, z=None):
        x, nfe = ode_sample(
            get_score_fn(sde, model, train=False, continuous=True),
            sde,
            shape,
            method=method,
            rtol=rtol,
            atol=atol,
            denoise=denoise,
            eps=eps,
            z=z,
            device=device,
        )
        return inverse_scaler(x), nfe

    return ode_sampler


def get_likelihood_fn(sde, inverse_scaler, hutchinson_type="Rademacher", rtol=1e-5, atol=1e-5, method="RK45", eps=1e-5):
    """likelihood_fn(model, data) -> (bpd, z, nfe) with upstream's offset 7 - inverse_scaler(-1)."""
    if method != "RK45":
        raise ValueError(f"method must be 'RK45', got {method!r}")

    def likelihood_fn(model, data):
        score_fn = get_score_fn(sde, model, train=False, continuous=True)
        logp, z, nfe = log_likelihood(
            score_fn, sde, data, hutchinson=hutchinson_type.lower(), rtol=rtol, atol=atol, eps=eps
        )
        offset = 7.0 - float(inverse_scaler(torch.tensor(-1.0)))
        return -logp / math.log(2) / data[0].numel() + offset, z, nfe

    return likelihood_fn


def _config(config, path):
    for key in path.split("."):
        config = config[key] if isinstance(config, dict) else getattr(config, key)
    return config


def get_sampling_fn(config, sde, shape, inverse_scaler, eps):
    """The sampler that config.sampling.method ('pc' or 'ode') names, built from the config's
    sampling section (predictor, corrector, snr, n_steps_each, probability_flow, noise_removal)."""
    method = _config(config, "sampling.method").lower()
    device = _config(config, "device")
    if method == "ode":
        return get_ode_sampler(
            sde, shape, inverse_scaler, denoise=_config(config, "sampling.noise_removal"), eps=eps, device=device
        )
    if method == "pc":
        return get_pc_sampler(
            sde,
            shape,
            _config(config, "sampling.predictor").lower(),
            _config(config, "sampling.corrector").lower(),
            inverse_scaler,
            snr=_config(config, "sampling.snr"),
            n_steps=_config(config, "sampling.n_steps_each"),
            probability_flow=_config(config, "sampling.probability_flow"),
            continuous=_config(config, "training.continuous"),
            denoise=_config(config, "sampling.noise_removal"),
            eps=eps,
            device=device,
        )
    raise ValueError(f"config.sampling.method must be 'pc' or 'ode', got {method!r}")
