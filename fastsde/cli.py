"""The `fastsde` command: train, sample, likelihood, eval, stats, inpaint, colorize, interpolate,
train-classifier, convert, merge, configs, bench, info.

With no --ckpt, sample / likelihood / inpaint / colorize / interpolate / bench use the embedded default
model (fastsde/assets/digits.safetensors). Launched with torchrun, `train` runs data-parallel and
`sample` shards the samples over the processes. Errors print as one line unless --debug.
"""

import argparse
import json
import os
import sys
import time

import torch

from .engine import PRECISIONS
from .generate import SAMPLERS
from .score_model import DEFAULT_MODEL, with_steps
from .solvers import ADAPTIVE, ENCODERS, FIXED_STEP, SCHEDULES

DEFAULT_CLASSIFIER = os.path.join(os.path.dirname(__file__), "assets", "digits_classifier.safetensors")


def _model(args, device):
    """(model, sde, config) of --ckpt (any source fastsde.load reads) and --config."""
    from .score_model import read_model

    return _naming_ckpt(lambda: read_model(args.ckpt, args.config, not args.raw, device))


def _load(args, device):
    """The ScoreModel of --ckpt and --config, its score function as --precision and --compile ask."""
    from .score_model import load

    return _naming_ckpt(
        lambda: load(args.ckpt, args.config, device, args.precision, use_ema=not args.raw, compile=args.compile)
    )


def _naming_ckpt(read):
    try:
        return read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--ckpt {e}") from None


def _device(args, rank=0):
    from .train import default_device

    return torch.device(args.device) if args.device else default_device(rank)


def _check_sampler_args(args):
    """Refuses options that --sampler would ignore."""
    if args.sampler in ("ode", *ADAPTIVE) and args.steps:
        what = "ode sampler (RK45)" if args.sampler == "ode" else f"{args.sampler} sampler"
        raise ValueError(f"--steps: the {what} chooses its own steps; --steps is for the others")
    given = [f"--{n}" for n in ("predictor", "corrector", "snr") if getattr(args, n, None) is not None]
    if args.sampler != "pc" and given:
        raise ValueError(f"{', '.join(given)}: for --sampler pc only, not {args.sampler}")
    if getattr(args, "schedule", None) and args.sampler not in FIXED_STEP:
        raise ValueError(f"--schedule: for the fixed-step solvers, not {args.sampler}")


def _classifier(args, sde, config, device):
    """The classifier network from --classifier (default: the embedded digits classifier, with the
    embedded model), checked against the model and --class."""
    from . import controllable

    path = args.classifier or (DEFAULT_CLASSIFIER if not args.ckpt else None)
    if path is None:
        raise ValueError("--class needs --classifier (a file written by `fastsde train-classifier`)")
    net = controllable.load_classifier(path, device)
    if net.args["in_ch"] != config.data.num_channels:
        raise ValueError(
            f"--classifier takes {net.args['in_ch']}-channel images; the model makes "
            f"{config.data.num_channels}-channel ones"
        )
    if not 0 <= args.class_label < net.args["num_classes"]:
        raise ValueError(f"--class {args.class_label}: the classifier has classes 0..{net.args['num_classes'] - 1}")
    return net


def _start_run(args, name, settings, rank, world, device, also=()):
    """runs.start of run `name` in --out on rank 0 (settings: a function, so that only rank 0 hashes
    the weights), its refusal raised on every process. Returns the claim to hold while the run lasts."""
    import contextlib

    from . import runs, train

    held = train.on_rank_zero(lambda: runs.start(args.out, name, settings(), args.overwrite, also), rank, world, device)
    return held or contextlib.nullcontext()


def cmd_train(args):
    """Returns the exit code: 128 + the signal's number for a run stopped by SIGTERM or SIGINT."""
    import signal

    from . import configs, train

    saved = os.path.join(args.workdir, "config.json")
    config = configs.load(args.config or (saved if os.path.isfile(saved) else "digits"))
    if args.data:
        config.data.path = args.data
    if args.batch_size:
        config.training.batch_size = args.batch_size
    result = train.train(
        config, args.workdir, n_iters=args.steps, seed=args.seed, device=args.device, precision=args.precision
    )
    rank, _ = train.distributed()
    if rank == 0:
        print(
            f"trained to step {result['step']} in {result['seconds']:.1f} s, loss {result['loss']:.5f}"
            + (f" (stopped by {result['stopped']})" if result["stopped"] else "")
        )
    return 128 + signal.Signals[result["stopped"]] if result["stopped"] else 0


def _check_fits_memory(count, config):
    """Refuses a --num-samples whose images the merge into samples.npz could not hold in memory."""
    size = config.data.num_channels * config.data.image_size**2
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if count * size > memory // 2:  # the merge holds the parts and their concatenation
        raise ValueError(
            f"--num-samples {count}: {count * size / 2**30:.1f} GiB of 8-bit images, more than the "
            f"merge into samples.npz can hold in this machine's {memory / 2**30:.1f} GiB of memory; "
            "draw them into several --out folders"
        )


def cmd_sample(args):
    from . import checkpoint, controllable, generate, runs, train

    _check_sampler_args(args)
    rank, world = train.distributed()
    device = _device(args, rank)
    m = _load(args, device)
    model, config, score_fn = m.model, m.config, m.score_fn
    _check_fits_memory(args.num_samples, config)
    sde = with_steps(m.sde, config, args.steps if args.sampler == "pc" else None)
    guided = {}
    if args.class_label is not None:
        net = _classifier(args, sde, config, device)
        classifier = controllable.noise_conditional(net, sde)
        base, label, scale = score_fn, args.class_label, args.scale
        by_batch = {}  # batch size -> its guided score function, which holds its labels on the device

        def score_fn(x, t):
            if len(x) not in by_batch:
                labels = torch.full((len(x),), label, dtype=torch.long)
                by_batch[len(x)] = controllable.classifier_score_fn(base, classifier, labels, scale)
            return by_batch[len(x)](x, t)

        guided = dict(class_label=label, classifier=checkpoint.digest(net), scale=scale)
    kwargs = dict(
        sampler=args.sampler,
        steps=args.steps,
        predictor=args.predictor,
        corrector=args.corrector,
        snr=args.snr,
        noise=args.noise,
        schedule=args.schedule,
    )
    with _start_run(
        args,
        "samples",
        lambda: generate.run_settings(
            sde, config, args.seed, weights=checkpoint.digest(model), precision=args.precision, **guided, **kwargs
        ),
        rank,
        world,
        device,
        also=["samples.png"],
    ):
        missing, total = runs.todo(args.out, "samples", "samples", args.num_samples)
        _barrier(world)  # every process has listed what is there before any writes more
        nfe, seconds = generate.sample_to(
            args.out,
            score_fn,
            sde,
            config,
            missing[rank::world],
            args.batch_size,
            args.seed,
            progress=f"sampling (rank {rank})" if world > 1 else "sampling",
            device=device,
            cuda_graph=args.cuda_graph,
            **kwargs,
        )
        _barrier(world)
        samples = generate.merge(args.out) if rank == 0 else None
    if rank == 0:
        wrote = (
            f"{os.path.join(args.out, 'samples.npz')} ({len(samples)} samples) and "
            f"{os.path.join(args.out, 'samples.png')}"
        )
        if not missing:
            print(f"nothing to draw: the {total} samples of this run were in {args.out} already; wrote {wrote}")
            return
        what = f", class {args.class_label}" if args.class_label is not None else ""
        resumed = f"; {total - len(missing)} were there already" if len(missing) < total else ""
        print(
            f"{len(missing)} samples in {seconds:.1f} s ({len(missing) / max(seconds, 1e-9):.2f} img/s "
            f"over {world} process{'es' if world > 1 else ''}{resumed}), {generate.describe_nfe(nfe)}"
            f"{' on rank 0' if world > 1 else ''} ({args.sampler}, {args.precision}{what}); wrote {wrote}"
        )


def _mask(spec, shape):
    """A 0/1 mask [1, C or 1, H, W] (1 = known) from a named pattern or a .npz / image file."""
    import numpy as np

    _, c, h, w = shape
    patterns = {
        "right": (slice(None), slice(w // 2, None)),
        "left": (slice(None), slice(0, w // 2)),
        "bottom": (slice(h // 2, None), slice(None)),
        "top": (slice(0, h // 2), slice(None)),
        "center": (slice(h // 4, h - h // 4), slice(w // 4, w - w // 4)),
    }
    if spec in patterns:  # the named region is the one to fill in
        mask = torch.ones(1, 1, h, w)
        mask[(0, 0) + patterns[spec]] = 0
        return mask
    if not os.path.isfile(spec):
        raise ValueError(f"--mask {spec}: neither one of {', '.join(patterns)} nor a .npz or image file")
    if spec.endswith(".npz"):
        from .runs import open_npz

        with open_npz(spec) as f:
            m = f["mask"] if "mask" in f.files else f[f.files[0]]
    else:
        try:
            from PIL import Image
        except ImportError as e:
            raise ImportError("an image mask needs Pillow (pip install 'fastsde[images]'); or use a .npz") from e
        m = np.asarray(Image.open(spec))
        m = m.transpose(2, 0, 1) if m.ndim == 3 else m
    m = torch.as_tensor(np.asarray(m, dtype=np.float64))
    m = m / m.max() if m.max() > 1 else m
    m = m.reshape((1, 1) + tuple(m.shape)) if m.dim() == 2 else m.reshape((1,) + tuple(m.shape))
    if m.shape[2:] != (h, w) or m.shape[1] not in (1, c):
        raise ValueError(f"--mask {spec}: shape {tuple(m.shape[1:])} (C, H, W) does not fit images of {(c, h, w)}")
    return (m > 0.5).float()


def _inputs(args, config, count, channels=True):
    """The first `count` uint8 images of --images (default: the config's held-out data), checked
    against the model's image size and, with `channels`, its channels."""
    from . import data

    return data.dataset(config, args.split, args.images, channels)[:count]


def _pc_kwargs(args, config, sde, device):
    from .generate import default_eps

    s = config.sampling
    return dict(
        predictor=args.predictor or s.predictor,
        corrector=args.corrector or s.corrector,
        snr=s.snr if args.snr is None else args.snr,
        n_steps=s.n_steps_each,
        probability_flow=s.probability_flow,
        denoise=s.noise_removal,
        eps=default_eps(sde, config),
        generator=torch.Generator(device).manual_seed(args.seed),
    )


def _write_rows(path, rows, scale=4):
    """A PNG grid: one row of images per entry of `rows` (uint8 [N, C, H, W], grey ones made RGB)."""
    from . import images as images_lib

    rows = [r.expand(-1, 3, -1, -1) if r.shape[1] == 1 else r for r in rows]
    grid = torch.cat(rows).numpy()
    images_lib.write_png(path, images_lib.grid(grid, nrow=len(rows[0]), scale=scale))


def cmd_inpaint(args):
    import numpy as np

    from . import controllable, data, runs

    device = _device(args)
    m = _load(args, device)
    config, sde = m.config, with_steps(m.sde, m.config, args.steps)
    images = _inputs(args, config, args.num_samples)
    mask = _mask(args.mask, images.shape)
    x = data.to_model(images, config.data.centered).to(device)
    start = time.time()
    result, nfe = controllable.inpaint(m.score_fn, sde, x, mask.to(device), **_pc_kwargs(args, config, sde, device))
    result = data.to_uint8(result, config.data.centered).cpu()
    os.makedirs(args.out, exist_ok=True)
    shown = (mask.expand_as(images.float()) * 255).to(torch.uint8)
    _write_rows(os.path.join(args.out, "inpaint.png"), [images, shown, (images * mask).to(torch.uint8), result])
    runs.save_npz(
        os.path.join(args.out, "inpaint.npz"),
        samples=result.permute(0, 2, 3, 1).numpy(),
        mask=np.asarray(mask[0].numpy()),
    )
    print(
        f"inpainted {len(images)} images in {time.time() - start:.1f} s ({nfe} network evaluations each); "
        f"wrote {os.path.join(args.out, 'inpaint.png')} (rows: input, mask, known part, result) and inpaint.npz"
    )


def cmd_colorize(args):
    from . import controllable, data, runs

    device = _device(args)
    m = _load(args, device)
    config = m.config
    if config.data.num_channels != 3:
        raise ValueError(
            f"colorize needs a model of RGB images; this one makes {config.data.num_channels}-channel images"
        )
    sde = with_steps(m.sde, config, args.steps)
    images = _inputs(args, config, args.num_samples, channels=False)  # grey for an RGB model
    if args.images:  # the user's images must be grey already
        grey = images
    else:  # the held-out colour digits, turned grey
        grey = images.float().mean(1, keepdim=True).round().to(torch.uint8)
    x = data.to_model(grey, config.data.centered).to(device)
    start = time.time()
    result, nfe = controllable.colorize(m.score_fn, sde, x, **_pc_kwargs(args, config, sde, device))
    result = data.to_uint8(result, config.data.centered).cpu()
    os.makedirs(args.out, exist_ok=True)
    rows = [grey, result] + ([] if args.images else [images])
    _write_rows(os.path.join(args.out, "colorize.png"), rows)
    runs.save_npz(os.path.join(args.out, "colorize.npz"), samples=result.permute(0, 2, 3, 1).numpy())
    print(
        f"colorized {len(grey)} images in {time.time() - start:.1f} s ({nfe} network evaluations each); wrote "
        f"{os.path.join(args.out, 'colorize.png')} (rows: grey input, result{'' if args.images else ', original'})"
        " and colorize.npz"
    )


def cmd_interpolate(args):
    from . import data, runs, sampling
    from .generate import SOLVER_STEPS, default_eps

    if args.frames < 2:
        raise ValueError(f"--frames must be at least 2 (the two ends of a path), got {args.frames}")
    _check_sampler_args(args)
    device = _device(args)
    m = _load(args, device)
    sde, config = m.sde, m.config
    images = _inputs(args, config, 2 * args.pairs)
    if len(images) < 2 * args.pairs:
        raise ValueError(f"--pairs {args.pairs} needs {2 * args.pairs} images; --images has {len(images)}")
    method = "RK45" if args.sampler == "ode" else args.sampler
    steps = None if method == "RK45" else args.steps or SOLVER_STEPS
    x = data.to_model(images, config.data.centered).to(device)
    start = time.time()
    path, nfe = sampling.interpolate(
        m.score_fn, sde, x[0::2], x[1::2], args.frames, method, steps, default_eps(sde, config), args.cuda_graph
    )
    path = data.to_uint8(path.flatten(0, 1), config.data.centered).cpu().reshape(path.shape)
    ends = torch.stack([path[:, 0], path[:, -1]], 1).flatten(0, 1)
    error = (ends.float() - images.float()).abs().mean().item()
    os.makedirs(args.out, exist_ok=True)
    rows = [torch.cat([images[2 * p : 2 * p + 1], path[p], images[2 * p + 1 : 2 * p + 2]]) for p in range(args.pairs)]
    _write_rows(os.path.join(args.out, "interpolate.png"), rows)
    runs.save_npz(os.path.join(args.out, "interpolate.npz"), samples=path.flatten(0, 1).permute(0, 2, 3, 1).numpy())
    print(
        f"{args.pairs} paths of {args.frames} images in {time.time() - start:.1f} s ({nfe} network evaluations "
        f"an image, {args.sampler}); the ends reconstruct the inputs to {error:.2f} 8-bit levels on average; "
        f"wrote {os.path.join(args.out, 'interpolate.png')} (a row a pair: input, path, input) and interpolate.npz"
    )


def cmd_train_classifier(args):
    from . import checkpoint, configs, controllable, data
    from .models.classifier import WideResNet

    config = configs.load(args.config)
    source = args.data or config.data.get("path") or config.data.dataset
    images, labels = data.labeled(source, "train")
    num_classes = int(labels.max()) + 1
    torch.manual_seed(args.seed)
    net = WideResNet(num_classes, images.shape[1], args.blocks, args.width).to(_device(args))
    sde = checkpoint.sde_from_config(config)
    start = time.time()
    history = controllable.train_classifier(
        net,
        sde,
        images,
        labels,
        config.data.centered,
        args.steps,
        args.batch_size,
        args.lr,
        seed=args.seed,
        device=_device(args),
    )
    controllable.save_classifier(args.out, net)
    accuracy = ""
    if str(source).lower() in ("digits", "digits_rgb"):  # held-out accuracy, at a small noise level
        test_images, test_labels = data.labeled(source, "test")
        x = data.to_model(test_images, config.data.centered).to(_device(args))
        with torch.no_grad():
            pred = net(x, torch.full((len(x),), 1e-2, device=x.device)).argmax(1).cpu()
        accuracy = f", held-out accuracy at std 0.01: {float((pred == test_labels).float().mean()):.3f}"
    print(
        f"trained the classifier for {args.steps} steps in {time.time() - start:.0f} s, final loss "
        f"{history[-1] if history else float('nan'):.4f}{accuracy}; wrote {args.out}"
    )


def _barrier(world):
    if world > 1:
        torch.distributed.barrier()


def cmd_merge(args):
    from . import generate, runs

    if not os.path.isdir(args.out):
        raise FileNotFoundError(f"--out {args.out}: no such folder")
    with runs.claim(args.out, "samples"):
        samples = generate.merge(args.out)
    print(f"merged {len(samples)} samples into {os.path.join(args.out, 'samples.npz')}")


def cmd_likelihood(args):
    import contextlib
    import hashlib

    from . import checkpoint, data, generate, likelihood, runs, train

    rank, world = train.distributed()
    if world > 1 and not args.out:
        raise ValueError("likelihood under torchrun needs --out (the processes share their results through it)")
    device = _device(args, rank)
    m = _load(args, device)
    model, sde, config, score_fn = m.model, m.sde, m.config, m.score_fn
    images = data.dataset(config, args.split, args.data)
    images = images[: args.num_samples] if args.num_samples else images
    total, skip = len(images) * args.repeats, set()
    held = contextlib.nullcontext()
    if args.out:
        held = _start_run(
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
            _barrier(world)  # every process has listed what is there before any writes more
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
        _barrier(world)
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


def cmd_eval(args):
    from . import data, metrics

    images = data.check_images(data.load_npz(args.samples), args.samples)
    net = metrics.load_feature_net(args.inception, _device(args))
    result = metrics.evaluate(net, images, args.stats, args.batch_size, _device(args))
    print("  ".join(f"{k} {v:.4f}" for k, v in result.items()) + f"  ({len(images)} samples)")


def cmd_stats(args):
    import numpy as np

    from . import data, metrics, runs

    images = data.load(args.data, args.split)
    net = metrics.load_feature_net(args.inception, _device(args))
    pool, _ = metrics.extract(net, images, args.batch_size, _device(args))
    runs.save_npz(args.out, pool_3=pool.astype(np.float32))
    print(
        f"wrote {args.out}: the {pool.shape[1]}-dimensional features of {len(images)} images (as 'pool_3', "
        f"the official statistics files' key); use it as `fastsde eval --stats`"
    )


def cmd_convert(args):
    from .score_model import convert

    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    _naming_ckpt(lambda: convert(args.ckpt, args.out, args.to, args.config, use_ema=not args.raw, dtype=dtype))
    print(f"wrote {args.out}")


def cmd_configs(args):
    from . import configs

    if args.name:
        print(json.dumps(configs.load(args.name), indent=2))
    else:
        print("\n".join(configs.names()))


def cmd_bench(args):
    """End-to-end sampling throughput of fastsde's fast paths against the official code path
    (fastsde.bench), on this machine, and with --accuracy what each fast path costs."""
    from . import bench

    device = _device(args)
    model, sde, config = _model(args, device)
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
        from .checkpoint import atomic_write_bytes

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


def cmd_info(args):
    from .info import report

    print("\n".join(report()))


def _positive(kind):
    """An argparse type: a number of `kind` (int or float) above zero (argparse names the argument)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(
                f"must be a positive {'integer' if kind is int else 'number'}, got {text!r}"
            )
        return value

    return parse


_count, _amount = _positive(int), _positive(float)


def _counts(text):
    """An argparse type: comma-separated positive integers, as a tuple."""
    try:
        return tuple(_count(t) for t in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text!r}") from None


def _some_of(choices):
    """An argparse type: comma-separated names out of `choices`, as a tuple."""

    def parse(text):
        names = tuple(text.split(","))
        if not set(names) <= set(choices):
            raise argparse.ArgumentTypeError(f"takes a comma-separated list of {', '.join(choices)}, got {text!r}")
        return names

    return parse


def _file(text):
    """An argparse type: the path of an existing file."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def _torch_device(text):
    """An argparse type: a torch device that this machine has."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a device: {text!r} (cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda" and not (device.index or 0) < torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text!r}: this machine has {torch.cuda.device_count()} CUDA GPUs that torch {torch.__version__} can use"
        )
    return text


def parser():
    p = argparse.ArgumentParser(prog="fastsde", description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_args(q, precision=True, seed=True):
        q.add_argument(
            "--ckpt",
            help="an official .pth or JAX checkpoint, a .safetensors file, a diffusers "
            "NCSN++ folder or a training workdir (default: the embedded digits model)",
        )
        q.add_argument("--config", help="a config name (`fastsde configs`) or JSON file (default: from the checkpoint)")
        q.add_argument("--raw", action="store_true", help="the raw weights, not the EMA ones")
        q.add_argument("--device", type=_torch_device, help="cpu, cuda, cuda:1 ... (default: a GPU if there is one)")
        if precision:
            q.add_argument(
                "--precision",
                default="fp32",
                choices=PRECISIONS,
                help="the network's precision; the sampler's state stays fp32",
            )
        q.add_argument("--compile", action="store_true", help="run the network under torch.compile")
        if seed:
            q.add_argument("--seed", type=int, default=0)

    q = sub.add_parser("train", help="train a score model (resumes from --workdir)")
    q.add_argument(
        "--config",
        help="a config name or JSON file (default: the workdir's config.json when it holds a run, else digits)",
    )
    q.add_argument("--workdir", required=True)
    q.add_argument("--data", help="a .npz file or image folder (default: the config's dataset)")
    q.add_argument("--steps", type=_count, help="train up to this step (default: training.n_iters)")
    q.add_argument("--batch-size", type=_count, help="override training.batch_size (all processes together)")
    q.add_argument("--seed", type=int)
    q.add_argument("--device", type=_torch_device)
    q.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    q.set_defaults(run=cmd_train)

    q = sub.add_parser("sample", help="draw samples; writes samples.npz and samples.png")
    model_args(q)
    q.add_argument("--out", default="samples")
    q.add_argument("--num-samples", type=_count, default=64)
    q.add_argument("--batch-size", type=_count, default=64)
    q.add_argument(
        "--sampler", default="pc", choices=SAMPLERS, help="pc (the paper's), ode (RK45) or a fast solver (see README)"
    )
    q.add_argument(
        "--steps", type=_count, help="pc: N (default: the config's num_scales); a fixed-step solver: steps (20)"
    )
    q.add_argument("--schedule", choices=SCHEDULES, help="a fixed-step solver's step schedule (default: edm)")
    q.add_argument("--predictor", help="pc predictor (default: the config's)")
    q.add_argument("--corrector", help="pc corrector (default: the config's)")
    q.add_argument("--snr", type=_amount, help="Langevin signal-to-noise ratio (default: the config's)")
    q.add_argument("--class", dest="class_label", type=int, help="sample this class, guided by --classifier")
    q.add_argument(
        "--classifier", type=_file, help="a noise-conditional classifier (default with the embedded model: its own)"
    )
    q.add_argument("--scale", type=float, default=1.0, help="classifier guidance scale")
    q.add_argument(
        "--cuda-graph", action="store_true", help="on a GPU, capture a whole sampler step in a CUDA graph and replay it"
    )
    q.add_argument(
        "--overwrite",
        action="store_true",
        help="discard the samples of an earlier run in --out (default: resume it, if drawn alike)",
    )
    q.add_argument(
        "--noise",
        default="torch",
        choices=("torch", "philox"),
        help="torch: a torch.Generator per sample; philox: a Philox stream per sample, drawn "
        "inside the PC kernels (no noise tensors; different numbers from torch)",
    )
    q.set_defaults(run=cmd_sample)

    def controllable_args(q, what):
        model_args(q)
        q.add_argument(
            "--images",
            help=f"{what}: a .npz file, an image folder or 'digits' / 'digits_rgb' "
            "(default: the model's held-out data)",
        )
        q.add_argument("--split", default="test", help="split of the embedded dataset (default: test)")
        q.add_argument("--num-samples", type=_count, default=16)
        q.add_argument("--out", default="samples")
        q.add_argument("--steps", type=_count, help="PC steps N (default: the config's num_scales)")
        q.add_argument("--predictor")
        q.add_argument("--corrector")
        q.add_argument("--snr", type=_amount)

    q = sub.add_parser("inpaint", help="fill in the masked part of images; writes inpaint.png and .npz")
    controllable_args(q, "images to complete")
    q.add_argument(
        "--mask",
        default="right",
        help="the part to fill in: right, left, top, bottom, center, or a .npz / image file (1 or white = known)",
    )
    q.set_defaults(run=cmd_inpaint)

    q = sub.add_parser("colorize", help="colour grey images; writes colorize.png and .npz")
    controllable_args(q, "grey images (1 channel, or 3 equal ones)")
    q.set_defaults(run=cmd_colorize)

    q = sub.add_parser(
        "interpolate",
        help="encode pairs of images with the probability-flow ODE and decode the "
        "path between their latent codes; writes interpolate.png and .npz",
    )
    model_args(q, seed=False)  # nothing random
    q.add_argument(
        "--images",
        help="a .npz file, an image folder or 'digits' / 'digits_rgb' (default: the "
        "model's held-out data); images 1 and 2 make the first pair, 3 and 4 the next",
    )
    q.add_argument("--split", default="test", help="split of the embedded dataset (default: test)")
    q.add_argument("--pairs", type=_count, default=4)
    q.add_argument("--frames", type=_count, default=8, help="images along each path, its two ends included")
    q.add_argument(
        "--sampler",
        default="ode",
        choices=("ode", *ENCODERS),
        help="the ODE solver, both ways: ode (RK45, the closest inverse) or a fixed-step one",
    )
    q.add_argument("--steps", type=_count, help="a fixed-step solver's steps each way (default 20)")
    q.add_argument(
        "--cuda-graph", action="store_true", help="on a GPU, replay the fast solvers' steps from a CUDA graph"
    )
    q.add_argument("--out", default="samples")
    q.set_defaults(run=cmd_interpolate)

    q = sub.add_parser("train-classifier", help="train a noise-conditional classifier for `sample --class`")
    q.add_argument("--config", default="digits", help="the config whose SDE and data to use")
    q.add_argument("--data", help="'digits', 'digits_rgb' or a .npz with 'labels' (default: the config's)")
    q.add_argument("--out", required=True)
    q.add_argument("--steps", type=_count, default=3000)
    q.add_argument("--batch-size", type=_count, default=128)
    q.add_argument("--lr", type=_amount, default=1e-3)
    q.add_argument("--blocks", type=_count, default=2, help="blocks per group (the JAX CIFAR-10 classifier: 4)")
    q.add_argument("--width", type=_count, default=2, help="channel multiplier (the JAX CIFAR-10 classifier: 10)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", type=_torch_device)
    q.set_defaults(run=cmd_train_classifier)

    q = sub.add_parser("merge", help="merge the sample parts in --out into samples.npz (sample does it)")
    q.add_argument("--out", default="samples")
    q.set_defaults(run=cmd_merge)

    q = sub.add_parser("likelihood", help="bits/dim of held-out data via the probability-flow ODE")
    model_args(q)
    q.add_argument("--data", help="a .npz file, an image folder or 'digits' (default: the config's dataset)")
    q.add_argument("--split", default="test", help="split of the embedded dataset (default: test)")
    q.add_argument("--num-samples", type=_count, help="the first N images only")
    q.add_argument("--batch-size", type=_count, default=100)
    q.add_argument("--repeats", type=_count, default=1, help="passes with fresh dequantization (official: 5)")
    q.add_argument("--tol", type=_amount, default=1e-5, help="RK45 rtol and atol (official: 1e-5)")
    q.add_argument(
        "--out",
        help="save the bits/dim of each image to OUT/bpd.npz as they come, and resume a run stopped midway from them",
    )
    q.add_argument("--overwrite", action="store_true", help="discard the results of an earlier run in --out")
    q.set_defaults(run=cmd_likelihood)

    q = sub.add_parser("eval", help="FID, KID and Inception score of samples (local feature network)")
    q.add_argument("--samples", required=True, type=_file, help="samples.npz")
    q.add_argument("--stats", required=True, type=_file, help="reference statistics .npz ('pool_3' or 'mu'/'sigma')")
    q.add_argument(
        "--inception",
        required=True,
        type=_file,
        help="feature network file, torch.export .pt2 or TorchScript (uint8 images -> features or (features, logits))",
    )
    q.add_argument("--batch-size", type=_count, default=250)
    q.add_argument("--device", type=_torch_device)
    q.set_defaults(run=cmd_eval)

    q = sub.add_parser("stats", help="reference statistics of a dataset for `fastsde eval --stats`")
    q.add_argument("--data", required=True, help="a .npz file, an image folder or 'digits' / 'digits_rgb'")
    q.add_argument(
        "--split",
        default="train",
        help="split of the embedded dataset (default: train, as the official CIFAR-10 statistics)",
    )
    q.add_argument(
        "--inception", required=True, type=_file, help="the feature network file that `fastsde eval` will use"
    )
    q.add_argument("--out", required=True, help="the statistics .npz to write")
    q.add_argument("--batch-size", type=_count, default=250)
    q.add_argument("--device", type=_torch_device)
    q.set_defaults(run=cmd_stats)

    q = sub.add_parser("convert", help="any checkpoint -> .safetensors (weights + config) or a diffusers folder")
    q.add_argument(
        "--ckpt",
        required=True,
        help="an official .pth or JAX checkpoint, a .safetensors file, a training workdir or a diffusers folder",
    )
    q.add_argument("--out", required=True)
    q.add_argument(
        "--to",
        choices=("safetensors", "diffusers"),
        help="the format (default: safetensors for an --out ending in .safetensors, else diffusers)",
    )
    q.add_argument("--config")
    q.add_argument("--raw", action="store_true", help="the raw weights, not the EMA ones")
    q.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"), help="storage type of the weights")
    q.set_defaults(run=cmd_convert)

    q = sub.add_parser("configs", help="list the built-in configs, or show one as JSON")
    q.add_argument("name", nargs="?")
    q.set_defaults(run=cmd_configs)

    q = sub.add_parser("bench", help="sampling throughput: fastsde's fast paths against the official code path")
    model_args(q, precision=False)
    q.add_argument(
        "--precision",
        type=_some_of(PRECISIONS),
        help="fastsde's paths, comma-separated: fp32, tf32, bf16, fp16 (default: fp32, tf32, bf16 on "
        "GPUs, fp32 on CPUs; bf16 pays on CPUs with AMX for large networks)",
    )
    q.add_argument("--batch-sizes", type=_counts, default=(1, 16), help="comma-separated (default 1,16)")
    q.add_argument(
        "--samplers",
        type=_some_of(("pc", "dpmpp_2m", "heun")),
        default=("pc", "dpmpp_2m"),
        help="comma-separated: pc, dpmpp_2m, heun",
    )
    q.add_argument("--pc-steps", type=_count, default=25, help="PC steps timed (reported for the full N)")
    q.add_argument("--solver-steps", type=_count, default=20, help="steps of the fast solvers")
    q.add_argument("--repeats", type=_count, default=3, help="timed runs per case (median)")
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
    q.set_defaults(run=cmd_bench)

    q = sub.add_parser("info", help="what was built and which kernel backends are available")
    q.set_defaults(run=cmd_info)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        code = args.run(args)
    except KeyboardInterrupt:
        print("\nfastsde: interrupted", file=sys.stderr)  # after a progress line, on a line of its own
        return 130
    except Exception as e:  # one clear line for users; --debug for the traceback
        if args.debug:
            raise
        print(
            f"fastsde {args.command}: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
            file=sys.stderr,
        )
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
