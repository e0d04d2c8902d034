"""A tiny config of the digits model, for tests that train, sample and run the command line."""
from fastsde import configs


def tiny_config(**training):
    """The 'digits' config shrunk to a few thousand parameters and small batches, on grey digits."""
    c = configs.get("digits")
    c.data.dataset, c.data.num_channels = "DIGITS", 1
    c.model.nf, c.model.ch_mult, c.model.attn_resolutions, c.model.dropout = 16, [1, 2], [4], 0.1
    c.model.num_scales = 25
    c.device = "cpu"
    c.training.update({"batch_size": 16, "log_freq": 2, "snapshot_freq": 4, "snapshot_freq_for_preemption": 2, **training})
    return c
