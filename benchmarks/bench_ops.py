"""Op micro-benchmarks under pytest-benchmark: fastsde's kernels against eager PyTorch and a copy.

Each case (an op at one shape and dtype) times its candidates: eager PyTorch as the official code
runs it, the reference backend, the kernels (cpp on CPUs; cuda and triton on GPUs), channels_last
inputs, torch.compile of the reference (GPUs, or --compile), and a plain copy of the bytes the op
must move at least. Options: --device, --size (small: CPU batch 8; large: CIFAR-10's batch 512 and
more, past the L2 cache), --compile, --rounds, --inner (calls a round; one device sync a round).
The ops take turns, case by case, so that a run cut short has measured each of them.

    python -m pytest benchmarks/bench_ops.py --device cuda --benchmark-json OPS.json
    python benchmarks/table.py --from-pytest-benchmark OPS.json    # into results/ops-<machine>.csv
"""

import itertools
import os

import torch
import torch.nn.functional as F

from fastsde import ops
from fastsde.ops.group_norm import group_norm_reference
from fastsde.ops.pc_update import langevin_step_reference, predictor_step_reference
from fastsde.ops.upfirdn2d import upfirdn2d_reference
from fastsde.timing import sync

import table

COPY = "copy (same bytes)"
CL = torch.channels_last  # the layout the sampling engine runs the network in
SIZES = {  # shapes of each op; extra dtypes run on an op's first shape
    "small": dict(
        group_norm=[(8, 256, 32, 32), (8, 128, 32, 32), (8, 256, 16, 16)],
        upfirdn2d=[(8, 256, 16, 16), (8, 128, 32, 32)],
        pc=[(8, 3, 32, 32), (512, 3, 32, 32)],
        backward=[(8, 128, 32, 32)],
        dtypes=[torch.bfloat16, torch.float16],
    ),
    "large": dict(
        group_norm=[(512, 128, 32, 32), (512, 256, 16, 16)],
        upfirdn2d=[(512, 256, 16, 16), (512, 128, 32, 32)],
        pc=[(512, 3, 32, 32), (64, 3, 256, 256)],
        backward=[(512, 128, 32, 32), (2, 16, 1024, 1024)],
        dtypes=[torch.bfloat16],
    ),
}


class Case:
    """One op at one shape: make() builds its tensors t, each candidate is fn(t)."""

    def __init__(self, op, shape, dtype, make, candidates, baseline, nbytes):
        dt = str(dtype).split(".")[-1]
        self.name = table.case(op=op, shape="x".join(map(str, shape)), dtype=dt)
        self.make, self.candidates, self.baseline, self.nbytes = make, candidates, baseline, nbytes


def with_copy(nbytes, device, tensors):
    """The case's tensors and a source and target of a copy of nbytes in all (half read, half written)."""
    src = torch.randn(nbytes // 8, device=device)
    return dict(tensors, copy_src=src, copy_dst=torch.empty_like(src))


def copy(t):
    return t["copy_dst"].copy_(t["copy_src"])


def group_norm_case(shape, dtype, device, kernels, compiled, silu=True, offset=False):
    """GroupNorm (+SiLU; of x plus a per-channel offset, the time embedding, in channels_last)."""
    C, G, nbytes = shape[1], min(shape[1] // 4, 32), 2 * torch.Size(shape).numel() * dtype.itemsize
    layouts = {"": "xc"} if offset else {"": "x", " channels_last": "xc"}

    def make():
        x = torch.randn(shape, device=device, dtype=dtype)
        w, b, o = (torch.randn(s, device=device, dtype=dtype) for s in ((C,), (C,), (shape[0], C)))
        return with_copy(
            nbytes, device, dict(x=x, xc=x.contiguous(memory_format=CL), w=w, b=b, o=o if offset else None)
        )

    def eager(x):
        def fn(t):
            v = t[x] + t["o"][:, :, None, None] if offset else t[x]
            y = F.group_norm(v, G, t["w"], t["b"], 1e-6)
            return F.silu(y) if silu else y

        return fn

    def ours(backend, x):
        act = "silu" if silu else None
        return lambda t: ops.group_norm(t[x], G, t["w"], t["b"], act=act, offset=t["o"], backend=backend)

    base = ("eager add, " if offset else "eager ") + ("F.silu(F.group_norm)" if silu else "F.group_norm")
    cands = {base + tag: eager(x) for tag, x in layouts.items()}
    cands["reference"] = ours("reference", layouts[""])
    if compiled:
        x = layouts[""]
        cands["torch.compile(reference)"] = lambda t: compiled(t[x], G, t["w"], t["b"], 1e-6, silu, t["o"])
    cands.update({k + tag: ours(k, x) for tag, x in layouts.items() for k in kernels})
    op = "group_norm" + ("+silu" if silu else "") + ("_of_x+offset" if offset else "")
    return Case(op, shape, dtype, make, dict(cands, **{COPY: copy}), base, nbytes)


def group_norm_backward_case(shape, device, kernels, compiled):
    """dx, dw, db of GroupNorm+SiLU, each candidate's graph built once and kept."""
    C, G, nbytes = shape[1], min(shape[1] // 4, 32), 3 * torch.Size(shape).numel() * 4  # x, dy read; dx written
    forwards = {
        "eager F.silu(F.group_norm)": lambda x, w, b: F.silu(F.group_norm(x, G, w, b, 1e-6)),
        "reference": lambda x, w, b: ops.group_norm(x, G, w, b, act="silu", backend="reference"),
        **({"torch.compile(reference)": lambda x, w, b: compiled(x, G, w, b, 1e-6, True)} if compiled else {}),
        **{k: lambda x, w, b, k=k: ops.group_norm(x, G, w, b, act="silu", backend=k) for k in kernels},
    }
    forwards["eager F.silu(F.group_norm) channels_last"] = forwards["eager F.silu(F.group_norm)"]
    forwards.update({f"{k} channels_last": forwards[k] for k in kernels})

    def make():
        x, dy = torch.randn(shape, device=device), torch.randn(shape, device=device)
        w, b = torch.randn(C, device=device).requires_grad_(), torch.randn(C, device=device).requires_grad_()
        graphs = {}
        for name, f in forwards.items():
            layout = CL if name.endswith("channels_last") else torch.contiguous_format
            xs = x.contiguous(memory_format=layout).requires_grad_()
            graphs[name] = (f(xs, w, b), (xs, w, b), dy.contiguous(memory_format=layout))
        return with_copy(nbytes, device, graphs)

    def grad(name):
        return lambda t: torch.autograd.grad(t[name][0], t[name][1], t[name][2], retain_graph=True)

    cands = {name: grad(name) for name in forwards}
    return Case(
        "group_norm+silu_backward",
        shape,
        torch.float32,
        make,
        dict(cands, **{COPY: copy}),
        "eager F.silu(F.group_norm)",
        nbytes,
    )


def upfirdn2d_case(shape, dtype, resample, device, kernels, compiled):
    """upfirdn2d of NCSN++'s [1, 3, 3, 1] filter: 2-D, separable, separable on channels_last."""
    up, down, pad, gain, moves = {
        "up2": (2, 1, (2, 1), 4, 5),
        "down2": (1, 2, (1, 1), 1, 1.25),
        "blur": (1, 1, (2, 2), 1, 2),
    }[resample]
    nbytes = int(torch.Size(shape).numel() * dtype.itemsize * moves)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    taps /= taps.sum()

    def make():
        x = torch.randn(shape, device=device, dtype=dtype)
        k1, k2 = (taps * gain**0.5).to(device), (torch.outer(taps, taps) * gain).to(device)
        return with_copy(nbytes, device, dict(x=x, xc=x.contiguous(memory_format=CL), k1=k1, k2=k2))

    def ours(backend, x, k):
        return lambda t: ops.upfirdn2d(t[x], t[k], up, down, pad, backend=backend)

    cands = {"reference": ours("reference", "x", "k2")}
    if compiled:
        cands["torch.compile(reference)"] = lambda t: compiled(t["x"], t["k2"], up, down, pad * 2)
    for variant, x, k in (("2-D filter", "x", "k2"), ("separable", "x", "k1"), ("separable channels_last", "xc", "k1")):
        for b in kernels:
            cands[f"{b} {variant}"] = ours(b, x, k)
            if b == "cuda":
                cands[f"{b} {variant} direct kernel"] = untiled(ours(b, x, k))
    return Case(f"upfirdn2d_{resample}", shape, dtype, make, dict(cands, **{COPY: copy}), "reference", nbytes)


def untiled(fn):
    """fn with the CUDA upfirdn2d's tiled kernel switched off (FASTSDE_UPFIRDN2D_TILED=0)."""

    def run(t):
        os.environ["FASTSDE_UPFIRDN2D_TILED"] = "0"
        try:
            return fn(t)
        finally:
            del os.environ["FASTSDE_UPFIRDN2D_TILED"]

    return run


def pc_cases(shape, device, kernels, compiled):
    """The predictor and Langevin steps, with given noise, noise drawn by torch first, and in-kernel noise."""
    B, nbytes = shape[0], 5 * torch.Size(shape).numel() * 4

    def make():
        x, s, z = (torch.randn(shape, device=device) for _ in range(3))
        a, b, c = (torch.rand(B, device=device) for _ in range(3))
        key = torch.stack([torch.arange(B, device=device), torch.zeros(B, dtype=torch.long, device=device)], 1)
        return with_copy(nbytes, device, dict(x=x, s=s, z=z, a=a, b=b, c=c, key=key))

    def predictor(backend, noise="given"):
        def fn(t):
            z = dict(given=t["z"], torch=torch.randn_like(t["x"]), kernel=None)[noise]
            key = t["key"] if noise == "kernel" else None
            return ops.predictor_step(t["x"], t["s"], t["a"], t["b"], t["c"], noise=z, noise_key=key, backend=backend)

        return fn

    pred = {k: predictor(k) for k in ["reference"] + kernels}
    pred.update({f"torch.randn + {k}": predictor(k, "torch") for k in kernels})
    pred.update({f"{k} in-kernel noise": predictor(k, "kernel") for k in kernels})
    lang = {
        k: lambda t, k=k: ops.langevin_step(t["x"], t["s"], t["a"], 0.16, noise=t["z"], backend=k)
        for k in ["reference"] + kernels
    }
    if compiled:
        p_c, l_c = compiled
        pred["torch.compile(reference)"] = lambda t: p_c(t["x"], t["s"], t["z"], t["a"], t["b"], t["c"])
        lang["torch.compile(reference)"] = lambda t: l_c(t["x"], t["s"], t["z"], t["a"], 0.16, False)
    return [
        Case("predictor_step", shape, torch.float32, make, dict(pred, **{COPY: copy}), "reference", nbytes),
        Case("langevin_step", shape, torch.float32, make, dict(lang, **{COPY: copy}), "reference", nbytes),
    ]


def cases(device, size, compile):
    """The cases, the ops taking turns (a run cut short has measured each op)."""
    s = SIZES[size]
    kernels = (
        ["cuda"] + (["triton"] if "triton" in ops.available_backends(device) else []) if device == "cuda" else ["cpp"]
    )
    # One static compile per case: Dynamo would make the pads symbolic after two values, which
    # Inductor fails to lower, and the cases outnumber its recompiles of one function.
    torch._dynamo.config.recompile_limit = 64
    refs = (group_norm_reference, upfirdn2d_reference, predictor_step_reference, langevin_step_reference)
    gn_c, up_c, pred_c, lang_c = (torch.compile(f, dynamic=False) if compile else None for f in refs)
    first = lambda shapes: [(x, torch.float32) for x in shapes] + [(shapes[0], d) for d in s["dtypes"]]  # noqa: E731
    group_norms = []
    for shape, dtype in first(s["group_norm"]):
        group_norms.append(group_norm_case(shape, dtype, device, kernels, gn_c))
        if shape == s["group_norm"][0]:  # a residual block's GroupNorm_1: the time embedding added first
            group_norms.append(group_norm_case(shape, dtype, device, kernels, gn_c, offset=True))
        if dtype == torch.float32:
            group_norms.append(group_norm_case(shape, dtype, device, kernels, None, silu=False))
    upfirdn2ds = [
        upfirdn2d_case(shape, dtype, r, device, kernels, up_c)
        for shape, dtype in first(s["upfirdn2d"])
        for r in ("up2", "down2", "blur")
    ]
    pcs = [c for shape in s["pc"] for c in pc_cases(shape, device, kernels, pred_c and (pred_c, lang_c))]
    backward = [group_norm_backward_case(shape, device, kernels, gn_c) for shape in s["backward"]]
    turns = itertools.zip_longest(group_norms, upfirdn2ds, pcs, backward)
    return [c for turn in turns for c in turn if c is not None]


def pytest_generate_tests(metafunc):
    opt = metafunc.config.getoption
    size = opt("size") or ("large" if opt("device") == "cuda" else "small")
    pairs = [
        (c, name)
        for c in cases(opt("device"), size, opt("compile") or opt("device") == "cuda")
        for name in c.candidates
    ]
    metafunc.parametrize("case,candidate", pairs, ids=[f"{c.name} | {name}" for c, name in pairs])


_made = {}  # the current case's tensors only


def test_op(benchmark, case, candidate, request):
    opt = request.config.getoption
    if case.name not in _made:
        _made.clear()
        _made[case.name] = case.make()
    t, fn, inner, device = _made[case.name], case.candidates[candidate], opt("inner"), opt("device")

    def run():
        for _ in range(inner):
            fn(t)
        sync(device)

    benchmark.group = case.name
    benchmark.extra_info.update(
        case=case.name, candidate=candidate, baseline=case.baseline, copy=COPY, bytes=case.nbytes, inner=inner
    )
    benchmark.pedantic(run, rounds=opt("rounds"), warmup_rounds=1)
