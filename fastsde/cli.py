"""The `fastsde` command: train, sample, likelihood, eval, convert, merge, configs, bench, info.

With no --ckpt, sample / likelihood / bench use the embedded default model (fastsde/assets/
digits.safetensors). Launched with torchrun, `train` runs data-parallel and `sample` shards the
samples over the processes. Errors print as one line unless --debug.
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys
import time

import torch

DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "assets", "digits.safetensors")


def _model(args, device):
    """(model, sde, config) from --ckpt (a .pth, a .safetensors or a training workdir) and --config."""
    from . import checkpoint, configs
    path, config = args.ckpt or DEFAULT_MODEL, args.config
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "checkpoints", "checkpoint_*.pth")),
                       key=lambda p: int(re.findall(r"(\d+)\.pth$", p)[0]))
        if not found:
            raise FileNotFoundError(f"--ckpt {path}: a folder, but not a training workdir (no checkpoints/checkpoint_*.pth)")
        path = found[-1]
    if config is None:  # a checkpoint inside a fastsde workdir carries its config beside it
        beside = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "config.json")
        config = beside if os.path.isfile(beside) and not path.endswith(".safetensors") else None
    if not os.path.exists(path):
        raise FileNotFoundError(f"--ckpt {path}: no such file")
    model, sde, config = checkpoint.load_checkpoint(path, config, use_ema=not args.raw, device=device)
    return model, sde, configs.load(config)


def _device(args, rank=0):
    from .train import default_device
    return torch.device(args.device) if args.device else default_device(rank)


def _with_steps(sde, config, steps):
    """The SDE with `steps` discretisation steps (N); discrete models keep their num_scales."""
    from . import checkpoint
    if steps is None or steps == sde.N:
        return sde
    if not config.training.get("continuous", True):
        raise ValueError(f"--steps {steps}: a discrete model samples with its num_scales = {sde.N} steps")
    config = json.loads(json.dumps(config))
    config["model"]["num_scales"] = steps
    from .configs import Config
    return checkpoint.sde_from_config(Config(config))


def cmd_train(args):
    from . import configs, train
    config = configs.load(args.config)
    if args.data:
        config.data.path = args.data
    if args.batch_size:
        config.training.batch_size = args.batch_size
    result = train.train(config, args.workdir, n_iters=args.steps, seed=args.seed,
                         device=args.device, precision=args.precision)
    rank, _ = train.distributed()
    if rank == 0:
        print(f"trained to step {result['step']} in {result['seconds']:.1f} s, loss {result['loss']:.5f}"
              + (f" (stopped by {result['stopped']})" if result["stopped"] else ""))


def cmd_sample(args):
    from . import generate, train
    from .models import get_score_fn
    rank, world = train.distributed()
    device = _device(args, rank)
    model, sde, config = _model(args, device)
    sde = _with_steps(sde, config, args.steps if args.sampler == "pc" else None)
    score_fn = generate.with_precision(get_score_fn(sde, model, continuous=config.training.get("continuous", False)),
                                       args.precision, device)
    os.makedirs(args.out, exist_ok=True)
    if rank == 0:
        for stale in glob.glob(os.path.join(args.out, "samples_rank*.npz")):
            os.unlink(stale)
    _barrier(world)
    indices, images, nfe, seconds = generate.sample_shard(
        score_fn, sde, config, args.num_samples, args.batch_size, args.seed, rank, world,
        sampler=args.sampler, steps=args.steps, device=device, predictor=args.predictor, corrector=args.corrector,
        snr=args.snr)
    generate.write_shard(args.out, rank, indices, images)
    _barrier(world)
    if rank == 0:
        generate.merge(args.out)
        rate = len(indices) * world / max(seconds, 1e-9)
        print(f"{args.num_samples} samples in {seconds:.1f} s ({rate:.2f} img/s over {world} process"
              f"{'es' if world > 1 else ''}), {nfe} network evaluations per sample ({args.sampler}, "
              f"{args.precision}); wrote {os.path.join(args.out, 'samples.npz')} and "
              f"{os.path.join(args.out, 'samples.png')}")


def _barrier(world):
    if world > 1:
        torch.distributed.barrier()


def cmd_merge(args):
    from . import generate
    samples = generate.merge(args.out)
    print(f"merged {len(samples)} samples into {os.path.join(args.out, 'samples.npz')}")


def cmd_likelihood(args):
    from . import data, generate, likelihood
    from .models import get_score_fn
    device = _device(args)
    model, sde, config = _model(args, device)
    images = data.load(args.data, args.split) if args.data else data.dataset(config, args.split)
    images = images[:args.num_samples] if args.num_samples else images
    score_fn = generate.with_precision(get_score_fn(sde, model, continuous=config.training.get("continuous", False)),
                                       args.precision, device)
    bar = generate.Progress(len(images) * args.repeats, "likelihood")
    start = time.time()
    bpd, per_image, nfe = likelihood.dataset_bits_per_dim(
        score_fn, sde, images, config.data.centered, args.batch_size, args.repeats, args.seed, device,
        progress=bar.update, rtol=args.tol, atol=args.tol)
    sem = float(per_image.std() / len(per_image) ** 0.5) if len(per_image) > 1 else float("nan")
    print(f"{bpd:.4f} bits/dim (+- {sem:.4f} s.e.) over {len(images)} images x {args.repeats} repeats, "
          f"{nfe} network evaluations, {time.time() - start:.1f} s")


def cmd_eval(args):
    from . import data, metrics
    images = data.load_npz(args.samples)
    net = metrics.load_feature_net(args.inception, _device(args))
    result = metrics.evaluate(net, images, args.stats, args.batch_size, _device(args))
    print("  ".join(f"{k} {v:.4f}" for k, v in result.items()) + f"  ({len(images)} samples)")


def cmd_convert(args):
    from .checkpoint import convert_checkpoint
    convert_checkpoint(args.ckpt, args.out, args.config, use_ema=not args.raw)
    print(f"wrote {args.out}")


def cmd_configs(args):
    from . import configs
    if args.name:
        print(json.dumps(configs.load(args.name), indent=2))
    else:
        print("\n".join(configs.names()))


def cmd_bench(args):
    """Images per second of PC sampling on this machine with each kernel backend, medians."""
    from . import generate
    from .models import get_score_fn
    from .ops import available_backends
    device = _device(args)
    model, sde, config = _model(args, device)
    sde = _with_steps(sde, config, args.steps)
    score_fn = generate.with_precision(get_score_fn(sde, model, continuous=config.training.get("continuous", False)),
                                       args.precision, device)
    backends = ["reference"] + [b for b in available_backends(device) if b != "reference"]
    times = {b: [] for b in backends}
    saved = os.environ.get("FASTSDE_BACKEND")
    try:
        for _ in range(args.repeats):  # interleaved, so that drifts of the machine hit every backend
            for b in backends:
                os.environ["FASTSDE_BACKEND"] = b
                start = time.perf_counter()
                generate.sample_batch(score_fn, sde, config, list(range(args.batch_size)), 0, "pc", device=device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[b].append(time.perf_counter() - start)
    finally:
        os.environ.pop("FASTSDE_BACKEND") if saved is None else os.environ.update(FASTSDE_BACKEND=saved)
    base = statistics.median(times["reference"])
    print(f"PC sampling, {sde.N} steps, batch {args.batch_size}, {device}, {args.precision}; "
          f"median of {args.repeats}")
    for b in backends:
        med = statistics.median(times[b])
        print(f"  {b:10s} {args.batch_size / med:9.2f} img/s  {base / med:5.2f}x reference")


def cmd_info(args):
    from .info import report
    print("\n".join(report()))


def parser():
    p = argparse.ArgumentParser(prog="fastsde", description=__doc__.split("\n")[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_args(q):
        q.add_argument("--ckpt", help="an official .pth, a .safetensors file or a training workdir "
                                      "(default: the embedded digits model)")
        q.add_argument("--config", help="a config name (`fastsde configs`) or JSON file (default: from the checkpoint)")
        q.add_argument("--raw", action="store_true", help="the raw weights, not the EMA ones")
        q.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: a GPU if there is one)")
        q.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16", "fp16"))
        q.add_argument("--seed", type=int, default=0)

    q = sub.add_parser("train", help="train a score model (resumes from --workdir)")
    q.add_argument("--config", default="digits")
    q.add_argument("--workdir", required=True)
    q.add_argument("--data", help="a .npz file or image folder (default: the config's dataset)")
    q.add_argument("--steps", type=int, help="train up to this step (default: training.n_iters)")
    q.add_argument("--batch-size", type=int, help="override training.batch_size (all processes together)")
    q.add_argument("--seed", type=int)
    q.add_argument("--device")
    q.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    q.set_defaults(run=cmd_train)

    q = sub.add_parser("sample", help="draw samples; writes samples.npz and samples.png")
    model_args(q)
    q.add_argument("--out", default="samples")
    q.add_argument("--num-samples", type=int, default=64)
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--sampler", default="pc", choices=("pc", "ode", "heun", "dpmpp_2m"))
    q.add_argument("--steps", type=int, help="pc: N (default: the config's num_scales); heun/dpmpp_2m: steps (20)")
    q.add_argument("--predictor", help="pc predictor (default: the config's)")
    q.add_argument("--corrector", help="pc corrector (default: the config's)")
    q.add_argument("--snr", type=float, help="Langevin signal-to-noise ratio (default: the config's)")
    q.set_defaults(run=cmd_sample)

    q = sub.add_parser("merge", help="merge the per-process sample shards in --out")
    q.add_argument("--out", default="samples")
    q.set_defaults(run=cmd_merge)

    q = sub.add_parser("likelihood", help="bits/dim of held-out data via the probability-flow ODE")
    model_args(q)
    q.add_argument("--data", help="a .npz file, an image folder or 'digits' (default: the config's dataset)")
    q.add_argument("--split", default="test", help="split of the embedded dataset (default: test)")
    q.add_argument("--num-samples", type=int, help="the first N images only")
    q.add_argument("--batch-size", type=int, default=100)
    q.add_argument("--repeats", type=int, default=1, help="passes with fresh dequantization (official: 5)")
    q.add_argument("--tol", type=float, default=1e-5, help="RK45 rtol and atol (official: 1e-5)")
    q.set_defaults(run=cmd_likelihood)

    q = sub.add_parser("eval", help="FID, KID and Inception score of samples (local feature network)")
    q.add_argument("--samples", required=True, help="samples.npz")
    q.add_argument("--stats", required=True, help="reference statistics .npz ('pool_3' or 'mu'/'sigma')")
    q.add_argument("--inception", required=True, help="TorchScript feature network (uint8 images -> features)")
    q.add_argument("--batch-size", type=int, default=250)
    q.add_argument("--device")
    q.set_defaults(run=cmd_eval)

    q = sub.add_parser("convert", help="official .pth -> .safetensors (weights + config)")
    q.add_argument("--ckpt", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--config")
    q.add_argument("--raw", action="store_true", help="the raw weights, not the EMA ones")
    q.set_defaults(run=cmd_convert)

    q = sub.add_parser("configs", help="list the built-in configs, or show one as JSON")
    q.add_argument("name", nargs="?")
    q.set_defaults(run=cmd_configs)

    q = sub.add_parser("bench", help="PC sampling throughput with each kernel backend")
    model_args(q)
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--steps", type=int, default=100)
    q.add_argument("--repeats", type=int, default=3)
    q.set_defaults(run=cmd_bench)

    q = sub.add_parser("info", help="what was built and which kernel backends are available")
    q.set_defaults(run=cmd_info)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        print("fastsde: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line for users; --debug for the traceback
        if args.debug:
            raise
        print(f"fastsde {args.command}: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
