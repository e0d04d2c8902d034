"""The benchmarks' shared harness: the paths compared, the official code's import, and the accounting.

Every path runs one network's weights. The official loop (reference ops, NCHW, torch's precision
settings, the official PC loop) is the baseline of every ratio; docs/benchmarks.md describes the rest.
"""

import collections
import contextlib
import copy
import functools
import math
import os
import statistics
import sys
import time
import types

import torch

from fastsde import Philox, checkpoint, data, sampling
from fastsde.engine import fast_score_fn
from fastsde.generate import default_eps
from fastsde.sde import VPSDE
from fastsde.timing import sync, time_runs


def paths_for(device, official=None, precisions=None, compile=False):
    """The benchmarked paths for `device`: dicts of name, backend, precision, cuda_graph, compile, fold
    (fast_score_fn's arguments; fastsde's paths fold the network's constants, the official loop not)."""
    cuda = torch.device(device).type == "cuda"
    # The official loop runs under torch's precision settings, as the official code does: on GPUs,
    # TF32 convolutions by default (fastsde's fp32 is float32 throughout).
    paths = [
        dict(
            name="official loop",
            backend="reference",
            precision=None,
            cuda_graph=False,
            channels_last=False,
            compile=False,
            fold=False,
        )
    ]
    if official:
        paths.append(dict(name="official code", official=official, precision=None))

    def fast(p, suffix="", **changes):  # fastsde's path in precision p, as changes alter it
        base = dict(backend=None, precision=p, cuda_graph=False, channels_last=True, compile=False, fold=True)
        return dict(base, name=f"fastsde {p}{suffix}", **changes)

    precisions = precisions or (("fp32", "tf32", "bf16") if cuda else ("fp32",))
    for p in precisions:
        paths.append(fast(p))
        if cuda:
            paths.append(fast(p, " + graph", cuda_graph=True))
        if compile:
            paths.append(fast(p, " + compile", compile=True))
    if cuda:  # the fastest path again with its noise drawn inside the PC kernels
        paths.append(fast(precisions[-1], " + graph + philox", cuda_graph=True, noise="philox"))
    return paths


@contextlib.contextmanager
def _backend(name):
    saved = os.environ.get("FASTSDE_BACKEND")
    if name:
        os.environ["FASTSDE_BACKEND"] = name
    else:
        os.environ.pop("FASTSDE_BACKEND", None)
    try:
        yield
    finally:
        os.environ.pop("FASTSDE_BACKEND", None) if saved is None else os.environ.update(FASTSDE_BACKEND=saved)


def path_score_fn(model, sde, config, device, path):
    """fast_score_fn of a copy of `model` as fastsde `path` runs it (backend, precision, layout, compile)."""
    with _backend(path["backend"]):
        return fast_score_fn(
            model,
            sde,
            bool(config.training.continuous),
            device,
            path["precision"],
            channels_last=path["channels_last"],
            compile=path["compile"],
            fold=path["fold"],
        )


def config_pc_sample(score_fn, sde, config, shape, generator, device, cuda_graph=False):
    """pc_sample as the config's sampling section sets it (the official batch-averaged Langevin step)."""
    s = config.sampling
    return sampling.pc_sample(
        score_fn,
        sde,
        shape,
        s.predictor,
        s.corrector,
        s.snr,
        s.n_steps_each,
        s.probability_flow,
        s.noise_removal,
        default_eps(sde),
        generator,
        device,
        cuda_graph=cuda_graph,
    )


def fastsde_sampler(model, sde, config, device, path):
    """sampler(name, steps) -> run(batch, seed) -> (samples, nfe) of one fastsde path, all samplers sharing
    one prepared (and perhaps compiled) network: 'pc' (the config's predictor / corrector, N =
    steps, the official batch-averaged Langevin step) or a fast solver with `steps` steps. The
    noise comes from a torch.Generator, or from a fastsde.Philox where path['noise'] is 'philox'."""
    score_fn = path_score_fn(model, sde, config, device, path)
    eps = default_eps(sde)

    def sampler(name, steps):
        pc_sde = checkpoint.sde_from_config(config, steps) if name == "pc" else sde

        def run(batch, seed):
            shape = (batch, config.data.num_channels, config.data.image_size, config.data.image_size)
            gen = (
                Philox(range(seed * batch, (seed + 1) * batch), device)
                if path.get("noise") == "philox"
                else torch.Generator(device).manual_seed(seed)
            )
            with _backend(path["backend"]):
                if name == "pc":
                    return config_pc_sample(score_fn, pc_sde, config, shape, gen, device, path["cuda_graph"])
                return sampling.ode_sample(
                    score_fn,
                    sde,
                    shape,
                    name,
                    steps=steps,
                    eps=eps,
                    generator=gen,
                    device=device,
                    cuda_graph=path["cuda_graph"],
                )

        return run

    return sampler


def official_modules(path):
    """The modules sampling, sde_lib, losses and utils (models.utils) of a local checkout of
    yang-song/score_sde_pytorch. Without CUDA its `op` package is imported with the JIT build
    switched off (its upfirdn2d then takes its own pure-PyTorch path, as the official code does on a
    CPU)."""
    import torch.utils.cpp_extension as cpp_extension

    if not os.path.isfile(os.path.join(path, "sampling.py")) or not os.path.isdir(os.path.join(path, "models")):
        raise FileNotFoundError(f"official={path}: not a score_sde_pytorch checkout (no sampling.py, models/)")
    if os.path.abspath(path) not in sys.path:
        sys.path.insert(0, os.path.abspath(path))
    load = cpp_extension.load
    if not torch.cuda.is_available():
        cpp_extension.load = lambda *args, **kwargs: None
    try:
        import losses as official_losses  # noqa: PLC0415
        import sampling as official_sampling
        import sde_lib
        from models import ddpm, ncsnpp, ncsnv2, utils  # noqa: F401  (registers the models)
    finally:
        cpp_extension.load = load
    return types.SimpleNamespace(sampling=official_sampling, sde_lib=sde_lib, losses=official_losses, utils=utils)


def official_model(model, config, device, path, N):
    """(modules, net, sde) of the official code (official_modules(path)): its network, as its
    create_model makes it, with `model`'s weights, and its SDE with N steps."""
    official = official_modules(path)
    config = copy.deepcopy(config)
    config.device = torch.device(device)
    net = official.utils.create_model(config)
    net.module.load_state_dict(model.state_dict())
    return official, net, official_sde(official.sde_lib, config, N)


def official_sde(sde_lib, config, N):
    """The official code's SDE (its module sde_lib) for the config, with N steps."""
    m, kind = config.model, config.training.sde.lower()
    if kind == "vesde":
        return sde_lib.VESDE(m.sigma_min, m.sigma_max, N)
    return (sde_lib.VPSDE if kind == "vpsde" else sde_lib.subVPSDE)(m.beta_min, m.beta_max, N)


def official_sampler(model, sde, config, device, path, steps):
    """run(batch, seed) -> (samples, nfe) of the official code's PC sampler with `model`'s weights,
    N = steps."""
    official, net, osde = official_model(model, config, device, path["official"], steps)
    osampling, s = official.sampling, config.sampling
    predictor = None if s.predictor == "none" else osampling.get_predictor(s.predictor.lower())
    corrector = None if s.corrector == "none" else osampling.get_corrector(s.corrector.lower())

    def run(batch, seed):
        torch.manual_seed(seed)
        shape = (batch, config.data.num_channels, config.data.image_size, config.data.image_size)
        fn = osampling.get_pc_sampler(
            osde,
            shape,
            predictor,
            corrector,
            lambda x: x,
            s.snr,
            s.n_steps_each,
            s.probability_flow,
            bool(config.training.continuous),
            s.noise_removal,
            default_eps(sde),
            device,
        )
        return fn(net)

    return run


def matrix_flops(model, sde, config, device):
    """FLOPs of one network call on one image in its matrix products (convolutions, linear layers,
    attention), as torch's FlopCounterMode counts them: what the arithmetic floor is made of."""
    from torch.utils.flop_counter import FlopCounterMode

    from fastsde.models import get_score_fn

    training = model.training
    x = torch.zeros(1, config.data.num_channels, config.data.image_size, config.data.image_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        get_score_fn(sde, model, train=False, continuous=bool(config.training.continuous))(
            x, torch.full((1,), 0.5, device=device)
        )
    model.train(training)
    return counter.get_total_flops()


@functools.lru_cache
def matrix_rate(device, rounds=5):
    """FLOP/s of the faster of a float32 and a bfloat16 large square matmul (median of rounds),
    measured here once a process: the floor is the fastest arithmetic the device offers (on GPUs
    the bf16 rate the targets speak of; on CPUs whichever their units run faster)."""
    n = 8192 if torch.device(device).type == "cuda" else 1024
    rates = []
    for dtype in (torch.float32, torch.bfloat16):
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        a @ b
        times = []
        for _ in range(rounds):
            sync(device)
            start = time.perf_counter()
            for _ in range(4):
                a @ b
            sync(device)
            times.append((time.perf_counter() - start) / 4)
        rates.append(2 * n**3 / statistics.median(times))
    return max(rates)


def throughput(
    model,
    sde,
    config,
    device,
    batches=(1, 8),
    samplers=("pc", "dpmpp_2m"),
    pc_steps=25,
    solver_steps=20,
    rounds=3,
    official=None,
    precisions=None,
    compile=False,
    label="model",
    progress=None,
):
    """Rows of images per second for each sampler, batch size and path (see the module docstring),
    with the fraction of the arithmetic floor reached: the seconds an image's matrix FLOPs (network
    evaluations x matrix_flops) take at matrix_rate, over the seconds it took.
    progress(rows), if given, is called with the rows of each sampler and batch size as they come."""
    rows = []
    flops, rate = matrix_flops(model, sde, config, device), matrix_rate(device)
    paths = paths_for(device, official, precisions, compile)
    prepared = {p["name"]: fastsde_sampler(model, sde, config, device, p) for p in paths if "official" not in p}
    for sampler in samplers:
        # A PC run of s steps (a discrete VP / sub-VP SDE needs N > beta_max) stands for one of the
        # config's N; each step costs the same. A CUDA-graphed run is timed at s and 2 s steps too:
        # its step costs the difference over s, so that what it pays once (the eager first step,
        # the capture) counts once in the N-step run, not N / s times.
        s = solver_steps
        if sampler == "pc":
            s = max(pc_steps, math.floor(sde.beta_1) + 1) if isinstance(sde, VPSDE) else pc_steps
        lengths = {p["name"]: (s, 2 * s) if sampler == "pc" and p.get("cuda_graph") else (s,) for p in paths}
        runs = {}
        for p in paths:
            for n in lengths[p["name"]]:
                if "official" not in p:
                    runs[p["name"], n] = prepared[p["name"]](sampler, n)
                elif sampler == "pc":
                    runs[p["name"], n] = official_sampler(model, sde, config, device, p, n)
        for batch in batches:
            timed = time_runs(runs, batch, rounds, device)
            seconds = {}  # of a whole run: the config's N PC steps, or the solver's steps
            for name in dict.fromkeys(name for name, _ in timed):
                short = timed[name, s]["seconds"]
                if sampler != "pc":
                    seconds[name] = short
                elif len(lengths[name]) == 1:
                    seconds[name] = short * sde.N / s
                else:  # (clamped at 0: a longer run measured faster than a shorter one is noise)
                    seconds[name] = short + (sde.N - s) * max(timed[name, 2 * s]["seconds"] - short, 0) / s
            # Every path evaluates the network as often; the official code's own count includes a
            # 'none' corrector's evaluations, which it skips.
            nfe = round(timed["official loop", s]["nfe"] * (sde.N / s if sampler == "pc" else 1))
            base, code = seconds["official loop"], seconds.get("official code")
            new = []
            for name, t in seconds.items():
                peaks = [timed[name, n]["peak"] for n in lengths[name] if timed[name, n]["peak"] is not None]
                new.append(
                    {
                        "model": label,
                        "sampler": sampler,
                        "batch": batch,
                        "path": name,
                        "nfe": nfe,
                        "timed_steps": list(lengths[name]),
                        "seconds_per_batch": t,
                        "images_per_s": batch / t,
                        "vs_official_loop": base / t,
                        "vs_official_code": None if code is None else code / t,
                        "of_floor": nfe * flops * batch / rate / t,
                        "matrix_gflop_per_call": flops / 1e9,
                        "matrix_tflop_s": rate / 1e12,
                        "first_run_s": timed[name, s]["first"],
                        "peak_memory_MiB": max(peaks) / 2**20 if peaks else None,
                    }
                )
            rows += new
            if progress:
                progress(new)
    return rows


def op_counts(fn, *args):
    """fn(*args) and the ATen / custom ops that call dispatched, a Counter by op name, views left out
    (they launch nothing): on any device, what each op costs a GPU at least, one launch."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts = collections.Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            # (_unsafe_view is a view that its schema does not declare.)
            if not func.is_view and func is not torch.ops.aten._unsafe_view.default:
                counts[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        out = fn(*args)
    return out, counts


def op_profile(model, sde, config, device, batch, precisions=("fp32",), calls=3):
    """Where one network call's time goes, on the official loop's path and on fastsde's (kernels,
    channels_last) in each of `precisions`: each op's self time (on CUDA the time of the kernels it
    launched, elsewhere its CPU time) per call, over `calls` profiled calls after two warm-up calls,
    with its share of the path's total; also the wall time of an unprofiled call, the ops a call
    dispatches (op_counts: any device) and, on CUDA, the device events (kernels, copies) a call.
    Returns one dict per path: path, batch, wall_ms, ops_per_call, kernels_per_call, total_ms and ops, a list of
    (op, calls a call, ms a call, share), largest first."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(device).type == "cuda"
    shape = (batch, config.data.num_channels, config.data.image_size, config.data.image_size)
    x = torch.randn(shape, generator=torch.Generator(device).manual_seed(0), device=device)
    t = torch.full((batch,), 0.5, device=device)
    out = []
    for path in paths_for(device, precisions=tuple(precisions)):
        if path.get("cuda_graph"):  # a replayed graph shows as one event: nothing to break down
            continue
        score_fn = path_score_fn(model, sde, config, device, path)
        with _backend(path["backend"]), torch.no_grad():
            walls = []
            for _ in range(2 + calls):
                sync(device)
                start = time.perf_counter()
                score_fn(x, t)
                sync(device)
                walls.append(time.perf_counter() - start)
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=activities) as prof:
                for _ in range(calls):
                    score_fn(x, t)
                sync(device)
            dispatched = sum(op_counts(score_fn, x, t)[1].values())
        self_us = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
        ops = sorted(
            ((e.key, e.count / calls, self_us(e) / calls / 1e3) for e in prof.key_averages() if self_us(e) > 0),
            key=lambda o: -o[2],
        )
        total = sum(ms for _, _, ms in ops)
        kernels = sum(e.device_type == DeviceType.CUDA for e in prof.events()) / calls if cuda else None
        out.append(
            {
                "path": path["name"],
                "batch": batch,
                "wall_ms": statistics.median(walls[2:]) * 1e3,
                "ops_per_call": dispatched,
                "kernels_per_call": kernels,
                "total_ms": total,
                "ops": [(name, n, ms, ms / total) for name, n, ms in ops],
            }
        )
    return out


def op_profile_table(profiles, top=12):
    """The op_profile results as text: per path, the `top` ops by self time, then the rest summed."""
    lines = []
    for p in profiles:
        kernels = "" if p["kernels_per_call"] is None else f", {p['kernels_per_call']:.0f} device events"
        lines.append(
            f"{p.get('model', '')} batch {p['batch']} {p['path']}: {p['wall_ms']:.3f} ms a call "
            f"(wall), op self times {p['total_ms']:.3f} ms, {p['ops_per_call']} ops{kernels}"
        )
        rest = p["ops"][top:]
        for name, n, ms, share in p["ops"][:top] + (
            [(f"{len(rest)} other ops", sum(o[1] for o in rest), sum(o[2] for o in rest), sum(o[3] for o in rest))]
            if rest
            else []
        ):
            lines.append(f"    {name[:48]:48s} {n:6.0f}x {ms:9.3f} ms {share:7.1%}")
    return "\n".join(lines)


@contextlib.contextmanager
def saved_for_backward(exclude=()):
    """Records what autograd saves for the backward while the block runs: yields a dict, storage
    address -> bytes, each storage once, those of the tensors in `exclude` (the parameters) left
    out. Device-independent: the activation memory of a training step."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved


def train_memory(model, sde, config, device, batch, official=None, label="model"):
    """Memory of a training step (denoising score matching loss, backward, Adam step) on the official
    loop's path (the reference backend), the official code itself (official: a local checkout; on a
    CPU it runs its pure-PyTorch upfirdn2d, which saves more than its CUDA kernel) and fastsde's
    kernels: MiB of activations that autograd saves for the backward (any device) and the peak
    allocated (CUDA; None elsewhere). The second step is measured, once the optimizer state exists."""
    from fastsde import losses, train

    cuda = torch.device(device).type == "cuda"
    t = config.training
    ours = train.objective(config, sde)
    paths = [("official loop", "reference", copy.deepcopy(model), ours)]
    if official:
        modules, net, osde = official_model(model, config, device, official, config.model.num_scales)
        paths.append(
            (
                "official code",
                None,
                net,
                modules.losses.get_sde_loss_fn(osde, True, t.reduce_mean, t.continuous, t.likelihood_weighting),
            )
        )
    paths.append(("fastsde fp32", None, copy.deepcopy(model), ours))
    x = (
        torch.rand(
            batch,
            config.data.num_channels,
            config.data.image_size,
            config.data.image_size,
            device=device,
            generator=torch.Generator(device).manual_seed(0),
        )
        * 2
        - 1
    )
    rows = []
    for name, backend, net, loss_fn in paths:
        net.train()
        opt = losses.optimizer(net.parameters())
        with _backend(backend):
            for _ in range(2):
                opt.zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                with saved_for_backward(net.parameters()) as saved:
                    loss = loss_fn(net, x)
                loss.backward()
                opt.step()
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
        rows.append(
            {
                "model": label,
                "batch": batch,
                "path": name,
                "saved_MiB": sum(saved.values()) / 2**20,
                "train_step_peak_MiB": peak,
            }
        )
        del net, opt, loss
    return rows


def train_memory_table(rows):
    """The train_memory rows as text, each against the official loop and the official code: ratios
    of the peak where it was measured (CUDA), else of the saved activations."""
    lines = [
        f"{'training step memory':28s} {'batch':>5s} {'path':24s} {'saved MiB':>10s} {'peak MiB':>9s} "
        f"{'vs official loop':>16s} {'vs official code':>16s}"
    ]
    base = {(r["model"], r["batch"], r["path"]): r for r in rows}
    for r in rows:
        key = "train_step_peak_MiB" if r["train_step_peak_MiB"] is not None else "saved_MiB"
        ratios = []
        for ref in ("official loop", "official code"):
            b = base.get((r["model"], r["batch"], ref))
            ratios.append(f"{'-':>16s}" if b is None else f"{r[key] / b[key]:15.2f}x")
        peak = "" if r["train_step_peak_MiB"] is None else f"{r['train_step_peak_MiB']:9.0f}"
        lines.append(
            f"{r['model'][:28]:28s} {r['batch']:5d} {r['path']:24s} {r['saved_MiB']:10.1f} {peak:>9s} "
            + " ".join(ratios)
        )
    return "\n".join(lines)


def likelihood_speed(
    model,
    sde,
    config,
    device,
    batches=(1, 8),
    evals=3,
    rounds=3,
    precisions=None,
    compile=False,
    label="model",
    progress=None,
):
    """Rows of what a likelihood costs on each path (CUDA graphs apart: autograd is not captured):
    the milliseconds of one evaluation of its right-hand side (likelihood.ode_with_divergence: the
    probability-flow drift and the Hutchinson vector-Jacobian product) at t = 0.5, from `evals`
    evaluations of data-like x; a bits/dim evaluation takes as many of them as RK45 needs, alike on
    every path. Medians over `rounds`, interleaved; peak memory on CUDA. progress(rows) as in
    throughput."""
    from fastsde import likelihood

    paths = [p for p in paths_for(device, precisions=precisions, compile=compile) if not p.get("cuda_graph")]
    shape = (config.data.num_channels, config.data.image_size, config.data.image_size)

    def runner(path):
        score_fn = path_score_fn(model, sde, config, device, path)

        def run(batch, seed):
            g = torch.Generator(device).manual_seed(seed)
            x = torch.rand((batch, *shape), generator=g, device=device) * 2 - 1
            rhs = likelihood.ode_with_divergence(sde, score_fn, likelihood.hutchinson_probe(x, "rademacher", g))
            state = torch.cat([x.flatten(1), x.new_zeros(batch, 1)], dim=1)
            with _backend(path["backend"]):
                for _ in range(evals):
                    out = rhs(0.5, state)
            return out, evals

        return run

    runs = {p["name"]: runner(p) for p in paths}
    rows = []
    for batch in batches:
        timed = time_runs(runs, batch, rounds, device)
        base = timed["official loop"]["seconds"]
        new = [
            {
                "model": label,
                "batch": batch,
                "path": name,
                "evals": evals,
                "ms_per_eval": t["seconds"] / evals * 1e3,
                "vs_official_loop": base / t["seconds"],
                "first_run_s": t["first"],
                "peak_memory_MiB": None if t["peak"] is None else t["peak"] / 2**20,
            }
            for name, t in timed.items()
        ]
        rows += new
        if progress:
            progress(new)
    return rows


def likelihood_table(rows):
    """The likelihood_speed rows as text."""
    lines = [
        f"{'likelihood (drift + VJP)':28s} {'batch':>5s} {'path':24s} {'ms/eval':>9s} {'vs official loop':>16s} "
        f"{'peak MiB':>9s}"
    ]
    for r in rows:
        mem = "" if r["peak_memory_MiB"] is None else f"{r['peak_memory_MiB']:9.0f}"
        lines.append(
            f"{r['model'][:28]:28s} {r['batch']:5d} {r['path']:24s} {r['ms_per_eval']:9.3f} "
            f"{r['vs_official_loop']:15.2f}x {mem:>9s}"
        )
    return "\n".join(lines)


def accuracy(model, sde, config, device, batch=16, solver_steps=20, pc_steps=None, seed=0):
    """What each fast path costs: from the same prior noise (and, for PC, the same noise at every
    step), the images of the config's PC sampler (pc_steps steps, default its N) and of the ODE
    sampler (DPM-Solver++ 2M with solver_steps steps, and RK45) under each precision / CUDA graphs /
    channels_last with folded constants against fp32 eager NCHW unfolded, in 8-bit pixel units: the
    mean and largest absolute difference, and the sample statistics: the shift of the samples' mean
    and the ratio of their standard deviations."""
    cuda = torch.device(device).type == "cuda"
    shape = (batch, config.data.num_channels, config.data.image_size, config.data.image_size)
    z = sde.prior_sampling(shape, torch.Generator(device).manual_seed(seed), device=device)
    eps = default_eps(sde)
    pc_sde = checkpoint.sde_from_config(config, pc_steps) if pc_steps else sde
    # (name, precision, CUDA graph); every variant runs channels_last and folded, the reference
    # NCHW and unfolded (the official network's arithmetic).
    variants = [("fp32 channels_last", "fp32", False), ("bf16", "bf16", False), ("fp16", "fp16", False)]
    if cuda:
        variants += [("tf32", "tf32", False), ("fp32 + graph", "fp32", True), ("bf16 + graph", "bf16", True)]
    pixels = lambda x: data.to_uint8(x, config.data.centered).float()  # noqa: E731
    rows = []
    for method, steps in (("pc", None), ("dpmpp_2m", solver_steps), ("RK45", None)):

        def solve(precision, fast, graph):
            score_fn = fast_score_fn(
                model, sde, bool(config.training.continuous), device, precision, channels_last=fast, fold=fast
            )
            if method == "pc":
                gen = torch.Generator(device).manual_seed(seed)
                x, nfe = config_pc_sample(score_fn, pc_sde, config, shape, gen, device, graph)
            else:
                x, nfe = sampling.ode_sample(
                    score_fn,
                    sde,
                    shape,
                    method,
                    steps=steps,
                    eps=eps,
                    z=z.clone(),
                    cuda_graph=graph and method != "RK45",
                )
            return pixels(x), nfe

        ref, ref_nfe = solve("fp32", False, False)
        for name, precision, graph in variants:
            if graph and method == "RK45":
                continue
            x, nfe = solve(precision, True, graph)
            diff = (x - ref).abs()
            rows.append(
                {
                    "sampler": method,
                    "variant": name,
                    "mean_abs_diff_8bit": float(diff.mean()),
                    "max_abs_diff_8bit": float(diff.max()),
                    "mean_shift_8bit": float(x.mean() - ref.mean()),
                    "std_ratio": float(x.std() / ref.std()),
                    "nfe": nfe,
                    "nfe_fp32": ref_nfe,
                }
            )
    return rows


def likelihood_accuracy(model, sde, config, device, batch=16, seed=0, tol=1e-5):
    """What each precision costs a likelihood: bits/dim of `batch` images the model itself drew
    (DPM-Solver++ 2M, 20 steps, fp32), with the same dequantization and Hutchinson probes on every
    path (likelihood.dataset_bits_per_dim, RK45 at rtol = atol = tol, officially 1e-5), fastsde's paths
    against fp32 eager NCHW unfolded: the mean bits/dim, the mean and largest difference of an
    image's, and the network evaluations RK45 needed (its step control meets the score's rounding).
    No CUDA graphs: autograd, which the divergence needs, is not captured."""
    from fastsde import likelihood

    cuda = torch.device(device).type == "cuda"
    centered, continuous = config.data.centered, bool(config.training.continuous)
    shape = (batch, config.data.num_channels, config.data.image_size, config.data.image_size)

    def path(fast, precision):
        return fast_score_fn(
            model,
            sde,
            continuous,
            device,
            precision,  # noqa: E731
            channels_last=fast,
            fold=fast,
        )

    x, _ = sampling.ode_sample(
        path(False, "fp32"),
        sde,
        shape,
        "dpmpp_2m",
        steps=20,
        eps=default_eps(sde),
        generator=torch.Generator(device).manual_seed(seed),
        device=device,
    )
    images = data.to_uint8(x, centered).cpu()

    def bpd(score_fn):
        _, per_image, _, nfe = likelihood.dataset_bits_per_dim(
            score_fn, sde, images, centered, batch, seed=seed, device=device, rtol=tol, atol=tol
        )
        return per_image.double(), nfe

    ref, ref_nfe = bpd(path(False, "fp32"))
    rows = []
    for precision in ("fp32", "bf16", "fp16") + (("tf32",) if cuda else ()):
        got, nfe = bpd(path(True, precision))
        diff = (got - ref).abs()
        rows.append(
            {
                "variant": "fp32 channels_last" if precision == "fp32" else precision,
                "bpd": float(got.mean()),
                "bpd_fp32": float(ref.mean()),
                "mean_abs_diff_bpd": float(diff.mean()),
                "max_abs_diff_bpd": float(diff.max()),
                "nfe": nfe,
                "nfe_fp32": ref_nfe,
            }
        )
    return rows


def likelihood_accuracy_table(rows):
    """The likelihood_accuracy rows as text."""
    lines = [
        f"{'likelihood (vs fp32 eager)':28s} {'variant':22s} {'bits/dim':>9s} {'fp32':>9s} {'mean |d|':>9s} "
        f"{'max |d|':>9s} {'NFE':>9s}"
    ]
    for r in rows:
        lines.append(
            f"{'':28s} {r['variant']:22s} {r['bpd']:9.4f} {r['bpd_fp32']:9.4f} {r['mean_abs_diff_bpd']:9.4f} "
            f"{r['max_abs_diff_bpd']:9.4f} {r['nfe']:4d}/{r['nfe_fp32']:<4d}"
        )
    return "\n".join(lines)


def table(rows, accuracy_rows=()):
    """The results as text: throughput rows, then accuracy rows."""
    lines = [
        f"{'model':24s} {'sampler':9s} {'batch':>5s} {'path':24s} {'NFE':>5s} {'img/s':>10s} "
        f"{'vs official loop':>16s} {'vs official code':>16s} {'of floor':>8s} {'peak MiB':>9s}"
    ]
    for r in rows:
        mem = "" if r["peak_memory_MiB"] is None else f"{r['peak_memory_MiB']:9.0f}"
        code = f"{r['vs_official_code']:15.2f}x" if r.get("vs_official_code") else f"{'-':>16s}"
        lines.append(
            f"{r['model'][:24]:24s} {r['sampler']:9s} {r['batch']:5d} {r['path']:24s} {r['nfe']:5d} "
            f"{r['images_per_s']:10.4g} {r['vs_official_loop']:15.2f}x {code} {r['of_floor']:8.2%} {mem}"
        )
    floors = {(r["model"], r["matrix_gflop_per_call"], r["matrix_tflop_s"]) for r in rows}
    lines += [
        f"of floor: {model}'s {gflop:.3g} GFLOP of matrix products a network call at the matmul rate "
        f"measured here, {tflops:.3g} TFLOP/s"
        for model, gflop, tflops in sorted(floors)
    ]
    if accuracy_rows:
        lines.append(
            f"{'accuracy (vs fp32 eager)':24s} {'sampler':9s} {'variant':22s} {'mean |d|':>9s} "
            f"{'max |d|':>8s} {'mean shift':>10s} {'std ratio':>9s} {'NFE':>9s}   (8-bit pixel units)"
        )
        for r in accuracy_rows:
            lines.append(
                f"{'':24s} {r['sampler']:9s} {r['variant']:22s} {r['mean_abs_diff_8bit']:9.3f} "
                f"{r['max_abs_diff_8bit']:8.1f} {r['mean_shift_8bit']:+10.3f} {r['std_ratio']:9.4f} "
                f"{r['nfe']:4d}/{r['nfe_fp32']:<4d}"
            )
    return "\n".join(lines)
