"""PNG writing and image grids, checked by decoding with Pillow."""

import io

import numpy as np
import pytest

from fastsde import images

Image = pytest.importorskip("PIL.Image")


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (3, 4, 3)])
def test_png_round_trip(shape, tmp_path):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "x.png"
    images.write_png(path, img)
    decoded = np.asarray(Image.open(path))
    assert np.array_equal(decoded, img.reshape(decoded.shape))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(images.png_bytes(img)))), decoded)


def test_grid_layout():
    imgs = np.arange(5 * 3 * 2 * 2, dtype=np.uint8).reshape(5, 3, 2, 2)
    g = images.grid(imgs, nrow=3, pad=1, scale=2)
    assert g.shape == (1 + 2 * 5, 1 + 3 * 5, 3)
    assert np.array_equal(g[1:5, 6:10], imgs[1].repeat(2, 1).repeat(2, 2).transpose(1, 2, 0))
    assert np.array_equal(g[6:10, 1:5], imgs[3].repeat(2, 1).repeat(2, 2).transpose(1, 2, 0))
    assert (g[6:, 11:] == 0).all()  # the sixth cell is empty
    with pytest.raises(ValueError, match="uint8"):
        images.grid(imgs.astype(np.float32))
