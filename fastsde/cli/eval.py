"""`fastsde eval`: fID, KID and Inception score of samples."""

from ._common import (
    count,
    device_of,
    existing_file,
    torch_device,
)


def add(sub):
    q = sub.add_parser("eval", help="FID, KID and Inception score of samples (local feature network)")
    q.add_argument("--samples", required=True, type=existing_file, help="samples.npz")
    q.add_argument(
        "--stats", required=True, type=existing_file, help="reference statistics .npz ('pool_3' or 'mu'/'sigma')"
    )
    q.add_argument(
        "--inception",
        required=True,
        type=existing_file,
        help="feature network file, torch.export .pt2 or TorchScript (uint8 images -> features or (features, logits))",
    )
    q.add_argument("--batch-size", type=count, default=250)
    q.add_argument("--device", type=torch_device)
    q.set_defaults(run=run)


def run(args):
    from .. import data, metrics

    images = data.check_images(data.load_npz(args.samples), args.samples)
    net = metrics.load_feature_net(args.inception, device_of(args))
    result = metrics.evaluate(net, images, args.stats, args.batch_size, device_of(args))
    print("  ".join(f"{k} {v:.4f}" for k, v in result.items()) + f"  ({len(images)} samples)")
