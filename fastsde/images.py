"""Image grids and PNG files, with no imaging library: grid() tiles uint8 images, write_png() stores
one (8-bit grey or RGB), atomically."""

import math
import struct
import zlib

import numpy as np

from .checkpoint import atomic_write_bytes


def grid(images, nrow=None, pad=1, scale=1):
    """Tiles uint8 images [N, C, H, W] (C = 1 or 3) into one [H', W', C] array, nrow per row
    (default: a square), `pad` pixels of black between them, each pixel repeated `scale` times."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 [N, 1 or 3, H, W], got {images.dtype} {images.shape}")
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    if scale > 1:
        images = images.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    out = np.zeros((pad + rows * (h + pad), pad + nrow * (w + pad), c), np.uint8)
    for i, img in enumerate(images):
        y, x = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        out[y : y + h, x : x + w] = img.transpose(1, 2, 0)
    return out


def _chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(image):
    """An 8-bit PNG of a uint8 [H, W] or [H, W, 1 or 3] array."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image must be uint8 [H, W] or [H, W, 1 or 3], got {image.dtype} {image.shape}")
    h, w, c = image.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * c)], axis=1)  # filter 0 per row
    header = struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + _chunk(b"IEND", b"")
    )


def write_png(path, image):
    """Writes a uint8 [H, W(, C)] image to `path` as PNG, atomically."""
    atomic_write_bytes(path, png_bytes(image))
