"""A tiny config of the digits model, for tests that train, sample and run the command line."""

import torch

from fastsde import configs


def tiny_config(**training):
    """The 'digits' config shrunk to a few thousand parameters and small batches, on grey digits."""
    c = configs.get("digits")
    c.data.dataset, c.data.num_channels = "DIGITS", 1
    c.model.nf, c.model.ch_mult, c.model.attn_resolutions, c.model.dropout = 16, [1, 2], [4], 0.1
    c.model.num_scales = 25
    c.device = "cpu"
    c.training.update(
        {"batch_size": 16, "log_freq": 2, "snapshot_freq": 4, "snapshot_freq_for_preemption": 2, **training}
    )
    return c


def perturb(model, scale=0.05):
    """Moves every parameter of `model` off its initial value by scale * N(0, 1) noise from torch's
    global generator, in place, and returns it: the official initialisation zeroes the biases and
    the last layer, which would hide a lost bias and give a zero score."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model
