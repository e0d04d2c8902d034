"""Where a network call's time goes (harness.op_profile): each op's share of one call of the
official CIFAR-10 configs (random weights), on the official loop's path and on fastsde's, with the
table printed last and a JSON report. What decides the next fusion: on a GPU at batch 512 the ops'
kernel times, at batch 1 the wall time against the kernels' (launch-bound or not).

    python benchmarks/profile_network.py --device cuda --batches 1,512 --precision bf16 --record
    python benchmarks/profile_network.py --device cpu --batches 1,8 --precision fp32,bf16
    python benchmarks/profile_network.py --device cpu --batches 1 --precision fp32    # CI: a crash check
"""

import argparse
import sys

import torch

from fastsde import checkpoint, configs, models, timing

import harness
import table


def as_row(profile, top=12):
    """A profile as a table row: wall time, op counts, and the self time of its `top` ops a call."""
    ops = {f"ms {name}": ms for name, _, ms, _ in profile["ops"][:top]}
    keep = ("wall_ms", "ops_per_call", "kernels_per_call", "total_ms")
    case = table.case(model=profile["model"], batch=profile["batch"])
    return dict(case=case, path=profile["path"], **{k: profile[k] for k in keep}, **ops)


def main():
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument(
        "--configs",
        default="ve/cifar10_ncsnpp_continuous,vp/cifar10_ddpmpp_continuous",
        help="comma-separated official config names",
    )
    p.add_argument("--batches", default="1,512" if cuda else "1,8", help="comma-separated batch sizes")
    p.add_argument(
        "--precision", default="bf16" if cuda else "fp32", help="fastsde's, comma-separated: fp32, tf32, bf16, fp16"
    )
    p.add_argument("--calls", type=int, default=3, help="profiled calls per case")
    p.add_argument(
        "--record", action="store_true", help="write the results into benchmarks/results/profile-<machine>.csv"
    )
    args = p.parse_args()
    device = torch.device(args.device)
    profiles = []
    for name in args.configs.split(","):
        config = configs.get(name)
        config.device = device
        torch.manual_seed(0)
        model, sde = models.create_model(config).to(device).eval(), checkpoint.sde_from_config(config)
        for batch in (int(b) for b in args.batches.split(",")):
            print(f"profiling {name} at batch {batch} ...", file=sys.stderr)
            new = [
                dict(p, model=name)
                for p in harness.op_profile(model, sde, config, device, batch, args.precision.split(","), args.calls)
            ]
            profiles += new
            if args.record:  # after every case, so that a run cut short keeps what it measured
                table.record("profile", device, [as_row(p) for p in new])
        del model
    m = timing.machine(device)
    print(f"# {m.get('gpu') or m['cpu']}, {m['threads']} threads, torch {m['torch']}, {m['date']}")
    print(harness.op_profile_table(profiles))


if __name__ == "__main__":
    main()
