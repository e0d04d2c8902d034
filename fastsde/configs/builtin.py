"""fastsde's own configs, in the same form as official.py: ({dotted key: value overriding BASE},
[dotted keys of BASE it does not have]).

'digits': the embedded default model, a small DDPM++ (continuous VP SDE) for the 8x8 handwritten
digits that ship in fastsde/assets, drawn in colour (so that colorization has something to do);
small enough to train and sample on a CPU.
"""

CONFIGS = {
    "digits": (
        {
            "data.dataset": "DIGITS_RGB",
            "data.image_size": 8,
            "data.num_channels": 3,
            "data.centered": True,
            "data.random_flip": False,
            "data.uniform_dequantization": True,
            "model.nf": 32,
            "model.ch_mult": [1, 2, 2],
            "model.num_res_blocks": 1,
            "model.attn_resolutions": [4],
            "model.embedding_type": "positional",
            "model.fir": False,
            "model.progressive_input": "none",
            "model.scale_by_sigma": False,
            "model.ema_rate": 0.999,
            "model.num_scales": 500,
            "optim.lr": 5e-4,
            "optim.warmup": 200,
            "sampling.corrector": "none",
            "sampling.predictor": "euler_maruyama",
            "training.sde": "vpsde",
            "training.reduce_mean": True,
            "training.n_iters": 5000,
            "training.snapshot_freq": 1000,
            "training.snapshot_freq_for_preemption": 500,
            "training.log_freq": 100,
            "eval.batch_size": 100,
        },
        [],
    ),
}
