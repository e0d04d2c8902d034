"""Benchmark of the op backends on NCSN++-sized tensors: our kernels against eager baselines.

Baselines, measured in the same run: GroupNorm(+SiLU) against F.silu(F.group_norm(...)) (what the
official NCSN++ runs) and against the reference backend, forward and (GroupNorm+SiLU) backward, and
GroupNorm+SiLU of x + offset (the time embedding) against the addition, then those;
upfirdn2d against the reference backend, which is the official CPU path (zero insertion, pad,
depthwise convolution). On the CPU the kernels are the cpp backend; on a GPU (--device cuda) the
cuda backend (also with its upfirdn2d tiled kernel switched off), the triton backend and
torch.compile of each reference function (--compile adds it on the CPU too); the kernels again on
channels_last inputs (the sampling engine's layout). The ops take turns, case by case, so that a
run cut short has measured each of them.
Every case also times a plain device copy of as many bytes as the op must move at least (each input
read once, each output written once): "of copy" is a candidate's bandwidth over that copy's, the
fraction of the copy bandwidth that the targets speak of. On a GPU the tensors are the batch-512
ones of CIFAR-10 sampling and larger, so that they exceed the L2 cache and launches take longer than
their host-side dispatch (--size large; --size small gives the CPU's batch-8 tensors).
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
from fastsde.checkpoint import atomic_write_bytes
from fastsde.ops.group_norm import group_norm_reference
from fastsde.ops.pc_update import langevin_step_reference, predictor_step_reference
from fastsde.ops.upfirdn2d import upfirdn2d_reference

COPY = "copy (same bytes)"
# (GroupNorm shapes, upfirdn2d shapes, PC-step shapes, dtypes other than float32 for GroupNorm+SiLU
# and upfirdn2d on their first shape, GroupNorm+SiLU backward shapes): batch 8 on a CPU; on a GPU
# CIFAR-10's batch 512 (128-256 MiB a tensor in float32) and, for the PC steps, whose CIFAR-10
# tensors (6 MiB) sit in the L2 cache, 256x256 images as well; the backward also at the first level
# of a 1024x1024 config (4 groups of 4M elements a sample: the kernels split them).
SIZES = {
    "small": (
        [(8, 256, 32, 32), (8, 128, 32, 32), (8, 256, 16, 16)],
        [(8, 256, 16, 16), (8, 128, 32, 32)],
        [(8, 3, 32, 32), (512, 3, 32, 32)],
        [torch.bfloat16, torch.float16],
        [(8, 128, 32, 32)],
    ),
    "large": (
        [(512, 128, 32, 32), (512, 256, 16, 16)],
        [(512, 256, 16, 16), (512, 128, 32, 32)],
        [(512, 3, 32, 32), (64, 3, 256, 256)],
        [torch.bfloat16],
        [(512, 128, 32, 32), (2, 16, 1024, 1024)],
    ),
}


def fir(k, separable):
    """The normalised FIR filter of NCSN++ from its 1-D taps: 1-D (separable) or its 2-D outer product."""
    k = torch.tensor(k, dtype=torch.float32)
    k = k / k.sum()
    return k if separable else torch.outer(k, k)


def copy_of(nbytes, device):
    """A device copy that reads and writes nbytes in all (float32 elements)."""
    src = torch.randn(nbytes // 8, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def dtype_tag(dtype):
    """'' for float32, else ' bfloat16' and the like: the suffix of a case's name."""
    return "" if dtype == torch.float32 else f" {str(dtype).split('.')[-1]}"


def with_dtypes(shapes, dtypes):
    """(shape, dtype) pairs: every shape in float32, then the first shape in each of `dtypes`."""
    return [(s, torch.float32) for s in shapes] + [(shapes[0], d) for d in dtypes]


def untiled(fn):
    """fn run with the CUDA upfirdn2d's tiled kernel switched off (FASTSDE_UPFIRDN2D_TILED=0)."""

    def run():
        os.environ["FASTSDE_UPFIRDN2D_TILED"] = "0"
        try:
            return fn()
        finally:
            del os.environ["FASTSDE_UPFIRDN2D_TILED"]

    return run


def round_robin(*generators):
    """The items of the generators in turns: the first of each, then the second of each, ..."""
    generators = list(generators)
    while generators:
        for g in list(generators):
            try:
                yield next(g)
            except StopIteration:
                generators.remove(g)


def cases(device, size, compile):
    """Yields (name, {candidate: fn}, baseline name, bytes moved by one call at minimum), one case's
    tensors at a time."""
    kernels = "cuda" if device == "cuda" else "cpp"
    gn_shapes, up_shapes, pc_shapes, dtypes, gn_grad_shapes = SIZES[size]
    randn = lambda *shape, dtype=torch.float32: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    # Triton kernels join where they run for real (a GPU).
    triton = ["triton"] if device == "cuda" and "triton" in ops.available_backends(device) else []
    # One static compile per case: Dynamo would turn the pads symbolic after two values, which
    # Inductor fails to lower ("Exponent must be non-negative"), and the cases outnumber its 8
    # recompiles of one function (past them it would run eager under the compiled name: an error).
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    gn_c, up_c, pred_c, lang_c = (
        torch.compile(fn, dynamic=False)
        for fn in (group_norm_reference, upfirdn2d_reference, predictor_step_reference, langevin_step_reference)
    )
    compiled = lambda fn: {"torch.compile(reference)": fn} if compile else {}  # noqa: E731
    cl = torch.channels_last  # the layout the sampling engine runs the network in

    def group_norms():
        for shape, dtype in with_dtypes(gn_shapes, dtypes):
            x = randn(*shape, dtype=dtype)
            xc = x.contiguous(memory_format=cl)
            C = shape[1]
            w, b = randn(C, dtype=dtype), randn(C, dtype=dtype)
            G = min(C // 4, 32)
            nbytes = 2 * x.numel() * x.element_size()
            yield (
                f"group_norm+silu {list(shape)}{dtype_tag(dtype)}",
                {
                    "eager F.silu(F.group_norm)": lambda x=x, w=w, b=b, G=G: F.silu(F.group_norm(x, G, w, b, 1e-6)),
                    "reference": lambda x=x, w=w, b=b, G=G: ops.group_norm(x, G, w, b, act="silu", backend="reference"),
                    **compiled(lambda x=x, w=w, b=b, G=G: gn_c(x, G, w, b, 1e-6, True)),
                    **{
                        n: lambda x=x, w=w, b=b, G=G, n=n: ops.group_norm(x, G, w, b, act="silu", backend=n)
                        for n in [kernels] + triton
                    },
                    "eager F.silu(F.group_norm) channels_last": lambda x=xc, w=w, b=b, G=G: F.silu(
                        F.group_norm(x, G, w, b, 1e-6)
                    ),
                    **{
                        f"{n} channels_last": lambda x=xc, w=w, b=b, G=G, n=n: ops.group_norm(
                            x, G, w, b, act="silu", backend=n
                        )
                        for n in [kernels] + triton
                    },
                    COPY: copy_of(nbytes, device),
                },
                "eager F.silu(F.group_norm)",
                nbytes,
            )
            if shape == gn_shapes[0]:  # a residual block's GroupNorm_1: the time embedding added first
                o = randn(shape[0], C, dtype=dtype)

                def added(x=xc, w=w, b=b, G=G, o=o):
                    return F.silu(F.group_norm(x + o[:, :, None, None], G, w, b, 1e-6))

                yield (
                    f"group_norm+silu of x + offset {list(shape)}{dtype_tag(dtype)} channels_last",
                    {
                        "eager add, F.silu(F.group_norm)": added,
                        "reference": lambda x=xc, w=w, b=b, G=G, o=o: ops.group_norm(
                            x, G, w, b, act="silu", offset=o, backend="reference"
                        ),
                        **compiled(lambda x=xc, w=w, b=b, G=G, o=o: gn_c(x, G, w, b, 1e-6, True, o)),
                        **{
                            n: lambda x=xc, w=w, b=b, G=G, o=o, n=n: ops.group_norm(
                                x, G, w, b, act="silu", offset=o, backend=n
                            )
                            for n in [kernels] + triton
                        },
                        COPY: copy_of(nbytes, device),
                    },
                    "eager add, F.silu(F.group_norm)",
                    nbytes,
                )
            if dtype == torch.float32:
                yield (
                    f"group_norm {list(shape)}",
                    {
                        "eager F.group_norm": lambda x=x, w=w, b=b, G=G: F.group_norm(x, G, w, b, 1e-6),
                        **{
                            n: lambda x=x, w=w, b=b, G=G, n=n: ops.group_norm(x, G, w, b, backend=n)
                            for n in [kernels] + triton
                        },
                        COPY: copy_of(nbytes, device),
                    },
                    "eager F.group_norm",
                    nbytes,
                )

    def upfirdn2ds():
        k1, k2 = fir([1, 3, 3, 1], True).to(device), fir([1, 3, 3, 1], False).to(device)
        direct = {"cuda": untiled} if kernels == "cuda" else {}  # the cuda backend without its tiled kernel
        for shape, dtype in with_dtypes(up_shapes, dtypes):
            x = randn(*shape, dtype=dtype)
            xc = x.contiguous(memory_format=cl)
            n = x.numel() * x.element_size()
            for name, up, down, pad, gain, moved in [
                ("up2 pad(2,1)", 2, 1, (2, 1), 4, n * 5),
                ("down2 pad(1,1)", 1, 2, (1, 1), 1, n * 5 // 4),
                ("blur pad(2,2)", 1, 1, (2, 2), 1, n * 2),
            ]:
                args = (up, down, pad)
                cands = {
                    "reference": lambda x=x, a=args, k=k2 * gain: ops.upfirdn2d(x, k, *a, backend="reference"),
                    **compiled(lambda x=x, u=up, d=down, p=pad, k=k2 * gain: up_c(x, k, u, d, p * 2)),
                }
                for variant, xv, k in [
                    ("2-D filter", x, k2 * gain),
                    ("separable", x, k1 * gain**0.5),
                    ("separable channels_last", xc, k1 * gain**0.5),
                ]:
                    for b in [kernels] + triton:
                        fn = lambda x=xv, a=args, k=k, b=b: ops.upfirdn2d(x, k, *a, backend=b)  # noqa: E731
                        cands[f"{b} {variant}"] = fn
                        if b in direct:
                            cands[f"{b} {variant} direct kernel"] = direct[b](fn)
                cands[COPY] = copy_of(moved, device)
                yield (f"upfirdn2d {name} {list(shape)}{dtype_tag(dtype)}", cands, "reference", moved)

    def pc_steps():
        pc_backends = [kernels] + triton
        for shape in pc_shapes:
            x = randn(*shape)
            B = shape[0]
            s, z = torch.randn_like(x), torch.randn_like(x)
            a, b2, c = (torch.rand(B, device=device) for _ in range(3))
            key = torch.stack([torch.arange(B, device=device), torch.zeros(B, dtype=torch.long, device=device)], 1)
            nbytes = 5 * x.numel() * 4
            yield (
                f"predictor_step {list(shape)}",
                {
                    **{
                        name: lambda x=x, s=s, z=z, a=a, b=b2, c=c, n=name: ops.predictor_step(
                            x, s, a, b, c, noise=z, backend=n
                        )
                        for name in ["reference"] + pc_backends
                    },
                    # What a sampler step costs with its noise: drawn by torch first, or inside the kernel.
                    **{
                        f"torch.randn + {name}": lambda x=x, s=s, a=a, b=b2, c=c, n=name: ops.predictor_step(
                            x, s, a, b, c, noise=torch.randn_like(x), backend=n
                        )
                        for name in pc_backends
                    },
                    **{
                        f"{name} in-kernel noise": lambda x=x, s=s, a=a, b=b2, c=c, k=key, n=name: ops.predictor_step(
                            x, s, a, b, c, noise_key=k, backend=n
                        )
                        for name in pc_backends
                    },
                    **compiled(lambda x=x, s=s, z=z, a=a, b=b2, c=c: pred_c(x, s, z, a, b, c)),
                    COPY: copy_of(nbytes, device),
                },
                "reference",
                nbytes,
            )
            yield (
                f"langevin_step {list(shape)}",
                {
                    **{
                        name: lambda x=x, s=s, z=z, a=a, n=name: ops.langevin_step(x, s, a, 0.16, noise=z, backend=n)
                        for name in ["reference"] + pc_backends
                    },
                    **compiled(lambda x=x, s=s, z=z, a=a: lang_c(x, s, z, a, 0.16, False)),
                    COPY: copy_of(nbytes, device),
                },
                "reference",
                nbytes,
            )

    def group_norm_grads():
        for shape in gn_grad_shapes:
            C = shape[1]
            G = min(C // 4, 32)
            x, dy = randn(*shape), randn(*shape)
            w, b = randn(C).requires_grad_(), randn(C).requires_grad_()

            def grad(fn, layout=torch.contiguous_format, x=x, dy=dy, w=w, b=b):
                """dx, dw, db of fn(x, w, b), timed alone: its graph is kept for the repeated calls."""
                xs = x.contiguous(memory_format=layout).requires_grad_()
                y = fn(xs, w, b)
                dys = dy.contiguous(memory_format=layout)
                return lambda: torch.autograd.grad(y, (xs, w, b), dys, retain_graph=True)

            silu_gn = lambda x, w, b, G=G: F.silu(F.group_norm(x, G, w, b, 1e-6))  # noqa: E731
            ours = lambda n, G=G: lambda x, w, b: ops.group_norm(x, G, w, b, act="silu", backend=n)  # noqa: E731
            nbytes = 3 * x.numel() * x.element_size()  # x and dy read, dx written
            yield (
                f"group_norm+silu backward {list(shape)}",
                {
                    "eager F.silu(F.group_norm)": grad(silu_gn),
                    "reference": grad(ours("reference")),
                    **compiled(grad(lambda x, w, b, G=G: gn_c(x, G, w, b, 1e-6, True))),
                    **{n: grad(ours(n)) for n in [kernels] + triton},
                    "eager F.silu(F.group_norm) channels_last": grad(silu_gn, cl),
                    **{f"{n} channels_last": grad(ours(n), cl) for n in [kernels] + triton},
                    COPY: copy_of(nbytes, device),
                },
                "eager F.silu(F.group_norm)",
                nbytes,
            )

    # The ops take turns, so that a run cut short (the device check's time limit) has measured each.
    yield from round_robin(group_norms(), upfirdn2ds(), pc_steps(), group_norm_grads())


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
    info = {
        "device": device,
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "fastsde": fastsde.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--size", choices=sorted(SIZES), help="tensor sizes (default: large on cuda, small on cpu)")
    p.add_argument("--compile", action="store_true", help="torch.compile of the references on the CPU too")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--inner", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = p.parse_args()
    gpu = args.device == "cuda"
    size = args.size or ("large" if gpu else "small")
    rows = []
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    info = dict(machine(args.device), size=size)
    for name, fns, base, nbytes in cases(args.device, size, args.compile or gpu):
        if args.only not in name:
            continue
        med = measure(fns, args.rounds, args.inner, sync)
        for cand, t in med.items():
            rows.append(
                {
                    "case": name,
                    "candidate": cand,
                    "median_ms": t * 1e3,
                    "speedup_vs_baseline": med[base] / t,
                    "baseline": base,
                    "GB_per_s": nbytes / t / 1e9,
                    "of_copy": med[COPY] / t,
                }
            )
        if args.json:  # after every case, so that a run cut short (the device check's timeout) keeps them
            atomic_write_bytes(args.json, json.dumps({"machine": info, "rows": rows}, indent=1))
    where = info.get("gpu") or f"{info['cpu']}, {info['threads']} threads"
    print(f"# {where}, torch {info['torch']}, {info['date']}")
    print(table(rows))


def table(rows):
    """The rows as text: time, ratio to the case's baseline, bandwidth and its fraction of a copy's."""
    lines = [f"{'case':52s} {'candidate':42s} {'median ms':>10s} {'vs baseline':>11s} {'GB/s':>7s} {'of copy':>7s}"]
    for r in rows:
        lines.append(
            f"{r['case']:52s} {r['candidate']:42s} {r['median_ms']:10.3f} "
            f"{r['speedup_vs_baseline']:10.2f}x {r['GB_per_s']:7.1f} {r['of_copy']:7.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
