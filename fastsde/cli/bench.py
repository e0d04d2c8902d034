"""`fastsde bench`: sampling throughput of the fast paths against the official code path."""

import json
import os

from ..engine import PRECISIONS
from ..score_model import DEFAULT_MODEL
from ._common import (
    count,
    counts,
    device_of,
    model_args,
    read_model,
    some_of,
)


def add(sub):
    q = sub.add_parser("bench", help="sampling throughput: fastsde's fast paths against the official code path")
    model_args(q, precision=False)
    q.add_argument(
        "--precision",
        type=some_of(PRECISIONS),
        help="fastsde's paths, comma-separated: fp32, tf32, bf16, fp16 (default: fp32, tf32, bf16 on "
        "GPUs, fp32 on CPUs; bf16 pays on CPUs with AMX for large networks)",
    )
    q.add_argument("--batch-sizes", type=counts, default=(1, 16), help="comma-separated (default 1,16)")
    q.add_argument(
        "--samplers",
        type=some_of(("pc", "dpmpp_2m", "heun")),
        default=("pc", "dpmpp_2m"),
        help="comma-separated: pc, dpmpp_2m, heun",
    )
    q.add_argument("--pc-steps", type=count, default=25, help="PC steps timed (reported for the full N)")
    q.add_argument("--solver-steps", type=count, default=20, help="steps of the fast solvers")
    q.add_argument("--repeats", type=count, default=3, help="timed runs per case (median)")
    q.add_argument("--official", help="a local yang-song/score_sde_pytorch checkout, timed beside")
    q.add_argument(
        "--accuracy",
        action="store_true",
        help="also the fast paths' image differences (with --likelihood, their bits/dim differences too)",
    )
    q.add_argument(
        "--likelihood",
        action="store_true",
        help="also the cost of an evaluation of the likelihood's ODE (drift + vector-Jacobian product)",
    )
    q.add_argument("--json", help="write the report here")
    q.set_defaults(run=run)


def run(args):
    """End-to-end sampling throughput of fastsde's fast paths against the official code path
    (fastsde.bench), on this machine, and with --accuracy what each fast path costs."""
    from .. import bench

    device = device_of(args)
    model, sde, config = read_model(args, device)
    label, batches, precisions = os.path.basename(args.ckpt or DEFAULT_MODEL), args.batch_sizes, args.precision
    rows = bench.throughput(
        model,
        sde,
        config,
        device,
        batches,
        args.samplers,
        args.pc_steps,
        args.solver_steps,
        args.repeats,
        args.official,
        precisions,
        args.compile,
        label=label,
    )
    accuracy = bench.accuracy(model, sde, config, device, batch=max(batches)) if args.accuracy else []
    lik = (
        bench.likelihood_speed(
            model,
            sde,
            config,
            device,
            batches,
            rounds=args.repeats,
            precisions=precisions,
            compile=args.compile,
            label=label,
        )
        if args.likelihood
        else []
    )
    lik_accuracy = (
        bench.likelihood_accuracy(model, sde, config, device, batch=max(batches))
        if args.likelihood and args.accuracy
        else []
    )
    if args.json:
        from ..checkpoint import atomic_write_bytes

        report = {
            "machine": bench.machine(device),
            "rows": rows,
            "accuracy": accuracy,
            "likelihood": lik,
            "likelihood_accuracy": lik_accuracy,
        }
        atomic_write_bytes(args.json, json.dumps(report, indent=1).encode())
    print(bench.table(rows, accuracy))
    if lik:
        print(bench.likelihood_table(lik))
    if lik_accuracy:
        print(bench.likelihood_accuracy_table(lik_accuracy))
