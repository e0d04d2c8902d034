"""`fastsde interpolate`: latent interpolation between pairs of images."""

import os
import time

import torch

from ..solvers import ENCODERS
from ._common import (
    check_sampler_args,
    count,
    device_of,
    inputs,
    load_model,
    model_args,
    write_rows,
)


def add(sub):
    q = sub.add_parser(
        "interpolate",
        help="encode pairs of images with the probability-flow ODE and decode the "
        "path between their latent codes; writes interpolate.png and .npz",
    )
    model_args(q, seed=False)  # nothing random
    q.add_argument(
        "--images",
        help="a .npz file, an image folder or 'digits' / 'digits_rgb' (default: the "
        "model's held-out data); images 1 and 2 make the first pair, 3 and 4 the next",
    )
    q.add_argument("--split", default="test", help="split of the embedded dataset (default: test)")
    q.add_argument("--pairs", type=count, default=4)
    q.add_argument("--frames", type=count, default=8, help="images along each path, its two ends included")
    q.add_argument(
        "--sampler",
        default="ode",
        choices=("ode", *ENCODERS),
        help="the ODE solver, both ways: ode (RK45, the closest inverse) or a fixed-step one",
    )
    q.add_argument("--steps", type=count, help="a fixed-step solver's steps each way (default 20)")
    q.add_argument(
        "--cuda-graph", action="store_true", help="on a GPU, replay the fast solvers' steps from a CUDA graph"
    )
    q.add_argument("--out", default="samples")
    q.set_defaults(run=run)


def run(args):
    from .. import data, runs, sampling
    from ..generate import SOLVER_STEPS, default_eps

    if args.frames < 2:
        raise ValueError(f"--frames must be at least 2 (the two ends of a path), got {args.frames}")
    check_sampler_args(args)
    device = device_of(args)
    m = load_model(args, device)
    sde, config = m.sde, m.config
    images = inputs(args, config, 2 * args.pairs)
    if len(images) < 2 * args.pairs:
        raise ValueError(f"--pairs {args.pairs} needs {2 * args.pairs} images; --images has {len(images)}")
    method = "RK45" if args.sampler == "ode" else args.sampler
    steps = None if method == "RK45" else args.steps or SOLVER_STEPS
    x = data.to_model(images, config.data.centered).to(device)
    start = time.time()
    path, nfe = sampling.interpolate(
        m.score_fn, sde, x[0::2], x[1::2], args.frames, method, steps, default_eps(sde, config), args.cuda_graph
    )
    path = data.to_uint8(path.flatten(0, 1), config.data.centered).cpu().reshape(path.shape)
    ends = torch.stack([path[:, 0], path[:, -1]], 1).flatten(0, 1)
    error = (ends.float() - images.float()).abs().mean().item()
    os.makedirs(args.out, exist_ok=True)
    rows = [torch.cat([images[2 * p : 2 * p + 1], path[p], images[2 * p + 1 : 2 * p + 2]]) for p in range(args.pairs)]
    write_rows(os.path.join(args.out, "interpolate.png"), rows)
    runs.save_npz(os.path.join(args.out, "interpolate.npz"), samples=path.flatten(0, 1).permute(0, 2, 3, 1).numpy())
    print(
        f"{args.pairs} paths of {args.frames} images in {time.time() - start:.1f} s ({nfe} network evaluations "
        f"an image, {args.sampler}); the ends reconstruct the inputs to {error:.2f} 8-bit levels on average; "
        f"wrote {os.path.join(args.out, 'interpolate.png')} (a row a pair: input, path, input) and interpolate.npz"
    )
