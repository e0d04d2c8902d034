"""The model and classifier that ship inside the package: they load, their samples are recognisable
digits (judged by a classifier trained here on the real data, which must reject noise), and every
command that uses them by default works on them."""

import os

import numpy as np
import pytest
import torch

from fastsde import cli, data, generate
from fastsde.checkpoint import load_checkpoint
from fastsde.models import get_score_fn

ASSETS = os.path.join(os.path.dirname(data.__file__), "assets")


def _junk(n, generator):
    """Images that are no digit: pixel-shuffled real digits, uniform noise, random blobs (uint8 RGB)."""
    images = data.digits("train", rgb=True)[0]
    picks = images[torch.randint(0, len(images), (n,), generator=generator)].flatten(2)
    order = torch.argsort(torch.rand(n, 64, generator=generator), 1)
    shuffled = torch.gather(picks, 2, order[:, None].expand(-1, 3, -1)).reshape(n, 3, 8, 8)
    noise = torch.randint(0, 256, (n, 3, 8, 8), generator=generator, dtype=torch.uint8)
    ink = torch.randint(64, 256, (n, 3, 1, 1), generator=generator)
    blobs = ((torch.rand(n, 1, 8, 8, generator=generator) < 0.4) * ink).to(torch.uint8)
    kind = torch.randint(0, 3, (n,), generator=generator)
    return torch.where(
        (kind == 0)[:, None, None, None], shuffled, torch.where((kind == 1)[:, None, None, None], noise, blobs)
    )


@pytest.fixture(scope="module")
def judge():
    """A small CNN trained on the real training digits (classes 0-9) and on junk (class 10), so that
    it is confident only about digits; its held-out accuracy is checked."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images, labels = data.digits("train", rgb=True)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 64, 11),
    )
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for step in range(600):
        idx = torch.randint(0, len(images), (128,), generator=g)
        x = torch.cat([images[idx], _junk(32, g)])
        y = torch.cat([labels[idx], torch.full((32,), 10)])
        loss = torch.nn.functional.cross_entropy(net(_grey_invariant(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_images, test_labels = data.digits("test", rgb=True)
    with torch.no_grad():
        accuracy = float((net(_grey_invariant(test_images)).argmax(1) == test_labels).float().mean())
    assert accuracy > 0.93, accuracy
    return lambda x: torch.softmax(net(_grey_invariant(x)), 1)[:, :10].detach()


def _grey_invariant(images):
    """Digits of any ink colour look alike to the judge: each image scaled to its own brightest pixel."""
    x = images.float().mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return x / x.amax((1, 2, 3), keepdim=True).clamp(min=1)


def recognisable(probs, confident=0.9):
    """(fraction of confident labels, the labels seen)."""
    top, label = probs.max(1)
    return float((top > confident).float().mean()), set(label[top > confident].tolist())


def test_the_judge_rejects_what_is_no_digit(judge):
    assert recognisable(judge(_junk(300, torch.Generator().manual_seed(1))))[0] < 0.1
    test_images = data.digits("test", rgb=True)[0]
    blurred = torch.nn.functional.avg_pool2d(test_images.float(), 3, 1, 1).to(torch.uint8)  # digits gone soft
    assert recognisable(judge(blurred))[0] < recognisable(judge(test_images))[0] - 0.2


def test_shipped_model_samples_recognisable_digits(judge):
    path = os.path.join(ASSETS, "digits.safetensors")
    assert os.path.getsize(path) < 4 * 2**20  # a few MB at most
    model, sde, config = load_checkpoint(path)
    assert config.data.dataset == "DIGITS_RGB" and sde.N == config.model.num_scales
    score_fn = get_score_fn(sde, model, continuous=True)
    ((_, images, nfe),) = generate.sample_batches(score_fn, sde, config, list(range(100)), 100, seed=0)
    assert nfe == sde.N and images.shape == (100, 3, 8, 8)
    fraction, classes = recognisable(judge(images))
    assert fraction >= 0.75 and classes == set(range(10)), (fraction, classes)


def test_shipped_classifier_steers_the_model(judge, tmp_path, capsys):
    assert cli.main(["sample", "--class", "3", "--num-samples", "20", "--out", str(tmp_path)]) == 0
    with np.load(tmp_path / "samples.npz") as f:
        images = torch.from_numpy(f["samples"]).permute(0, 3, 1, 2)
    top, label = judge(images).max(1)
    assert float((label == 3).float().mean()) >= 0.7, label.tolist()


def test_default_inpaint_colorize_and_likelihood(tmp_path, capsys):
    original = data.digits("test", rgb=True)[0][:16].permute(0, 2, 3, 1).numpy()
    assert cli.main(["inpaint", "--out", str(tmp_path)]) == 0
    with np.load(tmp_path / "inpaint.npz") as f:
        assert np.array_equal(f["samples"][:, :, :4], original[:, :, :4])  # the left half is kept
    assert cli.main(["colorize", "--out", str(tmp_path)]) == 0
    with np.load(tmp_path / "colorize.npz") as f:
        coloured = f["samples"].astype(np.float64)
    grey = np.round(original.astype(np.float64).mean(-1))
    unclipped = ((coloured > 0) & (coloured < 255)).all(-1)  # black ink pixels clip at 0
    assert unclipped[grey > 0].mean() > 0.5, unclipped[grey > 0].mean()
    assert np.abs(coloured.mean(-1) - grey)[unclipped].max() <= 0.5 + 1e-9  # 8-bit rounding of each channel
    capsys.readouterr()
    assert cli.main(["likelihood", "--num-samples", "20", "--tol", "1e-4"]) == 0
    bpd = float(capsys.readouterr().out.split(" bits/dim")[0])
    assert 0 < bpd < 8
