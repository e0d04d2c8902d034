"""`fastsde inpaint`: fill in the masked part of images."""

import os
import time

import torch

from ..score_model import with_steps
from ._common import (
    controllable_args,
    device_of,
    inputs,
    load_model,
    pc_kwargs,
    write_rows,
)


def add(sub):
    q = sub.add_parser("inpaint", help="fill in the masked part of images; writes inpaint.png and .npz")
    controllable_args(q, "images to complete")
    q.add_argument(
        "--mask",
        default="right",
        help="the part to fill in: right, left, top, bottom, center, or a .npz / image file (1 or white = known)",
    )
    q.set_defaults(run=run)


def mask_of(spec, shape):
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
        from ..runs import open_npz

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


def run(args):
    import numpy as np

    from .. import controllable, data, runs

    device = device_of(args)
    m = load_model(args, device)
    config, sde = m.config, with_steps(m.sde, m.config, args.steps)
    images = inputs(args, config, args.num_samples)
    mask = mask_of(args.mask, images.shape)
    x = data.to_model(images, config.data.centered).to(device)
    start = time.time()
    result, nfe = controllable.inpaint(m.score_fn, sde, x, mask.to(device), **pc_kwargs(args, config, sde, device))
    result = data.to_uint8(result, config.data.centered).cpu()
    os.makedirs(args.out, exist_ok=True)
    shown = (mask.expand_as(images.float()) * 255).to(torch.uint8)
    write_rows(os.path.join(args.out, "inpaint.png"), [images, shown, (images * mask).to(torch.uint8), result])
    runs.save_npz(
        os.path.join(args.out, "inpaint.npz"),
        samples=result.permute(0, 2, 3, 1).numpy(),
        mask=np.asarray(mask[0].numpy()),
    )
    print(
        f"inpainted {len(images)} images in {time.time() - start:.1f} s ({nfe} network evaluations each); "
        f"wrote {os.path.join(args.out, 'inpaint.png')} (rows: input, mask, known part, result) and inpaint.npz"
    )
