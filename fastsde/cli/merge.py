"""`fastsde merge`: merge a sampling run's parts into samples.npz."""

import os


def add(sub):
    q = sub.add_parser("merge", help="merge the sample parts in --out into samples.npz (sample does it)")
    q.add_argument("--out", default="samples")
    q.set_defaults(run=run)


def run(args):
    from .. import generate, runs

    if not os.path.isdir(args.out):
        raise FileNotFoundError(f"--out {args.out}: no such folder")
    with runs.claim(args.out, "samples"):
        samples = generate.merge(args.out)
    print(f"merged {len(samples)} samples into {os.path.join(args.out, 'samples.npz')}")
