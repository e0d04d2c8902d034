"""`fastsde convert`: convert a checkpoint to .safetensors or a diffusers folder."""

import torch

from ._common import (
    naming_ckpt,
)


def add(sub):
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
    q.set_defaults(run=run)


def run(args):
    from ..score_model import convert

    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    naming_ckpt(lambda: convert(args.ckpt, args.out, args.to, args.config, use_ema=not args.raw, dtype=dtype))
    print(f"wrote {args.out}")
