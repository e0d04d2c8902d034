"""`fastsde train`: train a score model, resuming a stopped run."""

import os

from ._common import (
    count,
    torch_device,
)


def add(sub):
    q = sub.add_parser("train", help="train a score model (resumes from --workdir)")
    q.add_argument(
        "--config",
        help="a config name or JSON file (default: the workdir's config.json when it holds a run, else digits)",
    )
    q.add_argument("--workdir", required=True)
    q.add_argument("--data", help="a .npz file or image folder (default: the config's dataset)")
    q.add_argument("--steps", type=count, help="train up to this step (default: training.n_iters)")
    q.add_argument("--batch-size", type=count, help="override training.batch_size (all processes together)")
    q.add_argument("--seed", type=int)
    q.add_argument("--device", type=torch_device)
    q.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    q.set_defaults(run=run)


def run(args):
    """Returns the exit code: 128 + the signal's number for a run stopped by SIGTERM or SIGINT."""
    import signal

    from .. import configs, train

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
