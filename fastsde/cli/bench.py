"""`fastsde bench`: images per second of a model's fast paths against its plain eager path."""

import json
import os

from .. import timing
from ..checkpoint import atomic_write_bytes
from ..engine import PRECISIONS
from ..score_model import DEFAULT_MODEL, ScoreModel
from ..solvers import FIXED_STEP
from ._common import count, counts, device_of, model_args, read_model, some_of

BASELINE = "eager fp32"


def add(sub):
    q = sub.add_parser("bench", help="images per second: the fast paths against the plain eager path")
    model_args(q, precision=False, seed=False)
    q.add_argument(
        "--precision",
        type=some_of(PRECISIONS),
        help="fast paths, comma-separated: fp32, tf32, bf16, fp16 (default: fp32, tf32, bf16 on GPUs, fp32 on CPUs)",
    )
    q.add_argument("--batch-sizes", type=counts, default=(1, 16), help="comma-separated (default 1,16)")
    q.add_argument(
        "--samplers",
        type=some_of(("pc",) + FIXED_STEP),
        default=("pc", "dpmpp_2m"),
        help="comma-separated: pc or fixed-step solvers (default pc,dpmpp_2m)",
    )
    q.add_argument("--steps", type=count, default=25, help="steps of every sampler (PC: its N; default 25)")
    q.add_argument("--repeats", type=count, default=3, help="timed runs per case (median)")
    q.add_argument("--json", help="write the rows and the machine here")
    q.set_defaults(run=run)


def paths(device, precisions):
    """{name: ScoreModel options}: the plain eager path (fp32, NCHW, nothing folded, no CUDA graph),
    then each precision's fast path (folded, channels_last, CUDA graphs on GPUs)."""
    cuda = device.type == "cuda"
    out = {BASELINE: dict(precision="fp32", fold=False, channels_last=False, cuda_graph=False)}
    for p in precisions or (("fp32", "tf32", "bf16") if cuda else ("fp32",)):
        out[f"fast {p}"] = dict(precision=p, fold=True, channels_last=True, cuda_graph=cuda)
    return out


def measure(model, sde, config, device, precisions, samplers, batches, steps, rounds, compile=False):
    """Rows of images per second for each sampler, batch size and path, with the ratio to the eager
    path timed in the same rounds (fastsde.timing.time_runs)."""
    models = {
        name: ScoreModel(model, sde, config, device, compile=compile and name != BASELINE, **options)
        for name, options in paths(device, precisions).items()
    }
    rows = []
    for sampler in samplers:
        runs = {
            name: lambda batch, seed, m=m, s=sampler: m.sample(batch, s, steps, seed, output="float", return_nfe=True)
            for name, m in models.items()
        }
        for batch in batches:
            timed = timing.time_runs(runs, batch, rounds, device)
            base = timed[BASELINE]["seconds"]
            rows += [
                {
                    "sampler": sampler,
                    "steps": steps,
                    "batch": batch,
                    "path": name,
                    "nfe": int(t["nfe"].max()),
                    "seconds": t["seconds"],
                    "images_per_s": batch / t["seconds"],
                    "vs_eager": base / t["seconds"],
                    "first_run_s": t["first"],
                }
                for name, t in timed.items()
            ]
    return rows


def table(rows):
    """The rows as text."""
    lines = [f"{'sampler':9s} {'steps':>5s} {'batch':>5s} {'path':12s} {'NFE':>5s} {'img/s':>10s} {'vs eager':>9s}"]
    lines += [
        f"{r['sampler']:9s} {r['steps']:5d} {r['batch']:5d} {r['path']:12s} {r['nfe']:5d} "
        f"{r['images_per_s']:10.4g} {r['vs_eager']:8.2f}x"
        for r in rows
    ]
    return "\n".join(lines)


def run(args):
    device = device_of(args)
    model, sde, config = read_model(args, device)
    rows = measure(
        model,
        sde,
        config,
        device,
        args.precision,
        args.samplers,
        args.batch_sizes,
        args.steps,
        args.repeats,
        args.compile,
    )
    if args.json:
        report = {
            "model": os.path.basename(args.ckpt or DEFAULT_MODEL),
            "machine": timing.machine(device),
            "rows": rows,
        }
        atomic_write_bytes(args.json, json.dumps(report, indent=1).encode())
    print(table(rows))
