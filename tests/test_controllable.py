"""Inpainting, colorization and class-conditional sampling, driven by the exact score of a Gaussian
mixture (and an exact classifier for it), must give the right conditional distributions."""

import math

import pytest
import torch

from fastsde import VESDE, VPSDE, controllable, data, subVPSDE
from fastsde.checkpoint import CheckpointError, save_safetensors
from fastsde.models.classifier import WideResNet

from gmm import GaussianMixture

GMM2 = GaussianMixture(weights=[0.3, 0.7], means=[[-2.0, 0.0], [2.0, 1.0]], stds=[0.3, 0.6])
GMM3 = GaussianMixture(weights=[0.5, 0.5], means=[[1.5, 0.0, -0.3], [-0.5, -1.0, -0.9]], stds=[0.2, 0.2])
N = 2000
SDES = {"VE": lambda: VESDE(N=400), "VP": lambda: VPSDE(N=400), "subVP": lambda: subVPSDE(N=400)}
CASES = [
    ("VE", "reverse_diffusion", "langevin"),
    ("VP", "euler_maruyama", "none"),
    ("VP", "reverse_diffusion", "langevin"),
    ("subVP", "reverse_diffusion", "langevin"),
    ("subVP", "euler_maruyama", "none"),
]


def image_score_fn(gmm, sde):
    """The mixture's exact score for its points stored as [B, D, 1, 1] images."""
    score = gmm.score_fn(sde)
    return lambda x, t: score(x.flatten(1), t).reshape(x.shape)


def assert_gaussian(x, mean, std, what):
    sem = std / math.sqrt(len(x))
    assert abs(float(x.mean()) - mean) < 5 * sem + 0.03, (what, float(x.mean()), mean)
    assert abs(float(x.std()) / std - 1) < 0.1, (what, float(x.std()), std)


@pytest.mark.parametrize("name,predictor,corrector", CASES)
def test_inpainting_keeps_the_known_and_samples_the_conditional(name, predictor, corrector):
    sde = SDES[name]()
    known = torch.tensor([2.0, -2.0]).repeat_interleave(N // 2)  # coordinate 0 given, coordinate 1 unknown
    x_data = torch.stack([known, torch.full_like(known, 123.0)], 1)[:, :, None, None]  # 123: must be ignored
    mask = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    x, nfe = controllable.inpaint(
        image_score_fn(GMM2, sde),
        sde,
        x_data,
        mask,
        predictor,
        corrector,
        snr=0.16,
        eps=1e-3,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.isfinite(x).all() and nfe == sde.N * (1 + (corrector != "none"))
    assert torch.equal(x[:, 0], x_data[:, 0])  # exactly the known coordinate
    # Given x0 = 2 the point lies in the component at (2, 1) (std 0.6); given -2, in (-2, 0) (std 0.3).
    assert_gaussian(x[: N // 2, 1], 1.0, 0.6, "x1 | x0 = 2")
    assert_gaussian(x[N // 2 :, 1], 0.0, 0.3, "x1 | x0 = -2")


@pytest.mark.parametrize("name,predictor,corrector", CASES[:3] + CASES[3:4])
def test_colorization_keeps_the_grey_and_finds_the_colour(name, predictor, corrector):
    sde = SDES[name]()
    grey = torch.tensor([0.4, -0.8]).repeat_interleave(N // 2).reshape(N, 1, 1, 1)  # the two components' grey
    x, _ = controllable.colorize(
        image_score_fn(GMM3, sde), sde, grey, predictor, corrector, snr=0.16, generator=torch.Generator().manual_seed(1)
    )
    assert x.shape == (N, 3, 1, 1) and torch.isfinite(x).all()
    torch.testing.assert_close(x.mean(1, keepdim=True), grey, rtol=0, atol=1e-5)
    for half, k in ((x[: N // 2], 0), (x[N // 2 :], 1)):
        # Given its grey level, a component's colour is Gaussian around its mean with variance
        # s^2 (1 - 1/3) per channel (the grey direction is fixed).
        for c in range(3):
            assert_gaussian(half[:, c, 0, 0], float(GMM3.mu[k, c]), 0.2 * math.sqrt(2 / 3), (k, c))


def exact_classifier(gmm, sde):
    """log p(k | x_t) of the mixture's components, as logits."""

    def classifier(x, t):
        alpha, std = (v.double() for v in sde.marginal_coef(t))
        return gmm._components(x.flatten(1).double(), alpha, std)[0]

    return classifier


@pytest.mark.parametrize("name", ["VE", "VP", "subVP"])
def test_class_conditional_sampling_picks_the_component(name):
    sde = SDES[name]()
    labels = torch.tensor([0, 1]).repeat_interleave(N // 2)
    score_fn = controllable.classifier_score_fn(image_score_fn(GMM2, sde), exact_classifier(GMM2, sde), labels)
    from fastsde import pc_sample

    x, _ = pc_sample(
        score_fn,
        sde,
        (N, 2, 1, 1),
        "reverse_diffusion",
        "langevin",
        snr=0.16,
        generator=torch.Generator().manual_seed(2),
    )
    x = x.flatten(1)
    assert torch.equal(GMM2.assign(x), labels)
    for k, part in ((0, x[: N // 2]), (1, x[N // 2 :])):
        for c in range(2):
            assert_gaussian(part[:, c], float(GMM2.mu[k, c]), float(GMM2.s[k]), (k, c))


def test_replace_known_perturbs_the_known_part_and_keeps_the_update_elsewhere():
    sde = VPSDE(N=100)
    known = torch.ones(4, 2, 1, 1)
    mask = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    constraint = controllable.replace_known(sde, known, mask, torch.Generator().manual_seed(0))
    x, x_mean = torch.randn(4, 2, 1, 1), torch.randn(4, 2, 1, 1)
    t = torch.full((4,), 0.5)
    new_x, new_mean = constraint(x, x_mean, t)
    assert torch.equal(new_mean[:, 1], x_mean[:, 1]) and torch.equal(new_x[:, 1], x[:, 1])  # upstream used x here
    alpha, std = sde.marginal_coef(t)
    torch.testing.assert_close(new_mean[:, 0, 0, 0], alpha)
    # Where known, x is the data perturbed to time t by a fresh draw (official), not its mean.
    z = torch.randn(known.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(new_x[:, 0, 0, 0], alpha + std * z[:, 0, 0, 0])


def test_bad_input_is_refused_clearly():
    sde = VPSDE(N=100)
    score_fn = lambda x, t: -x  # noqa: E731
    data_ = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3, 5, 4\) does not fit data of shape \(2, 3, 4, 4\)"):
        controllable.inpaint(score_fn, sde, data_, torch.ones(2, 3, 5, 4))
    with pytest.raises(ValueError, match="only 0"):
        controllable.inpaint(score_fn, sde, data_, torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="3 channels that differ"):
        controllable.colorize(score_fn, sde, torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="1 channel"):
        controllable.colorize(score_fn, sde, torch.randn(2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        bad = controllable.classifier_score_fn(score_fn, exact_classifier(GMM2, sde), torch.tensor([0, 2]))
        bad(torch.zeros(2, 2, 1, 1), torch.full((2,), 0.5))


def test_classifier_trains_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    sde = VPSDE(N=100)
    images, labels = data.digits("train")
    net = WideResNet(num_classes=10, in_ch=1, blocks_per_group=1, channel_multiplier=1, embedding_size=16)
    history = controllable.train_classifier(
        net, sde, images, labels, centered=True, steps=200, batch_size=64, lr=2e-3, log=lambda s: None, log_freq=50
    )
    assert history[-1] < 0.8 * history[0], history  # (much of the loss is irreducible: the noisiest inputs)
    controllable.save_classifier(tmp_path / "c.safetensors", net)
    again = controllable.load_classifier(tmp_path / "c.safetensors")
    x, std = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 0.5, 1.0])
    torch.testing.assert_close(again(x, std), net(x, std))
    with pytest.raises(ValueError, match="built for 1"):
        again(torch.randn(3, 3, 8, 8), std)
    save_safetensors(tmp_path / "m.safetensors", torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="not a fastsde classifier"):
        controllable.load_classifier(tmp_path / "m.safetensors")
    # Metadata that asks for a wider network than the weights are: refused before it is built.
    import json

    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        tmp_path / "wide.safetensors",
        metadata={"fastsde_classifier": json.dumps({**net.args, "channel_multiplier": 1000})},
    )
    with pytest.raises(CheckpointError, match="wide.safetensors: the weights do not fit the WideResNet"):
        controllable.load_classifier(tmp_path / "wide.safetensors")
