"""What a compiled op's dispatch costs: fastsde.ops' call() below autograd, against the public path.

fastsde.ops._common.call runs an op without gradients under torch._C._AutoDispatchBelowAutograd, a
private API. The public way calls the op through its Autograd kernel (torch.library.register_autograd),
which redispatches. This times both, per op call and per network call at batch 1 (where dispatch
counts most), interleaved; medians.

    python benchmarks/bench_dispatch.py [--record]
"""

import argparse
import importlib
import os
import statistics
import time

import torch

import fastsde
from fastsde.ops import _common

import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = [importlib.import_module(f"fastsde.ops.{name}") for name in ("group_norm", "upfirdn2d", "pc_update")]


def public_call(op, *args):
    """call() without the private API: a no-grad call goes through the op's Autograd kernel."""
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        return _common._EAGER[op].apply(*args)
    return op(*args)


def use(call):
    for module in OPS:
        module.call = call


def median_ms(fn, inner, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner * 1e3)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument(
        "--record", action="store_true", help="write the results into benchmarks/results/dispatch-<machine>.csv"
    )
    args = p.parse_args()
    x = torch.randn(1, 64, 8, 8)
    weight, bias = torch.ones(64), torch.zeros(64)
    cases = {
        table.case(call="group_norm_op", shape="1x64x8x8"): (
            lambda: fastsde.ops.group_norm(x, 16, weight, bias, act="silu"),
            2000,
        )
    }
    fixture = os.path.join(ROOT, "tests", "fixtures", "ncsnpp_ve_cifar_small")
    for label, model in (
        ("digits", fastsde.load(device="cpu")),
        ("ncsnpp_ve_cifar_small", fastsde.load(fixture + ".pth", fixture + ".json", device="cpu")),
    ):
        c, h, w = model.shape
        z, t = torch.randn(1, c, h, w), torch.tensor([0.5])
        cases[table.case(call="network", model=label, batch=1)] = (lambda m=model, z=z, t=t: m.score_fn(z, t), 50)
    rows = []
    with torch.no_grad():
        for name, (fn, inner) in cases.items():
            fn()
            result = {}
            for _ in range(args.rounds):  # interleaved
                for path, call in (("below autograd", _common.call), ("public", public_call)):
                    use(call)
                    result.setdefault(path, []).append(median_ms(fn, inner, 1))
            use(_common.call)
            base = statistics.median(result["below autograd"])
            public = statistics.median(result["public"])
            rows.append(dict(case=name, path="below autograd", ms=base, vs_below_autograd=1.0))
            rows.append(dict(case=name, path="public", ms=public, vs_below_autograd=public / base))
    print(table.text(table.melt(rows)))
    if args.record:
        table.record("dispatch", "cpu", rows)


if __name__ == "__main__":
    main()
