"""What the commands share: loading the model, devices, runs, inputs, and argument types."""

import argparse
import os

import torch

from .. import score_model
from ..engine import PRECISIONS
from ..solvers import ADAPTIVE, FIXED_STEP

DEFAULT_CLASSIFIER = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "digits_classifier.safetensors")


def read_model(args, device):
    """(model, sde, config) of --ckpt (any source fastsde.load reads) and --config."""
    return naming_ckpt(lambda: score_model.read_model(args.ckpt, args.config, not args.raw, device))


def load_model(args, device):
    """The ScoreModel of --ckpt and --config, its score function as --precision and --compile ask."""
    return naming_ckpt(
        lambda: score_model.load(
            args.ckpt, args.config, device, args.precision, use_ema=not args.raw, compile=args.compile
        )
    )


def naming_ckpt(read):
    """read(), a FileNotFoundError's message prefixed with --ckpt."""
    try:
        return read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--ckpt {e}") from None


def device_of(args, rank=0):
    """--device, else the default device of process `rank` (a GPU if there is one)."""
    from ..train import default_device

    return torch.device(args.device) if args.device else default_device(rank)


def check_sampler_args(args):
    """Refuses options that --sampler would ignore."""
    if args.sampler in ("ode", *ADAPTIVE) and args.steps:
        what = "ode sampler (RK45)" if args.sampler == "ode" else f"{args.sampler} sampler"
        raise ValueError(f"--steps: the {what} chooses its own steps; --steps is for the others")
    given = [f"--{n}" for n in ("predictor", "corrector", "snr") if getattr(args, n, None) is not None]
    if args.sampler != "pc" and given:
        raise ValueError(f"{', '.join(given)}: for --sampler pc only, not {args.sampler}")
    if getattr(args, "schedule", None) and args.sampler not in FIXED_STEP:
        raise ValueError(f"--schedule: for the fixed-step solvers, not {args.sampler}")


def start_run(args, name, settings, rank, world, device, also=()):
    """runs.start of run `name` in --out on rank 0 (settings: a function, so that only rank 0 hashes
    the weights), its refusal raised on every process. Returns the claim to hold while the run lasts."""
    import contextlib

    from .. import runs, train

    held = train.on_rank_zero(lambda: runs.start(args.out, name, settings(), args.overwrite, also), rank, world, device)
    return held or contextlib.nullcontext()


def barrier(world):
    """Waits for every process of a torchrun launch."""
    if world > 1:
        torch.distributed.barrier()


def inputs(args, config, count, channels=True):
    """The first `count` uint8 images of --images (default: the config's held-out data), checked
    against the model's image size and, with `channels`, its channels."""
    from .. import data

    return data.dataset(config, args.split, args.images, channels)[:count]


def pc_kwargs(args, config, sde, device):
    """The PC sampler's arguments from --predictor, --corrector, --snr and --seed, the config's by default."""
    from ..generate import default_eps

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


def write_rows(path, rows, scale=4):
    """A PNG grid: one row of images per entry of `rows` (uint8 [N, C, H, W], grey ones made RGB)."""
    from .. import images as images_lib

    rows = [r.expand(-1, 3, -1, -1) if r.shape[1] == 1 else r for r in rows]
    grid = torch.cat(rows).numpy()
    images_lib.write_png(path, images_lib.grid(grid, nrow=len(rows[0]), scale=scale))


def positive(kind):
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


def counts(text):
    """An argparse type: comma-separated positive integers, as a tuple."""
    try:
        return tuple(count(t) for t in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {text!r}") from None


def some_of(choices):
    """An argparse type: comma-separated names out of `choices`, as a tuple."""

    def parse(text):
        names = tuple(text.split(","))
        if not set(names) <= set(choices):
            raise argparse.ArgumentTypeError(f"takes a comma-separated list of {', '.join(choices)}, got {text!r}")
        return names

    return parse


def existing_file(text):
    """An argparse type: the path of an existing file."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def torch_device(text):
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


count, amount = positive(int), positive(float)


def model_args(q, precision=True, seed=True):
    """Adds the arguments that choose and run a model: --ckpt, --config, --raw, --device, --precision,
    --compile, --seed."""
    q.add_argument(
        "--ckpt",
        help="an official .pth or JAX checkpoint, a .safetensors file, a diffusers "
        "NCSN++ folder or a training workdir (default: the embedded digits model)",
    )
    q.add_argument("--config", help="a config name (`fastsde configs`) or JSON file (default: from the checkpoint)")
    q.add_argument("--raw", action="store_true", help="the raw weights, not the EMA ones")
    q.add_argument("--device", type=torch_device, help="cpu, cuda, cuda:1 ... (default: a GPU if there is one)")
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


def controllable_args(q, what):
    """Adds the model's arguments, the input images (`what` they are) and the PC sampler's."""
    model_args(q)
    q.add_argument(
        "--images",
        help=f"{what}: a .npz file, an image folder or 'digits' / 'digits_rgb' (default: the model's held-out data)",
    )
    q.add_argument("--split", default="test", help="split of the embedded dataset (default: test)")
    q.add_argument("--num-samples", type=count, default=16)
    q.add_argument("--out", default="samples")
    q.add_argument("--steps", type=count, help="PC steps N (default: the config's num_scales)")
    q.add_argument("--predictor")
    q.add_argument("--corrector")
    q.add_argument("--snr", type=amount)
