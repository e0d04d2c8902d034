"""`fastsde train-classifier`: train a noise-conditional classifier for guided sampling."""

import time

import torch

from ._common import (
    amount,
    count,
    device_of,
    torch_device,
)


def add(sub):
    q = sub.add_parser("train-classifier", help="train a noise-conditional classifier for `sample --class`")
    q.add_argument("--config", default="digits", help="the config whose SDE and data to use")
    q.add_argument("--data", help="'digits', 'digits_rgb' or a .npz with 'labels' (default: the config's)")
    q.add_argument("--out", required=True)
    q.add_argument("--steps", type=count, default=3000)
    q.add_argument("--batch-size", type=count, default=128)
    q.add_argument("--lr", type=amount, default=1e-3)
    q.add_argument("--blocks", type=count, default=2, help="blocks per group (the JAX CIFAR-10 classifier: 4)")
    q.add_argument("--width", type=count, default=2, help="channel multiplier (the JAX CIFAR-10 classifier: 10)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", type=torch_device)
    q.set_defaults(run=run)


def run(args):
    from .. import checkpoint, configs, controllable, data
    from ..models.classifier import WideResNet

    config = configs.load(args.config)
    source = args.data or config.data.get("path") or config.data.dataset
    images, labels = data.labeled(source, "train")
    num_classes = int(labels.max()) + 1
    torch.manual_seed(args.seed)
    net = WideResNet(num_classes, images.shape[1], args.blocks, args.width).to(device_of(args))
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
        device=device_of(args),
    )
    controllable.save_classifier(args.out, net)
    accuracy = ""
    if str(source).lower() in ("digits", "digits_rgb"):  # held-out accuracy, at a small noise level
        test_images, test_labels = data.labeled(source, "test")
        x = data.to_model(test_images, config.data.centered).to(device_of(args))
        with torch.no_grad():
            pred = net(x, torch.full((len(x),), 1e-2, device=x.device)).argmax(1).cpu()
        accuracy = f", held-out accuracy at std 0.01: {float((pred == test_labels).float().mean()):.3f}"
    print(
        f"trained the classifier for {args.steps} steps in {time.time() - start:.0f} s, final loss "
        f"{history[-1] if history else float('nan'):.4f}{accuracy}; wrote {args.out}"
    )
