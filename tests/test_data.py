"""Datasets, the official scaling and augmentation, and the resumable batch stream."""

import os

import numpy as np
import pytest
import torch

from fastsde import configs, data


def test_embedded_digits_splits():
    train, labels = data.digits("train")
    test, test_labels = data.digits("test")
    assert train.dtype == torch.uint8 and train.shape == (1497, 1, 8, 8) and test.shape == (300, 1, 8, 8)
    assert set(labels.tolist()) == set(range(10)) and set(test_labels.tolist()) == set(range(10))
    assert int(train.max()) == 255 and int(train.min()) == 0
    levels = torch.unique(train).tolist()  # the 17 grey levels 0..16, as 8-bit pixels
    assert levels == [round(v * 255 / 16) for v in range(17)]
    everything, _ = data.digits("all")
    assert len(everything) == 1797 and torch.equal(everything[::6], test)
    with pytest.raises(ValueError, match="split must be"):
        data.digits("val")


def test_to_model_official_scaling():
    img = torch.tensor([0, 128, 255], dtype=torch.uint8).reshape(1, 1, 1, 3)
    torch.testing.assert_close(
        data.to_model(img, centered=False), torch.tensor([0, 128 / 255, 1.0]).reshape(1, 1, 1, 3)
    )
    torch.testing.assert_close(
        data.to_model(img, centered=True), torch.tensor([-1, 2 * 128 / 255 - 1, 1.0]).reshape(1, 1, 1, 3)
    )
    x = data.to_model(
        img.expand(4000, 1, 1, 3), centered=False, dequantize=True, generator=torch.Generator().manual_seed(0)
    )
    lo, hi = torch.tensor([0, 128, 255]) / 256, torch.tensor([1, 129, 256]) / 256
    assert (x >= lo.reshape(1, 1, 1, 3)).all() and (x < hi.reshape(1, 1, 1, 3)).all()
    assert abs(float(x[..., 1].mean()) - 128.5 / 256) < 2e-3  # uniform within the bin
    assert abs(float((x[..., 1] * 256).std()) - 12**-0.5) < 0.01  # U(0, 1)'s spread, not a constant offset
    back = data.to_uint8(data.to_model(img, centered=True), centered=True)
    assert torch.equal(back, img)
    # Rounded, not truncated as upstream's astype(np.uint8); clipped to [0, 255].
    near = torch.tensor([-0.2, 0.7, 127.6, 128.4, 254.6, 300.0]) / 255
    assert data.to_uint8(near, centered=False).tolist() == [0, 1, 128, 128, 255, 255]


def test_random_flip_flips_about_half():
    img = torch.arange(4, dtype=torch.uint8).reshape(1, 1, 1, 4).expand(1000, 1, 1, 4)
    x = data.to_model(img, centered=False, flip=True, generator=torch.Generator().manual_seed(0))
    flipped = x[:, 0, 0, 0] > x[:, 0, 0, 3]
    assert 400 < int(flipped.sum()) < 600
    assert torch.equal(x[flipped], data.to_model(img[:1], False).flip(-1).expand(int(flipped.sum()), 1, 1, 4))


def test_batches_epochs_resume_and_shards():
    b = data.Batches(10, 3, seed=1)
    first = [next(b) for _ in range(3)]
    assert len(torch.unique(torch.cat(first))) == 9  # one epoch without repeats, ragged end dropped
    state = b.state_dict()
    rest = [next(b) for _ in range(4)]
    resumed = data.Batches(10, 3, seed=1)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, next(resumed)) for a in rest)
    assert all(len(a) == 3 for a in first + rest)
    assert not torch.equal(torch.cat(first), torch.cat(rest[:3]))  # epoch 1 in another order than epoch 0
    shards = [data.Batches(12, 3, seed=2, rank=r, world=2) for r in range(2)]
    seen = torch.cat([torch.cat([next(s), next(s)]) for s in shards])
    assert sorted(seen.tolist()) == list(range(12))  # the ranks split each epoch without overlap
    with pytest.raises(ValueError, match="batch_size"):
        data.Batches(5, 3, world=2)


def test_npz_and_folder_sources(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "nhwc.npz", samples=rgb)
    np.savez(tmp_path / "nchw.npz", images=rgb.transpose(0, 3, 1, 2))
    for name in ("nhwc.npz", "nchw.npz"):
        got = data.load(str(tmp_path / name))
        assert got.shape == (5, 3, 6, 7) and np.array_equal(got.numpy(), rgb.transpose(0, 3, 1, 2))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(rgb):
        PIL.fromarray(img).save(folder / f"{i:03d}.png")
    assert np.array_equal(data.load(str(folder)).numpy(), rgb.transpose(0, 3, 1, 2))
    # Palette and bilevel files give their colours and grey levels, not palette indices or booleans.
    for i, img in enumerate(rgb):
        PIL.fromarray(img).quantize(16).save(folder / f"{i:03d}.png")
    colours = np.stack([np.asarray(PIL.fromarray(img).quantize(16).convert("RGB")) for img in rgb])
    assert np.array_equal(data.load(str(folder)).numpy(), colours.transpose(0, 3, 1, 2))
    bits = rgb[..., 0] > 127
    grey = tmp_path / "grey"
    grey.mkdir()
    for i, img in enumerate(bits):
        PIL.fromarray(img).save(grey / f"{i:03d}.png")
    assert np.array_equal(data.load(str(grey)).numpy(), 255 * bits[:, None].astype(np.uint8))
    PIL.fromarray(rgb[0, ..., 0].astype(np.uint16) * 257).save(grey / "000.png")  # 16-bit grey
    with pytest.raises(ValueError, match=r"000.png: image mode I(;16)?; fastsde reads 8-bit grey, RGB or RGBA"):
        data.load(str(grey))
    np.savez(tmp_path / "float.npz", images=rgb.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        data.load(str(tmp_path / "float.npz"))
    with pytest.raises(ValueError, match="downloads nothing"):
        data.load(str(tmp_path / "missing.npz"))
    # Files that are not what their names say: each error names the file.
    whole = (folder / "001.png").read_bytes()
    (folder / "001.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"001.png: not a readable image \(.*[Tt]runcated"):
        data.load(str(folder))
    (tmp_path / "text.npz").write_text("not an archive")
    np.save(tmp_path / "one.npy", rgb)
    os.rename(tmp_path / "one.npy", tmp_path / "one.npz")
    for name, said in (("text.npz", "not a readable .npz file"), ("one.npz", "a single .npy array, not a .npz")):
        with pytest.raises(ValueError, match=f"{name}: {said}"):
            data.load(str(tmp_path / name))


def test_dataset_of_a_config_checks_shape(tmp_path):
    c = configs.get("digits")
    assert data.dataset(c, "test").shape == (300, 3, 8, 8)
    np.savez(tmp_path / "wrong.npz", images=np.zeros((4, 9, 9), np.uint8))
    c.data.path = str(tmp_path / "wrong.npz")
    with pytest.raises(ValueError, match=r"wrong.npz: images of \(1, 9, 9\) \(C, H, W\); the model takes \(3, 8, 8\)"):
        data.dataset(c)
    # Another source than the config's, and the checks each command relies on: size, channels, emptiness.
    np.savez(tmp_path / "grey.npz", images=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"grey.npz: images of \(1, 8, 8\) \(C, H, W\); the model takes \(3, 8, 8\)"):
        data.dataset(c, source=str(tmp_path / "grey.npz"))
    assert data.dataset(c, source=str(tmp_path / "grey.npz"), channels=False).shape == (4, 1, 8, 8)
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="empty.npz: holds no images"):
        data.dataset(c, source=str(tmp_path / "empty.npz"))
    with pytest.raises(ValueError, match="data.path is not set"):
        data.dataset(configs.get("vp/ddpm/cifar10"))


def test_rgb_digits_are_the_grey_digits_in_colour():
    grey, labels = data.digits("test")
    rgb, rgb_labels = data.digits("test", rgb=True)
    assert rgb.shape == (300, 3, 8, 8) and torch.equal(labels, rgb_labels)
    palette = torch.tensor(data.PALETTE, dtype=torch.float64)
    candidates = (grey[:, None].double() * palette[None, :, :, None, None]).round()  # [N, colours, 3, 8, 8]
    match = (candidates == rgb[:, None].double()).flatten(2).all(2)  # which ink colour draws each digit
    assert match.any(1).all() and match.any(0).all()  # every digit in a palette colour, every colour used
    assert torch.equal(data.load("digits_rgb", "test"), rgb)
