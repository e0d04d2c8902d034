"""`fastsde colorize`: colour grey images."""

import os
import time

import torch

from ..score_model import with_steps
from ._common import (
    controllable_args,
    device_of,
    inputs,
    load_model,
    pc_kwargs,
    write_rows,
)


def add(sub):
    q = sub.add_parser("colorize", help="colour grey images; writes colorize.png and .npz")
    controllable_args(q, "grey images (1 channel, or 3 equal ones)")
    q.set_defaults(run=run)


def run(args):
    from .. import controllable, data, runs

    device = device_of(args)
    m = load_model(args, device)
    config = m.config
    if config.data.num_channels != 3:
        raise ValueError(
            f"colorize needs a model of RGB images; this one makes {config.data.num_channels}-channel images"
        )
    sde = with_steps(m.sde, config, args.steps)
    images = inputs(args, config, args.num_samples, channels=False)  # grey for an RGB model
    if args.images:  # the user's images must be grey already
        grey = images
    else:  # the held-out colour digits, turned grey
        grey = images.float().mean(1, keepdim=True).round().to(torch.uint8)
    x = data.to_model(grey, config.data.centered).to(device)
    start = time.time()
    result, nfe = controllable.colorize(m.score_fn, sde, x, **pc_kwargs(args, config, sde, device))
    result = data.to_uint8(result, config.data.centered).cpu()
    os.makedirs(args.out, exist_ok=True)
    rows = [grey, result] + ([] if args.images else [images])
    write_rows(os.path.join(args.out, "colorize.png"), rows)
    runs.save_npz(os.path.join(args.out, "colorize.npz"), samples=result.permute(0, 2, 3, 1).numpy())
    print(
        f"colorized {len(grey)} images in {time.time() - start:.1f} s ({nfe} network evaluations each); wrote "
        f"{os.path.join(args.out, 'colorize.png')} (rows: grey input, result{'' if args.images else ', original'})"
        " and colorize.npz"
    )
