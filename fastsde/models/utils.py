"""Turning a score network into a score function score_fn(x, t), with the official conventions."""

import torch

from ..sde import VESDE, VPSDE, batch_view, subVPSDE


def get_score_fn(sde, model, train=False, continuous=False):
    """score_fn(x, t) for a network trained with the official code (models/utils.py::get_score_fn).

    VP / sub-VP networks predict the noise: labels t * 999 (continuous, or any sub-VP) or t (N - 1)
    (discrete VP), score = -model(x, labels) / std(t), std from the marginal (continuous) or DDPM's
    sqrt(1 - alphas_cumprod) (discrete). VE networks return the score: labels sigma(t) (continuous)
    or the index round((T - t)(N - 1)) into the network's descending sigmas (discrete).
    The model is put in train or eval mode once, here.
    """
    model.train(train)
    if isinstance(sde, VPSDE):  # subVPSDE included

        def score_fn(x, t):
            if continuous or isinstance(sde, subVPSDE):
                labels = t * 999
                std = sde.marginal_coef(t)[1]
            else:
                labels = t * (sde.N - 1)
                std = sde.sqrt_1m_alphas_cumprod(t)[labels.long()]
            return -model(x, labels) / batch_view(std, x)
    elif isinstance(sde, VESDE):

        def score_fn(x, t):
            labels = sde.marginal_coef(t)[1] if continuous else torch.round((sde.T - t) * (sde.N - 1)).long()
            return model(x, labels)
    else:
        raise NotImplementedError(f"get_score_fn knows VESDE, VPSDE and subVPSDE, not {type(sde).__name__}")
    return score_fn
