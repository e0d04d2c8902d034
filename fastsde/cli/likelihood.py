"""`fastsde likelihood`: bits/dim of held-out data, resuming a stopped run."""

import os
import time

import torch

from ._common import (
    amount,
    barrier,
    count,
    device_of,
    load_model,
    model_args,
    start_run,
)


def add(sub):
    q = sub.add_parser("likelihood", help="bits/dim of held-out data via the probability-flow ODE")
    model_args(q)
    q.add_argument("--data", help="a .npz file, an image folder or 'digits' (default: the config's dataset)")
    q.add_argument("--split", default="test", help="split of the embedded dataset (default: test)")
    q.add_argument("--num-samples", type=count, help="the first N images only")
    q.add_argument("--batch-size", type=count, default=100)
    q.add_argument("--repeats", type=count, default=1, help="passes with fresh dequantization (official: 5)")
    q.add_argument("--tol", type=amount, default=1e-5, help="RK45 rtol and atol (official: 1e-5)")
    q.add_argument(
        "--out",
        help="save the bits/dim of each image to OUT/bpd.npz as they come, and resume a run stopped midway from them",
    )
    q.add_argument("--overwrite", action="store_true", help="discard the results of an earlier run in --out")
    q.set_defaults(run=run)


def run(args):
    import contextlib
    import hashlib

    from .. import checkpoint, data, generate, likelihood, runs, train

    rank, world = train.distributed()
    if world > 1 and not args.out:
        raise ValueError("likelihood under torchrun needs --out (the processes share their results through it)")
    device = device_of(args, rank)
    m = load_model(args, device)
    model, sde, config, score_fn = m.model, m.sde, m.config, m.score_fn
    images = data.dataset(config, args.split, args.data)
    images = images[: args.num_samples] if args.num_samples else images
    total, skip = len(images) * args.repeats, set()
    held = contextlib.nullcontext()
    if args.out:
        held = start_run(
            args,
            "bpd",
            lambda: dict(
                weights=checkpoint.digest(model),
                config=config,
                precision=args.precision,
                images=hashlib.sha256(images.contiguous().numpy()).hexdigest(),
                num_images=len(images),
                repeats=args.repeats,
                batch_size=args.batch_size,
                seed=args.seed,
                tol=args.tol,
            ),
            rank,
            world,
            device,
        )
    with held:
        if args.out:
            skip = runs.done(args.out, "bpd", "bpd")
            barrier(world)  # every process has listed what is there before any writes more
        bar = generate.Progress(
            (total - len(skip)) // world, f"likelihood (rank {rank})" if world > 1 else "likelihood"
        )
        start = time.time()
        with runs.Saver(args.out, "bpd") if args.out else contextlib.nullcontext() as saver:
            _, per_item, _, nfe = likelihood.dataset_bits_per_dim(
                score_fn,
                sde,
                images,
                config.data.centered,
                args.batch_size,
                args.repeats,
                args.seed,
                device,
                progress=bar.update,
                skip=skip,
                on_batch=saver and (lambda items, bpd: saver.add(items, bpd=bpd.numpy())),
                rank=rank,
                world=world,
                rtol=args.tol,
                atol=args.tol,
            )
        barrier(world)
        if rank > 0:
            return
        if args.out:
            per_item = torch.from_numpy(runs.merge(args.out, "bpd")["bpd"])
    saved = ""
    if args.out:
        saved = (
            f"{'; ' + str(len(skip)) + ' were there already' if skip else ''}; wrote "
            f"{os.path.join(args.out, 'bpd.npz')} (bits/dim of each image in each pass, pass after pass)"
        )
    sem = float(per_item.std() / len(per_item) ** 0.5) if len(per_item) > 1 else float("nan")
    print(
        f"{float(per_item.mean()):.4f} bits/dim (+- {sem:.4f} s.e.) over {len(images)} images x {args.repeats} "
        f"repeats, {nfe} network evaluations{' on rank 0' if world > 1 else ''}, {time.time() - start:.1f} s"
        f"{saved}"
    )
