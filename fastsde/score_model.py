"""The front door: fastsde.load(source) reads any checkpoint that fastsde knows and returns a ScoreModel,
whose score function is the fast path and whose methods sample, score likelihoods, encode, decode,
inpaint and colorize.

Images go in and come out as .sample returns them: uint8 [B, H, W, C] (as in the official sample
files), or float [B, C, H, W] in [0, 1].
"""

import functools
import glob
import os
import re

import torch

from . import checkpoint, configs, controllable, data, diffusers_format, generate, jax_format, likelihood, sampling
from ._random import derive_seed
from .engine import fast_score_fn

DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "assets", "digits.safetensors")
OUTPUTS = ("uint8", "float")


def latest_checkpoint(workdir):
    """The newest checkpoints/checkpoint_<n>.pth (or, from the JAX code, checkpoint_<n>) of a training
    workdir. Raises FileNotFoundError."""
    found = [
        (int(m.group(1)), p)
        for p in glob.glob(os.path.join(workdir, "checkpoints", "checkpoint_*"))
        if (m := re.search(r"checkpoint_(\d+)(\.pth)?$", p))
    ]
    if not found:
        raise FileNotFoundError(
            f"{workdir}: a folder, but neither a training workdir (checkpoints/checkpoint_*) "
            "nor a diffusers model (config.json)"
        )
    return max(found)[1]


def _built(state, config, path, device):
    """(model, sde, config) with the weights `state`, once they are known to fit the config's network."""
    from .models import create_model

    model = checkpoint.build_checked(lambda: create_model(config), state, path)
    checkpoint.load_state(model, state)
    return model.to(device).eval(), checkpoint.sde_from_config(config), config


def read_model(source=None, config=None, use_ema=True, device="cpu"):
    """(model, sde, config) of `source`: None (the embedded digits model), an official .pth, an
    official JAX (Flax) checkpoint, a .safetensors file, a training workdir (its newest checkpoint),
    or a diffusers NCSN++ model or pipeline folder. config: a config name, dict or JSON path
    (default: what the files say)."""
    path = DEFAULT_MODEL if source is None else os.fspath(source)
    if os.path.isdir(path) and diffusers_format.is_folder(path):
        state, found = diffusers_format.read(path)
        return _built(state, configs.load(found if config is None else config), path, device)
    if os.path.isdir(path):
        path = latest_checkpoint(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if jax_format.is_checkpoint(path):
        return _built(*jax_format.read_state(path, config, use_ema), path, device)
    folder = os.path.dirname(os.path.abspath(path))
    beside = os.path.join(os.path.dirname(folder), "config.json")
    if config is None and os.path.basename(folder) in ("checkpoints", "checkpoints-meta") and os.path.isfile(beside):
        config = beside  # a checkpoint of a fastsde workdir W (W/checkpoints*/...): W/config.json
    model, sde, config = checkpoint.load_checkpoint(path, config, use_ema=use_ema, device=device)
    return model, sde, configs.load(config)


def convert(source, out, to=None, config=None, use_ema=True, dtype=None):
    """Writes the weights of `source` (see read_model) to `out`: a .safetensors file with the config
    embedded (floating-point weights in `dtype` if given), or, with to='diffusers' (the default for
    an `out` without .safetensors), a diffusers pipeline folder. Returns the config used."""
    to = to or ("safetensors" if str(out).endswith(".safetensors") else "diffusers")
    if to not in ("safetensors", "diffusers"):
        raise ValueError(f"to must be 'safetensors' or 'diffusers', got {to!r}")
    if to == "diffusers" and dtype is not None:
        raise ValueError("dtype: diffusers folders are written in float32")
    model, _, config = read_model(source, config, use_ema)
    if to == "safetensors":
        checkpoint.save_safetensors(out, model, config, dtype)
    else:
        diffusers_format.write(out, model, config)
    return config


def with_steps(sde, config, steps):
    """The SDE with `steps` discretisation steps (N); a discrete model samples with its own N."""
    if steps is None or steps == sde.N:
        return sde
    if not config.training.get("continuous", True):
        raise ValueError(f"steps {steps}: a discrete model samples with its num_scales = {sde.N} steps")
    return checkpoint.sde_from_config(config, steps)


def default_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ScoreModel:
    """A score network with its SDE and config, ready to sample. score_fn(x [B, C, H, W], t [B]) is
    the fast path (see engine.fast_score_fn); `model` is the network as loaded."""

    def __init__(
        self,
        model,
        sde,
        config,
        device,
        precision="fp32",
        fold=True,
        channels_last=True,
        compile=False,
        cuda_graph=None,
    ):
        self.model, self.sde, self.config, self.device = model, sde, config, torch.device(device)
        self.continuous = bool(config.training.get("continuous", True))
        self.cuda_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self._fast = dict(precision=precision, fold=fold, channels_last=channels_last, compile=compile)

    @functools.cached_property
    def score_fn(self):
        return fast_score_fn(self.model, self.sde, self.continuous, self.device, **self._fast)

    @property
    def shape(self):
        """(C, H, W) of the model's images."""
        d = self.config.data
        return d.num_channels, d.image_size, d.image_size

    def _to_model(self, images, name="images"):
        """Images as .sample returns them -> model space [B, C, H, W] on the device."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(
                f"{name} must be a 4-D tensor: uint8 [B, H, W, C] or float [B, C, H, W] in [0, 1], "
                f"got {getattr(images, 'shape', type(images).__name__)}"
            )
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2).float() / 255
        elif not images.is_floating_point():
            raise ValueError(f"{name} must be uint8 or floating point, got {images.dtype}")
        x = images.float().to(self.device)
        return 2 * x - 1 if self.config.data.centered else x

    def _from_model(self, x, output):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if output == "uint8":
            return data.to_uint8(x, self.config.data.centered).permute(0, 2, 3, 1).cpu()
        return ((x + 1) / 2 if self.config.data.centered else x).float()

    def sample(self, n, sampler="pc", steps=None, seed=0, batch_size=None, output="uint8", return_nfe=False, **options):
        """n samples, sample i drawn from its own seed (seed, i), as `fastsde sample` draws them.

        sampler: 'pc', 'ode' (RK45) or a solver of fastsde.solvers. steps: the PC sampler's N or a solver's.
        options: predictor, corrector, snr, schedule, eps, noise.
        Returns uint8 [n, H, W, C], or float [n, C, H, W] in [0, 1] with output='float' (not clipped).
        With return_nfe, also the network evaluations of each sample, [n].
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        sde = with_steps(self.sde, self.config, steps if sampler == "pc" else None)
        steps = None if sampler == "pc" else steps
        batch = batch_size or min(n, 64)
        parts, counts = [], []
        for k in range(0, n, batch):
            indices = list(range(k, min(k + batch, n)))
            x, nfe = generate.sample_batch(
                self.score_fn,
                sde,
                self.config,
                indices,
                seed,
                sampler,
                steps,
                self.device,
                cuda_graph=self.cuda_graph,
                **options,
            )
            parts.append(self._from_model(x, output))
            counts.append(torch.as_tensor(nfe, dtype=torch.long).expand(len(indices)))
        images = torch.cat(parts)
        return (images, torch.cat(counts)) if return_nfe else images

    def likelihood(self, images, seed=0, batch_size=None, **options):
        """Bits per dimension of each image, [B], with the official convention.

        images: uint8 [B, H, W, C], dequantized uniformly first; or float [B, C, H, W] in [0, 1], as they are.
        options go to fastsde.log_likelihood (hutchinson, rtol, atol, eps).
        """
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4:
            _, bpd, _, _ = likelihood.dataset_bits_per_dim(
                self.score_fn,
                self.sde,
                images.permute(0, 3, 1, 2),
                self.config.data.centered,
                batch_size=batch_size or len(images),
                seed=seed,
                device=self.device,
                **options,
            )
            return bpd
        x = self._to_model(images)
        g = torch.Generator(self.device).manual_seed(seed)
        return likelihood.bits_per_dim(self.score_fn, self.sde, x, self.config.data.centered, generator=g, **options)[
            0
        ].cpu()

    def encode(self, images, method="RK45", steps=None, eps=None):
        """The latent codes z = x(T) [B, C, H, W] of images, by the probability-flow ODE."""
        eps = generate.default_eps(self.sde, self.config) if eps is None else eps
        return sampling.ode_encode(self.score_fn, self.sde, self._to_model(images), method, steps=steps, eps=eps)[0]

    def decode(self, z, method="RK45", steps=None, eps=None, output="float"):
        """Images from latent codes z [B, C, H, W] (the inverse of encode, up to the solver's error)."""
        eps = generate.default_eps(self.sde, self.config) if eps is None else eps
        x, _ = sampling.ode_sample(
            self.score_fn, self.sde, z.shape, method, steps=steps, denoise=False, eps=eps, z=z.to(self.device)
        )
        return self._from_model(x, output)

    def inpaint(self, images, mask, seed=0, output="uint8", **options):
        """Fills in images where mask [B or 1, 1 or C, H, W] is 0, keeping them where it is 1, with the
        PC sampler (options: predictor, corrector, snr, n_steps, eps)."""
        x = self._to_model(images)
        g = [derive_seed(seed, i) for i in range(len(x))]  # seeds: the sampler makes generators on x's device
        result, _ = controllable.inpaint(
            self.score_fn, self.sde, x, mask.to(self.device), generator=g, per_sample=True, **self._pc(options)
        )
        return self._from_model(result, output)

    def colorize(self, grey, seed=0, output="uint8", **options):
        """Colours grey images (1 channel, or 3 equal ones) of an RGB model with the PC sampler."""
        x = self._to_model(grey, "grey")
        g = [derive_seed(seed, i) for i in range(len(x))]  # seeds: the sampler makes generators on x's device
        result, _ = controllable.colorize(self.score_fn, self.sde, x, generator=g, per_sample=True, **self._pc(options))
        return self._from_model(result, output)

    def _pc(self, options):
        s = self.config.sampling
        return dict(
            dict(
                predictor=s.predictor,
                corrector=s.corrector,
                snr=s.snr,
                n_steps=s.n_steps_each,
                eps=generate.default_eps(self.sde, self.config),
            ),
            **options,
        )


def load(
    source=None,
    config=None,
    device=None,
    precision="fp32",
    use_ema=True,
    fold=True,
    channels_last=True,
    compile=False,
    cuda_graph=None,
):
    """A ScoreModel of `source`, its score function on the fast path.

    source: any checkpoint read_model reads; None: the embedded digits model.
    device: default CUDA if there is one. precision: fp32, tf32, bf16 or fp16.
    fold, channels_last, compile, cuda_graph: the fast path's parts; each False turns one off.
    """
    device = default_device() if device is None else torch.device(device)
    model, sde, config = read_model(source, config, use_ema, device)
    return ScoreModel(model, sde, config, device, precision, fold, channels_last, compile, cuda_graph)
