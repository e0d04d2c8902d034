"""`fastsde sample`: draw samples into a folder, resuming a stopped run."""

import os

from ..generate import SAMPLERS
from ..score_model import with_steps
from ..solvers import SCHEDULES
from ._common import (
    DEFAULT_CLASSIFIER,
    amount,
    barrier,
    check_sampler_args,
    count,
    device_of,
    existing_file,
    load_model,
    model_args,
    start_run,
)


def add(sub):
    q = sub.add_parser("sample", help="draw samples; writes samples.npz and samples.png")
    model_args(q)
    q.add_argument("--out", default="samples")
    q.add_argument("--num-samples", type=count, default=64)
    q.add_argument("--batch-size", type=count, default=64)
    q.add_argument(
        "--sampler", default="pc", choices=SAMPLERS, help="pc (the paper's), ode (RK45) or a fast solver (see README)"
    )
    q.add_argument(
        "--steps", type=count, help="pc: N (default: the config's num_scales); a fixed-step solver: steps (20)"
    )
    q.add_argument("--schedule", choices=SCHEDULES, help="a fixed-step solver's step schedule (default: edm)")
    q.add_argument("--predictor", help="pc predictor (default: the config's)")
    q.add_argument("--corrector", help="pc corrector (default: the config's)")
    q.add_argument("--snr", type=amount, help="Langevin signal-to-noise ratio (default: the config's)")
    q.add_argument("--class", dest="class_label", type=int, help="sample this class, guided by --classifier")
    q.add_argument(
        "--classifier",
        type=existing_file,
        help="a noise-conditional classifier (default with the embedded model: its own)",
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
    q.set_defaults(run=run)


def load_classifier(args, config, device):
    """The classifier network from --classifier (default: the embedded digits classifier, with the
    embedded model), checked against the model and --class."""
    from .. import controllable

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


def check_fits_memory(count, config):
    """Refuses a --num-samples whose images the merge into samples.npz could not hold in memory."""
    size = config.data.num_channels * config.data.image_size**2
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if count * size > memory // 2:  # the merge holds the parts and their concatenation
        raise ValueError(
            f"--num-samples {count}: {count * size / 2**30:.1f} GiB of 8-bit images, more than the "
            f"merge into samples.npz can hold in this machine's {memory / 2**30:.1f} GiB of memory; "
            "draw them into several --out folders"
        )


def run(args):
    from .. import checkpoint, controllable, generate, runs, train

    check_sampler_args(args)
    rank, world = train.distributed()
    device = device_of(args, rank)
    m = load_model(args, device)
    model, config, score_fn = m.model, m.config, m.score_fn
    check_fits_memory(args.num_samples, config)
    sde = with_steps(m.sde, config, args.steps if args.sampler == "pc" else None)
    guided = {}
    if args.class_label is not None:
        net = load_classifier(args, config, device)
        classifier = controllable.noise_conditional(net, sde)
        score_fn = controllable.classifier_score_fn(score_fn, classifier, args.class_label, args.scale)
        guided = dict(class_label=args.class_label, classifier=checkpoint.digest(net), scale=args.scale)
    kwargs = dict(
        sampler=args.sampler,
        steps=args.steps,
        predictor=args.predictor,
        corrector=args.corrector,
        snr=args.snr,
        noise=args.noise,
        schedule=args.schedule,
    )
    with start_run(
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
        barrier(world)  # every process has listed what is there before any writes more
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
        barrier(world)
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
