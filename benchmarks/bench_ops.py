"""Benchmark of the op backends on NCSN++-sized tensors: our kernels against eager baselines.

Baselines, measured in the same run: GroupNorm(+SiLU) against F.silu(F.group_norm(...)) (what the
official NCSN++ runs) and against the reference backend; upfirdn2d against the reference backend,
which is the official CPU path (zero insertion, pad, depthwise convolution). On the CPU the kernels
are the cpp backend; on a GPU (--device cuda) the cuda and triton backends and torch.compile of
each reference function; the kernels again on channels_last inputs (the sampling engine's layout).
Candidates are timed in interleaved rounds so that machine noise hits them alike; the median is
reported.

    python benchmarks/bench_ops.py [--device cpu|cuda] [--rounds 40] [--json benchmarks/results/NAME.json]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import fastsde
from fastsde import ops
from fastsde.ops.group_norm import group_norm_reference
from fastsde.ops.pc_update import langevin_step_reference, predictor_step_reference
from fastsde.ops.upfirdn2d import upfirdn2d_reference


def fir(k, separable):
    """The normalised FIR filter of NCSN++ from its 1-D taps: 1-D (separable) or its 2-D outer product."""
    k = torch.tensor(k, dtype=torch.float32)
    k = k / k.sum()
    return k if separable else torch.outer(k, k)


def cases(device):
    """(name, {candidate: fn}, baseline name, bytes moved by one call at minimum)."""
    kernels = "cuda" if device == "cuda" else "cpp"
    randn = lambda *shape: torch.randn(*shape, device=device)  # noqa: E731
    out = []
    # Triton kernels, and torch.compile of the reference, join where they run for real (a GPU).
    gpu = device == "cuda"
    triton = ["triton"] if gpu and "triton" in ops.available_backends(device) else []
    compiled = lambda fn: {"torch.compile(reference)": fn} if gpu else {}  # noqa: E731
    gn_c, up_c = torch.compile(group_norm_reference), torch.compile(upfirdn2d_reference)
    pred_c, lang_c = torch.compile(predictor_step_reference), torch.compile(langevin_step_reference)
    cl = torch.channels_last  # the layout the sampling engine runs the network in
    for shape in [(8, 256, 32, 32), (8, 128, 32, 32), (8, 256, 16, 16)]:
        x = randn(*shape)
        xc = x.contiguous(memory_format=cl)
        C = shape[1]
        w, b = randn(C), randn(C)
        G = min(C // 4, 32)
        nbytes = 2 * x.numel() * 4
        out.append((f"group_norm+silu {list(shape)}", {
            "eager F.silu(F.group_norm)": lambda x=x, w=w, b=b, G=G: F.silu(F.group_norm(x, G, w, b, 1e-6)),
            "reference": lambda x=x, w=w, b=b, G=G: ops.group_norm(x, G, w, b, act="silu", backend="reference"),
            **compiled(lambda x=x, w=w, b=b, G=G: gn_c(x, G, w, b, 1e-6, True)),
            **{n: lambda x=x, w=w, b=b, G=G, n=n: ops.group_norm(x, G, w, b, act="silu", backend=n)
               for n in [kernels] + triton},
            "eager F.silu(F.group_norm) channels_last": lambda x=xc, w=w, b=b, G=G: F.silu(F.group_norm(x, G, w, b, 1e-6)),
            **{f"{n} channels_last": lambda x=xc, w=w, b=b, G=G, n=n: ops.group_norm(x, G, w, b, act="silu", backend=n)
               for n in [kernels] + triton},
        }, "eager F.silu(F.group_norm)", nbytes))
        out.append((f"group_norm {list(shape)}", {
            "eager F.group_norm": lambda x=x, w=w, b=b, G=G: F.group_norm(x, G, w, b, 1e-6),
            **{n: lambda x=x, w=w, b=b, G=G, n=n: ops.group_norm(x, G, w, b, backend=n) for n in [kernels] + triton},
        }, "eager F.group_norm", nbytes))
    k1, k2 = fir([1, 3, 3, 1], True).to(device), fir([1, 3, 3, 1], False).to(device)
    for shape in [(8, 256, 16, 16), (8, 128, 32, 32)]:
        x = randn(*shape)
        xc = x.contiguous(memory_format=cl)
        n = x.numel() * 4
        for name, up, down, pad, gain, moved in [("up2 pad(2,1)", 2, 1, (2, 1), 4, n * 5),
                                                 ("down2 pad(1,1)", 1, 2, (1, 1), 1, n * 5 // 4),
                                                 ("blur pad(2,2)", 1, 1, (2, 2), 1, n * 2)]:
            args = (up, down, pad)
            out.append((f"upfirdn2d {name} {list(shape)}", {
                "reference": lambda x=x, a=args, k=k2 * gain: ops.upfirdn2d(x, k, *a, backend="reference"),
                **compiled(lambda x=x, u=up, d=down, p=pad, k=k2 * gain: up_c(x, k, u, d, p * 2)),
                **{f"{b} 2-D filter": lambda x=x, a=args, k=k2 * gain, b=b: ops.upfirdn2d(x, k, *a, backend=b)
                   for b in [kernels] + triton},
                **{f"{b} separable": lambda x=x, a=args, k=k1 * gain ** 0.5, b=b: ops.upfirdn2d(x, k, *a, backend=b)
                   for b in [kernels] + triton},
                **{f"{b} separable channels_last": lambda x=xc, a=args, k=k1 * gain ** 0.5, b=b: ops.upfirdn2d(
                    x, k, *a, backend=b) for b in [kernels] + triton},
            }, "reference", moved))
    pc_backends = [kernels] + triton
    for B in (8, 512):
        x = randn(B, 3, 32, 32)
        s, z = torch.randn_like(x), torch.randn_like(x)
        a, b2, c = (torch.rand(B, device=device) for _ in range(3))
        key = torch.stack([torch.arange(B, device=device), torch.zeros(B, dtype=torch.long, device=device)], 1)
        out.append((f"predictor_step [{B}, 3, 32, 32]", {
            **{name: lambda x=x, s=s, z=z, a=a, b=b2, c=c, n=name: ops.predictor_step(x, s, a, b, c, noise=z, backend=n)
               for name in ["reference"] + pc_backends},
            # What a sampler step costs with its noise: drawn by torch first, or inside the kernel.
            **{f"torch.randn + {name}": lambda x=x, s=s, a=a, b=b2, c=c, n=name: ops.predictor_step(
                x, s, a, b, c, noise=torch.randn_like(x), backend=n) for name in pc_backends},
            **{f"{name} in-kernel noise": lambda x=x, s=s, a=a, b=b2, c=c, k=key, n=name: ops.predictor_step(
                x, s, a, b, c, noise_key=k, backend=n) for name in pc_backends},
            **compiled(lambda x=x, s=s, z=z, a=a, b=b2, c=c: pred_c(x, s, z, a, b, c))}, "reference", 5 * x.numel() * 4))
        out.append((f"langevin_step [{B}, 3, 32, 32]", {
            **{name: lambda x=x, s=s, z=z, a=a, n=name: ops.langevin_step(x, s, a, 0.16, noise=z, backend=n)
               for name in ["reference"] + pc_backends},
            **compiled(lambda x=x, s=s, z=z, a=a: lang_c(x, s, z, a, 0.16, False))}, "reference", 5 * x.numel() * 4))
    return out


def measure(fns, rounds, inner, sync):
    times = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(rounds):
        for k, f in fns.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            sync()
            times[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def machine(device):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"device": device, "cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "fastsde": fastsde.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--inner", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = p.parse_args()
    rows = []
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for name, fns, base, nbytes in cases(args.device):
        if args.only not in name:
            continue
        med = measure(fns, args.rounds, args.inner, sync)
        for cand, t in med.items():
            rows.append({"case": name, "candidate": cand, "median_ms": t * 1e3,
                         "speedup_vs_baseline": med[base] / t, "baseline": base,
                         "GB_per_s": nbytes / t / 1e9})
    info = machine(args.device)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "rows": rows}, fh, indent=1)
    where = info.get("gpu") or f"{info['cpu']}, {info['threads']} threads"
    print(f"# {where}, torch {info['torch']}, {info['date']}")
    print(f"{'case':44s} {'candidate':28s} {'median ms':>10s} {'vs baseline':>11s} {'GB/s':>6s}")
    for r in rows:
        print(f"{r['case']:44s} {r['candidate']:28s} {r['median_ms']:10.3f} "
              f"{r['speedup_vs_baseline']:10.2f}x {r['GB_per_s']:6.1f}")


if __name__ == "__main__":
    main()
