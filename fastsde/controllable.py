"""Controllable generation with an unconditional score model (Song et al. 2021, Sec. 5, App. I).

Inpainting and colorization run the PC sampler and, after every update, replace the known part of x
with the known data perturbed to the current time. Colorization knows the grey channel of an
orthonormal colour space. Class-conditional sampling adds a noise-conditional classifier's gradient
to the score: s(x, t) + scale grad_x log p(y | x, t) (Eq. 14). docs/upstream.md lists the fixes to
the official code.
"""

import json

import torch
import torch.nn.functional as F

from . import _random
from .checkpoint import CheckpointError, atomic_write, build_checked, read_safetensors
from .models.classifier import WideResNet
from .sampling import pc_sample
from .sde import batch_view

# The official orthonormal map from RGB to (grey, two colour-difference channels): column 0 is
# (1, 1, 1) / sqrt(3), so decoupled channel 0 is sqrt(3) times the grey level.
COLOR_BASIS = torch.tensor(
    [
        [5.7735014e-01, -8.1649649e-01, 4.7008697e-08],
        [5.7735026e-01, 4.0824834e-01, 7.0710671e-01],
        [5.7735026e-01, 4.0824822e-01, -7.0710683e-01],
    ]
)


def decouple(x):
    """RGB [B, 3, H, W] -> (grey sqrt(3), colour, colour) in the official orthonormal basis."""
    return torch.einsum("bihw,ij->bjhw", x, COLOR_BASIS.to(x))


def couple(y):
    """The inverse of decouple."""
    return torch.einsum("bihw,ij->bjhw", y, torch.linalg.inv(COLOR_BASIS.double()).to(y))


def replace_known(sde, known, mask, generator=None, to=None, back=None):
    """constraint(x, x_mean, t) for pc_sample: in the space `to` maps into (identity by default),
    where mask = 1 x becomes the known data perturbed to time t (a fresh draw each call) and x_mean
    its marginal mean; where mask = 0 both keep the update's values. `back` maps back."""
    to, back = to or (lambda v: v), back or (lambda v: v)

    def constraint(x, x_mean, t):
        alpha, std = sde.marginal_coef(t)
        mean = batch_view(alpha, known) * known
        noised = mean + batch_view(std, known) * _random.randn(known.shape, generator, known.device, known.dtype)
        return (back(to(x) * (1 - mask) + noised * mask), back(to(x_mean) * (1 - mask) + mean * mask))

    return constraint


def _check_images(x, name, channels=None):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{name} must be a [B, C, H, W] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} has {x.shape[1]} channels; the model takes {channels}")


def inpaint(
    score_fn,
    sde,
    data,
    mask,
    predictor="reverse_diffusion",
    corrector="langevin",
    snr=0.16,
    n_steps=1,
    probability_flow=False,
    denoise=True,
    eps=1e-3,
    generator=None,
    per_sample=False,
):
    """Fills in data [B, C, H, W] (model space) where mask is 0, keeping it where mask is 1; mask
    [B or 1, C or 1, H, W] of zeros and ones. Returns (x, nfe) as pc_sample."""
    _check_images(data, "data")
    if (
        mask.dim() != 4
        or any(m not in (1, d) for m, d in zip(mask.shape, data.shape))
        or mask.shape[2:] != data.shape[2:]
    ):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit data of shape {tuple(data.shape)} "
            "(it must be [B or 1, C or 1, H, W])"
        )
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must hold only 0 (to fill in) and 1 (known)")
    generator = _random.as_generator(generator, data.device)
    mask = mask.to(data)
    x, nfe = pc_sample(
        score_fn,
        sde,
        data.shape,
        predictor,
        corrector,
        snr,
        n_steps,
        probability_flow,
        denoise,
        eps,
        generator,
        data.device,
        per_sample,
        constraint=replace_known(sde, data, mask, generator),
    )
    return x * (1 - mask) + data * mask, nfe  # the known part is the data itself, not its value at eps


def colorize(
    score_fn,
    sde,
    grey,
    predictor="reverse_diffusion",
    corrector="langevin",
    snr=0.16,
    n_steps=1,
    probability_flow=False,
    denoise=True,
    eps=1e-3,
    generator=None,
    per_sample=False,
):
    """Colours grey images: grey [B, 1, H, W], or [B, 3, H, W] with equal channels (model space),
    for a model of RGB images. The result's channel mean equals the grey input. Returns (x, nfe)."""
    _check_images(grey, "grey")
    if grey.shape[1] == 3:
        if not torch.allclose(grey, grey.mean(1, keepdim=True).expand_as(grey), atol=1e-6):
            raise ValueError("grey has 3 channels that differ: colorize takes grey images (1 channel, or 3 equal ones)")
    elif grey.shape[1] != 1:
        raise ValueError(f"grey must have 1 channel (or 3 equal ones), got {grey.shape[1]}")
    rgb = grey.expand(-1, 3, -1, -1).contiguous()
    mask = torch.zeros(1, 3, 1, 1, dtype=rgb.dtype, device=rgb.device)
    mask[:, 0] = 1
    generator = _random.as_generator(generator, rgb.device)
    known = decouple(rgb)
    constraint = replace_known(sde, known, mask, generator, to=decouple, back=couple)
    x, nfe = pc_sample(
        score_fn,
        sde,
        rgb.shape,
        predictor,
        corrector,
        snr,
        n_steps,
        probability_flow,
        denoise,
        eps,
        generator,
        rgb.device,
        per_sample,
        constraint=constraint,
    )
    return couple(decouple(x) * (1 - mask) + known * mask), nfe  # the grey level exactly as given


def classifier_score_fn(score_fn, classifier, labels, scale=1.0):
    """score_fn(x, t) + scale grad_x log p(labels | x, t), a score function for any sampler.
    classifier(x, t) -> logits [B, K]; labels: [B] class indices, or one class (an int) for every
    sample of any batch."""
    labels = torch.as_tensor(labels)
    on = {}  # (device, batch) -> the labels there, checked and copied once: a copy at every call waits for the device

    def conditional(x, t):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = classifier(xg, t)
            key = (x.device, len(x))
            if key not in on:
                if labels.min() < 0 or labels.max() >= logits.shape[1]:
                    raise ValueError(
                        f"labels must lie in [0, {logits.shape[1]}), the classifier's classes; "
                        f"got {labels.min().item()}..{labels.max().item()}"
                    )
                on[key] = (labels.expand(len(x)) if labels.dim() == 0 else labels).to(x.device)
            logp = F.log_softmax(logits.float(), dim=1).gather(1, on[key][:, None]).sum()
            (grad,) = torch.autograd.grad(logp, xg)
        return score_fn(x, t) + scale * grad.to(x.dtype)

    return conditional


def noise_conditional(net, sde):
    """classifier(x, t) for a network conditioned on the noise level: net(x, std(t))."""
    return lambda x, t: net(x, sde.marginal_coef(t)[1])


def train_classifier(
    net,
    sde,
    images,
    labels,
    centered,
    steps=2000,
    batch_size=128,
    lr=1e-3,
    eps=1e-5,
    seed=0,
    device="cpu",
    log=print,
    log_freq=100,
):
    """Trains a noise-conditional classifier on data perturbed by the forward SDE (App. I.4):
    t ~ U(eps, T), x_t = alpha(t) x + std(t) z, cross-entropy of net(x_t, std(t)). images: uint8
    [N, C, H, W]; labels [N]. Returns the mean loss of each log interval."""
    from .data import Batches, to_model

    g = torch.Generator(device).manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    batches, history, total = Batches(len(images), batch_size, seed), [], 0.0
    log_freq = min(log_freq, steps)
    net.train()
    for step in range(1, steps + 1):
        idx = next(batches)
        x = to_model(images[idx], centered, dequantize=True).to(device)
        t = torch.rand(len(x), device=device, generator=g) * (sde.T - eps) + eps
        alpha, std = sde.marginal_coef(t)
        xt = batch_view(alpha, x) * x + batch_view(std, x) * torch.randn(x.shape, device=device, generator=g)
        loss = F.cross_entropy(net(xt, std), labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
        if step % log_freq == 0:
            history.append(total / log_freq)
            log(f"classifier step {step}  loss {history[-1]:.4f}")
            total = 0.0
    net.eval()
    return history


def save_classifier(path, net, dtype=None):
    """Writes a WideResNet's weights (floating-point ones in `dtype` if given) and constructor
    arguments to .safetensors, atomically."""
    import safetensors.torch

    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in net.state_dict().items()
    }
    meta = {"fastsde_classifier": json.dumps(net.args)}
    atomic_write(path, lambda tmp: safetensors.torch.save_file(state, tmp, metadata=meta))


def load_classifier(path, device="cpu"):
    """A WideResNet from a file written by save_classifier, in eval mode on `device`."""
    from safetensors import safe_open

    state, _ = read_safetensors(path)  # refuses files that are not safetensors, clearly
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if "fastsde_classifier" not in meta:
        raise CheckpointError(f"{path}: not a fastsde classifier (no 'fastsde_classifier' metadata)")
    args = json.loads(meta["fastsde_classifier"])
    net = build_checked(lambda: WideResNet(**args), state, path)
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()
