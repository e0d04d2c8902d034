"""`fastsde stats`: reference statistics of a dataset, for eval."""

from ._common import (
    count,
    device_of,
    existing_file,
    torch_device,
)


def add(sub):
    q = sub.add_parser("stats", help="reference statistics of a dataset for `fastsde eval --stats`")
    q.add_argument("--data", required=True, help="a .npz file, an image folder or 'digits' / 'digits_rgb'")
    q.add_argument(
        "--split",
        default="train",
        help="split of the embedded dataset (default: train, as the official CIFAR-10 statistics)",
    )
    q.add_argument(
        "--inception", required=True, type=existing_file, help="the feature network file that `fastsde eval` will use"
    )
    q.add_argument("--out", required=True, help="the statistics .npz to write")
    q.add_argument("--batch-size", type=count, default=250)
    q.add_argument("--device", type=torch_device)
    q.set_defaults(run=run)


def run(args):
    import numpy as np

    from .. import data, metrics, runs

    images = data.load(args.data, args.split)
    net = metrics.load_feature_net(args.inception, device_of(args))
    pool, _ = metrics.extract(net, images, args.batch_size, device_of(args))
    runs.save_npz(args.out, pool_3=pool.astype(np.float32))
    print(
        f"wrote {args.out}: the {pool.shape[1]}-dimensional features of {len(images)} images (as 'pool_3', "
        f"the official statistics files' key); use it as `fastsde eval --stats`"
    )
