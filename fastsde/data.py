"""Datasets as uint8 images [N, C, H, W], the official scaling and augmentation, and a resumable,
shardable batch stream.

Sources: the embedded handwritten digits (no download), a .npz array, or a folder of images (needs
Pillow). Model space is the official one: x = img / 255 in [0, 1] (or (255 img + U) / 256 with
uniform dequantization), then 2x - 1 when `centered`.
"""

import os

import numpy as np
import torch

from .runs import open_npz

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
DIGITS_PATH = os.path.join(ASSETS, "digits.npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


# Ink colours of the RGB digits: saturated hues of different brightness, so that a grey image
# leaves its colour open (what colorization has to recover).
PALETTE = np.array(
    [
        [1.0, 0.25, 0.2],
        [1.0, 0.6, 0.1],
        [1.0, 1.0, 0.25],
        [0.3, 1.0, 0.3],
        [0.25, 1.0, 1.0],
        [0.35, 0.45, 1.0],
        [1.0, 0.35, 1.0],
        [1.0, 1.0, 1.0],
    ]
)


def digits(split="train", rgb=False):
    """The UCI handwritten digits as scikit-learn ships them (1797 images, 8x8, 17 grey levels
    stored as 8-bit pixels): (images uint8 [N, 1, 8, 8], labels int64 [N]). split: 'train'
    (1497 images), 'test' (every 6th image, 300 held out) or 'all'. rgb: each digit drawn in an ink
    colour from PALETTE (fixed per image), [N, 3, 8, 8]."""
    with np.load(DIGITS_PATH) as f:
        images, labels = f["images"][:, None], f["labels"]
    if rgb:
        ink = PALETTE[np.random.default_rng(0).integers(0, len(PALETTE), len(images))]
        images = np.rint(images * ink[:, :, None, None]).astype(np.uint8)
    held_out = np.arange(len(images)) % 6 == 0
    keep = {"train": ~held_out, "test": held_out, "all": np.ones_like(held_out)}.get(split)
    if keep is None:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    return torch.from_numpy(images[keep].copy()), torch.from_numpy(labels[keep].astype(np.int64))


def _as_nchw(array, source):
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8 pixels, got dtype {a.dtype}")
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError(f"{source}: images must be [N, H, W], [N, H, W, C] or [N, C, H, W], got shape {a.shape}")
    if a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        a = a.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(a))


def load_npz(path, key=None):
    """uint8 images [N, C, H, W] from a .npz file: the array `key`, else the first of 'images',
    'x', 'samples', 'arr_0'; NHWC (as the official samples files) or NCHW."""
    with open_npz(path) as f:
        keys = [key] if key else [k for k in ("images", "x", "samples", "arr_0") if k in f.files]
        if not keys or keys[0] not in f.files:
            raise ValueError(
                f"{path}: no image array (looked for {keys or ['images', 'x', 'samples', 'arr_0']}; has {f.files})"
            )
        return _as_nchw(f[keys[0]], path)


def _pixels(image, name):
    """The 8-bit pixels of PIL image `name` as an array: grey, RGB or RGBA as they are; palette, CMYK
    and YCbCr images as RGB (RGBA) and bilevel ones as grey (their raw arrays are palette indices,
    ink, chroma or booleans)."""
    if image.mode in ("P", "PA", "CMYK", "YCbCr"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    if image.mode not in ("L", "RGB", "RGBA"):
        raise ValueError(
            f"{name}: image mode {image.mode}; fastsde reads 8-bit grey, RGB or RGBA images "
            "(and palette, CMYK, YCbCr and bilevel ones, which it converts)"
        )
    return np.asarray(image)


def load_folder(path):
    """uint8 images [N, C, H, W] from the image files in a folder (sorted by name); all must have
    the same size and mode. Needs Pillow."""
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("image folders need Pillow (pip install 'fastsde[images]')") from e
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ValueError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    arrays = []
    for f in files:
        name = os.path.join(path, f)
        try:
            with Image.open(name) as image:
                arrays.append(_pixels(image, name))
        except (OSError, SyntaxError) as e:  # what Pillow raises for files it cannot decode, truncated ones too
            raise ValueError(f"{name}: not a readable image ({e})") from None
    first = arrays[0].shape
    for f, a in zip(files, arrays):
        if a.shape != first:
            raise ValueError(f"{path}: {f} has shape {a.shape}, the first image {first}")
    return _as_nchw(np.stack(arrays), path)


def load(source, split="train"):
    """uint8 images [N, C, H, W]: source 'digits' or 'digits_rgb' (the embedded set, `split` of
    it), a .npz file or an image folder."""
    if str(source).lower() in ("digits", "digits_rgb"):
        return digits(split, rgb=str(source).lower() == "digits_rgb")[0]
    if os.path.isdir(source):
        return load_folder(source)
    if str(source).endswith(".npz") and os.path.isfile(source):
        return load_npz(source)
    raise ValueError(
        f"data: {source!r} is neither 'digits', an existing .npz file nor an image folder "
        "(fastsde downloads nothing: point it at local data)"
    )


def labeled(source, split="train"):
    """(uint8 images [N, C, H, W], int64 labels [N]) from 'digits' / 'digits_rgb' or a .npz file
    with a 'labels' array beside its images."""
    if str(source).lower() in ("digits", "digits_rgb"):
        return digits(split, rgb=str(source).lower() == "digits_rgb")
    images = load(source, split)
    if not str(source).endswith(".npz"):
        raise ValueError(f"{source}: labels come from 'digits', 'digits_rgb' or a .npz file with a 'labels' array")
    with open_npz(source) as f:
        if "labels" not in f.files:
            raise ValueError(f"{source}: no 'labels' array (has {f.files})")
        labels = torch.from_numpy(f["labels"].astype(np.int64))
    if len(labels) != len(images):
        raise ValueError(f"{source}: {len(labels)} labels for {len(images)} images")
    return images, labels


def dataset(config, split="train", source=None, channels=True):
    """The images for a model of `config`, checked to fit it (check_images): from `source` (see load)
    if given, else what the config trains on: config.data.path if set, else the embedded digits when
    config.data.dataset is 'DIGITS' or 'DIGITS_RGB'. The official datasets (CIFAR-10, CelebA, LSUN...)
    are not downloaded: convert them to a .npz or a folder and set data.path. channels=False leaves
    the channel count open (grey images for colorization)."""
    source = source or config.data.get("path")
    if not source and config.data.dataset.upper() not in ("DIGITS", "DIGITS_RGB"):
        raise ValueError(
            f"data.path is not set and dataset {config.data.dataset!r} is not embedded; set "
            "data.path (or --data) to a .npz file or an image folder"
        )
    source = source or config.data.dataset
    size = config.data.image_size
    return check_images(load(source, split), source, (config.data.num_channels if channels else None, size, size))


def check_images(images, source, shape=None):
    """uint8 images [N, C, H, W], checked to be at least one and, if `shape` (C, H, W; C may be None
    for any) is given, of that shape, as the model takes them; else a ValueError naming `source`."""
    if len(images) == 0:
        raise ValueError(f"{source}: holds no images")
    if shape is not None:
        got = tuple(images.shape[1:])
        if got[1:] != tuple(shape[1:]) or shape[0] not in (None, got[0]):
            want = f"{shape[0]}, {shape[1]}, {shape[2]}" if shape[0] else f"any, {shape[1]}, {shape[2]}"
            raise ValueError(f"{source}: images of {got} (C, H, W); the model takes ({want})")
    return images


def to_model(images, centered, dequantize=False, flip=False, generator=None):
    """uint8 images [B, C, H, W] -> float32 in model space, with the official uniform dequantization
    and random horizontal flips (each image flipped with probability 1/2)."""
    x = images.float()
    if dequantize:
        x = (x + torch.rand(x.shape, generator=generator, device=x.device)) / 256.0
    else:
        x = x / 255.0
    if flip:
        mask = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x * 2 - 1 if centered else x


def to_uint8(x, centered):
    """Model-space images -> uint8 pixels: the official inverse scaler, clipped, rounded, the exact
    inverse of the data's k / 255 (upstream truncates, lowering pixels by half a level on average)."""
    x = (x + 1) / 2 if centered else x
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


class Batches:
    """An endless stream of batches of indices into N items: epoch e visits a permutation drawn
    from (seed, e); with world > 1, rank r takes every world-th item of it. The position is its
    whole state (state_dict), so a resumed run sees the same batches as an uninterrupted one."""

    def __init__(self, n, batch_size, seed=0, rank=0, world=1):
        if batch_size < 1 or n // world < batch_size:
            raise ValueError(f"batch_size: {batch_size} per process does not fit {n} items over {world} processes")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.pos = 0, 0
        self._cached = (None, None)

    def _order(self):
        if self._cached[0] != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._cached = (self.epoch, torch.randperm(self.n, generator=g)[self.rank :: self.world])
        return self._cached[1]

    def __iter__(self):
        return self

    def __next__(self):
        order = self._order()
        if self.pos + self.batch_size > len(order):  # drop the ragged end, as the official loader
            self.epoch, self.pos = self.epoch + 1, 0
            order = self._order()
        batch = order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return batch

    def state_dict(self):
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state):
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
