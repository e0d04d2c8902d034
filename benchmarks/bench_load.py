"""The front door's speed: fastsde.load(...).sample against the official loop and the old documented path.

On the NCSN++ fixture (tests/fixtures/ncsnpp_ve_cifar_small), one run times, interleaved, the PC
sampler on three paths: the official loop (the harness's faithful eager re-creation of the official
code path), load_checkpoint + get_score_fn + pc_sample (what the README showed before fastsde.load),
and fastsde.load(...).sample. Medians over rounds; ratios against the official loop.

    python benchmarks/bench_load.py [--batches 1 4 16 64] [--steps 20] [--rounds 7] [--record]
"""

import argparse
import os
import sys

import torch

import fastsde
from fastsde import checkpoint, sampling, timing
from fastsde.generate import default_eps

import harness
import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "ncsnpp_ve_cifar_small")


def runs(steps, device):
    """{name: run(batch, seed) -> (samples, nfe)} of the three paths, on one network's weights."""
    front = fastsde.load(FIXTURE + ".pth", FIXTURE + ".json", device=device)
    model, sde, config = front.model, checkpoint.sde_from_config(front.config, steps), front.config
    s = config.sampling
    official = next(p for p in harness.paths_for(device) if p["name"] == "official loop")
    documented = fastsde.get_score_fn(sde, model, continuous=True)

    def readme(batch, seed):
        shape = (batch, *front.shape)
        return sampling.pc_sample(
            documented,
            sde,
            shape,
            s.predictor,
            s.corrector,
            s.snr,
            s.n_steps_each,
            eps=default_eps(sde),
            generator=torch.Generator(device).manual_seed(seed),
            device=device,
        )

    def load_sample(batch, seed):
        x, nfe = front.sample(batch, steps=steps, seed=seed, batch_size=batch, output="float", return_nfe=True)
        return x, int(nfe[0])

    return {
        "official loop": harness.fastsde_sampler(model, sde, config, device, official)("pc", steps),
        "get_score_fn + pc_sample": readme,
        "fastsde.load().sample": load_sample,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--record", action="store_true", help="write the results into benchmarks/results/load-<machine>.csv")
    args = p.parse_args()
    paths, rows = runs(args.steps, args.device), []
    for batch in args.batches:
        timed = timing.time_runs(paths, batch, args.rounds, args.device)
        base = timed["official loop"]["seconds"]
        rows += [
            dict(
                batch=batch,
                path=k,
                seconds=v["seconds"],
                images_per_s=batch / v["seconds"],
                vs_official_loop=base / v["seconds"],
                nfe=v["nfe"],
            )
            for k, v in timed.items()
        ]
    lines = [
        f"PC sampler on the NCSN++ fixture (16x16), {args.steps} steps, median of {args.rounds}",
        f"{'batch':>5s} {'path':28s} {'seconds':>8s} {'img/s':>7s} {'vs official':>11s}",
    ]
    lines += [
        f"{r['batch']:5d} {r['path']:28s} {r['seconds']:8.3f} {r['images_per_s']:7.2f} {r['vs_official_loop']:10.2f}x"
        for r in rows
    ]
    print("\n".join(lines))
    if args.record:
        rows = [dict(r, model="ncsnpp_ve_cifar_small", sampler="pc", steps=args.steps) for r in rows]
        table.record("load", args.device, table.rows_of(rows, "sampling", ("model", "sampler", "steps", "batch")))


if __name__ == "__main__":
    sys.exit(main())
