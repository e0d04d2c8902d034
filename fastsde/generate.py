"""Sampling at scale: per-sample seeds, batches, precision, shards over processes, and the merge.

Sample i is drawn with its own generator, seeded from (seed, i), so it is the same whatever the
batch size or the number of processes; rank r of `world` draws samples r, r + world, ... and
writes them to <out>/samples_rank<r>.npz; merge() gathers the shards into samples.npz (uint8 NHWC
under 'samples', as the official sample files) and a PNG grid. Batch independence holds for the
fixed-step samplers (PC with a per-sample Langevin step, Heun, DPM-Solver++(2M)); adaptive RK45
chooses one step size for the whole batch.
"""
import contextlib
import glob
import os
import sys
import time

import numpy as np
import torch

from . import data, images as images_lib, sampling
from ._random import Philox
from .checkpoint import atomic_write

SAMPLERS = ("pc", "ode", *sampling.FAST_SOLVERS)
NOISE = ("torch", "philox")


def sample_seed(seed, i):
    """The generator seed of sample i in a run seeded with `seed` (distinct streams per sample)."""
    return (int(seed) * 1_000_003 + int(i)) % (2 ** 63)


def default_eps(sde):
    """The official sampling eps: 1e-5 for VE, 1e-3 for VP and sub-VP."""
    from .sde import VESDE
    return 1e-5 if isinstance(sde, VESDE) else 1e-3


def sample_batch(score_fn, sde, config, indices, seed, sampler="pc", steps=None, device="cpu", eps=None,
                 predictor=None, corrector=None, snr=None, n_steps=None, cuda_graph=False, noise="torch"):
    """Samples `indices` (a list of sample numbers), each from its own seed: model-space
    [len(indices), C, H, W] and the number of network evaluations. sampler: 'pc' (the config's
    predictor / corrector unless given, N = sde.N steps, per-sample Langevin step sizes), 'ode'
    (RK45, the official probability-flow sampler) or a fast solver ('heun', 'dpmpp_2m') with
    `steps` steps. cuda_graph: replay each step from a CUDA graph (CUDA only). noise: 'torch' (a
    torch.Generator per sample) or 'philox' (a fastsde.Philox stream per sample, drawn inside the
    PC kernels; different numbers from 'torch')."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if noise not in NOISE:
        raise ValueError(f"noise must be one of {', '.join(NOISE)}, got {noise!r}")
    s = config.sampling
    shape = (len(indices), config.data.num_channels, config.data.image_size, config.data.image_size)
    seeds = [sample_seed(seed, i) for i in indices]
    generators = (Philox(seeds, device) if noise == "philox"
                  else [torch.Generator(device).manual_seed(k) for k in seeds])
    eps = default_eps(sde) if eps is None else eps
    if sampler == "pc":
        return sampling.pc_sample(score_fn, sde, shape, predictor or s.predictor, corrector or s.corrector,
                                  snr=s.snr if snr is None else snr, n_steps=n_steps or s.n_steps_each,
                                  probability_flow=s.probability_flow, denoise=s.noise_removal, eps=eps,
                                  generator=generators, device=device, per_sample=True, cuda_graph=cuda_graph)
    if sampler == "ode":
        return sampling.ode_sample(score_fn, sde, shape, "RK45", eps=eps, generator=generators, device=device)
    return sampling.ode_sample(score_fn, sde, shape, sampler, steps=steps or 20, eps=eps,
                               generator=generators, device=device, cuda_graph=cuda_graph)


class Progress:
    """A one-line progress report on stderr: images done, images per second."""

    def __init__(self, total, label, stream=None):
        self.total, self.label, self.start, self.done = total, label, time.time(), 0
        self.stream = stream or sys.stderr

    def update(self, n):
        self.done += n
        rate = self.done / max(time.time() - self.start, 1e-9)
        width, filled = 30, self.done * 30 // max(self.total, 1)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                          f"{rate:.2f} img/s")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def sample_shard(score_fn, sde, config, num_samples, batch_size, seed=0, rank=0, world=1, progress=True,
                 **kwargs):
    """This rank's share of samples 0..num_samples-1: (indices [n], uint8 images [n, C, H, W],
    network evaluations per image, seconds). kwargs go to sample_batch."""
    indices = list(range(rank, num_samples, world))
    out, nfe, start = [], 0, time.time()
    bar = Progress(len(indices), f"sampling (rank {rank})" if world > 1 else "sampling") if progress else None
    for k in range(0, len(indices), batch_size):
        chunk = indices[k:k + batch_size]
        x, nfe = sample_batch(score_fn, sde, config, chunk, seed, **kwargs)
        out.append(data.to_uint8(x, config.data.centered).cpu())
        if bar:
            bar.update(len(chunk))
    shape = (0, config.data.num_channels, config.data.image_size, config.data.image_size)
    images = torch.cat(out) if out else torch.zeros(shape, dtype=torch.uint8)
    return torch.tensor(indices, dtype=torch.long), images, nfe, time.time() - start


def save_npz(path, **arrays):
    """np.savez_compressed(path, **arrays), atomically."""
    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    atomic_write(path, write)


def write_shard(out, rank, indices, images):
    """Writes <out>/samples_rank<rank>.npz: 'indices' and 'samples' (uint8 NHWC)."""
    path = os.path.join(out, f"samples_rank{rank}.npz")
    save_npz(path, indices=np.asarray(indices), samples=images.permute(0, 2, 3, 1).numpy())
    return path


def merge(out, grid_size=64, scale=4):
    """Gathers <out>/samples_rank*.npz into <out>/samples.npz (samples in index order, uint8 NHWC)
    and <out>/samples.png (a grid of the first `grid_size`); checks that every index from 0 to
    the largest is there exactly once. Returns the merged samples [N, H, W, C]."""
    shards = sorted(glob.glob(os.path.join(out, "samples_rank*.npz")))
    if not shards:
        raise FileNotFoundError(f"{out}: no samples_rank*.npz shards to merge")
    indices, samples = [], []
    for path in shards:
        with np.load(path) as f:
            indices.append(f["indices"])
            samples.append(f["samples"])
    indices, samples = np.concatenate(indices), np.concatenate(samples)
    order = np.argsort(indices, kind="stable")
    if not np.array_equal(indices[order], np.arange(len(indices))):
        raise ValueError(f"{out}: the shards do not hold samples 0..{len(indices) - 1} exactly once")
    samples = samples[order]
    save_npz(os.path.join(out, "samples.npz"), samples=samples)
    images_lib.write_png(os.path.join(out, "samples.png"),
                         images_lib.grid(samples[:grid_size].transpose(0, 3, 1, 2), scale=scale))
    for path in shards:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return samples
