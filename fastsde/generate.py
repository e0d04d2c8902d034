"""Sampling at scale: per-sample seeds, batches, precision, shards over processes, resuming, and the merge.

Sample i is drawn with its own generator, seeded from (seed, i), so it is the same whatever the
batch size, the number of processes, or how often the run was stopped and resumed. A run lives in
a folder: run.json (open_run: what the samples depend on, so that a resumed run draws the same
ones), samples_part<first>.npz (sample_to: what each process drew, saved as it goes) and, once
merged, samples.npz (samples 0..N-1, uint8 NHWC under 'samples', as the official sample files)
and a PNG grid. Rank r of `world` draws every world-th of the samples still missing (todo). Batch
independence holds for the fixed-step samplers (PC with a per-sample Langevin step, Heun,
DPM-Solver++(2M)); adaptive RK45 chooses one step size for the whole batch.
"""
import contextlib
import glob
import json
import os
import sys
import time
import zipfile

import numpy as np
import torch

from . import data, images as images_lib, sampling
from ._random import Philox
from .checkpoint import atomic_write, atomic_write_bytes

SAMPLERS = ("pc", "ode", *sampling.FAST_SOLVERS)
SOLVER_STEPS = 20  # the fast solvers' default
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
    return sampling.ode_sample(score_fn, sde, shape, sampler, steps=steps or SOLVER_STEPS, eps=eps,
                               generator=generators, device=device, cuda_graph=cuda_graph)


def run_settings(sde, config, seed, sampler="pc", steps=None, predictor=None, corrector=None, snr=None,
                 noise="torch", **extra):
    """What the samples of sample_batch(..., sampler, steps, predictor, corrector, snr, noise) depend
    on, its defaults filled in, for open_run; `extra` adds more (the weights' digest, ...)."""
    s = config.sampling
    pc = sampler == "pc"
    return dict(config=config, seed=seed, sampler=sampler, noise=noise,
                steps=sde.N if pc else None if sampler == "ode" else steps or SOLVER_STEPS,
                predictor=(predictor or s.predictor) if pc else None,
                corrector=(corrector or s.corrector) if pc else None,
                snr=(s.snr if snr is None else snr) if pc else None, **extra)


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


def sample_batches(score_fn, sde, config, indices, batch_size, seed=0, progress=None, **kwargs):
    """Yields, batch by batch, (sample numbers [n], uint8 images [n, C, H, W] on the CPU, network
    evaluations per image) for the sample numbers `indices`. progress: a Progress to update.
    kwargs go to sample_batch."""
    for k in range(0, len(indices), batch_size):
        chunk = indices[k:k + batch_size]
        x, nfe = sample_batch(score_fn, sde, config, chunk, seed, **kwargs)
        if progress:
            progress.update(len(chunk))
        yield chunk, data.to_uint8(x, config.data.centered).cpu(), nfe


def save_npz(path, **arrays):
    """np.savez_compressed(path, **arrays), atomically."""
    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    atomic_write(path, write)


RUN = "run.json"
PARTS = "samples_part*.npz"


def open_run(out, settings, overwrite=False):
    """Starts the sampling run in folder `out` or resumes the one there: writes <out>/run.json
    (`settings`, a JSON-able dict of what the samples depend on) or checks that the run there has
    the same; overwrite: first deletes that run's samples. Call it from one process."""
    path = os.path.join(out, RUN)
    settings = json.loads(json.dumps(settings))
    if overwrite:
        for old in [path, os.path.join(out, "samples.npz"), os.path.join(out, "samples.png"),
                    *glob.glob(os.path.join(out, PARTS))]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)
    if os.path.exists(path):
        with open(path) as fh:
            there = json.load(fh)
        differ = [f"{k}: {there.get(k)!r} there, {settings.get(k)!r} here" if len(repr(there.get(k))) < 60 and
                  len(repr(settings.get(k))) < 60 else f"{k} differs" for k in sorted({*there, *settings})
                  if there.get(k) != settings.get(k)]
        if differ:
            raise ValueError(f"{out} holds samples of another run ({'; '.join(differ)}): sample into another "
                             f"folder, or overwrite them (--overwrite, overwrite=True)")
    elif os.path.exists(os.path.join(out, "samples.npz")) or glob.glob(os.path.join(out, PARTS)):
        raise ValueError(f"{out} holds samples but no {RUN} to say how they were drawn: sample into another "
                         f"folder, or overwrite them (--overwrite, overwrite=True)")
    else:
        atomic_write_bytes(path, json.dumps(settings, indent=1))


def _rows(path, key="samples"):
    """The length of array `key` in the .npz at `path`, from its header (nothing decompressed)."""
    with zipfile.ZipFile(path) as z, z.open(key + ".npy") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read(fh)[0][0]


def done(out):
    """The sample numbers already in `out` (a set): samples.npz holds 0..n-1, each part its 'indices'."""
    merged = os.path.join(out, "samples.npz")
    have = set(range(_rows(merged))) if os.path.exists(merged) else set()
    for path in glob.glob(os.path.join(out, PARTS)):
        with np.load(path) as f:
            have.update(f["indices"].tolist())
    return have


def todo(out, num_samples):
    """(the sample numbers still to draw, the run's total): the total is num_samples, or more if
    `out` holds higher sample numbers (a longer run cut short), and the numbers below it that `out`
    lacks are to draw. Rank r of `world` draws [r::world] of them; all ranks must call it before any
    writes to `out`."""
    have = done(out)
    total = max(num_samples, max(have) + 1 if have else 0)
    return [i for i in range(total) if i not in have], total


def write_part(out, indices, images):
    """Writes <out>/samples_part<first index>.npz: 'indices' [n] and 'samples' (uint8 NHWC). The name
    is new: a part holds only samples that no file in `out` held."""
    path = os.path.join(out, f"samples_part{indices[0]:09d}.npz")
    save_npz(path, indices=np.asarray(indices), samples=images.permute(0, 2, 3, 1).numpy())
    return path


def sample_to(out, score_fn, sde, config, indices, batch_size, seed=0, save_seconds=60, progress="sampling",
              **kwargs):
    """Draws samples `indices` into parts in `out` (write_part), saving what is drawn at least every
    `save_seconds` and when stopped by an error or Ctrl-C, so that a run cut short resumes where
    it stopped. progress: the label of a progress line on stderr, or None. Returns (network
    evaluations per image, seconds). kwargs go to sample_batch."""
    bar = Progress(len(indices), progress) if progress else None
    pending, nfe, start = [], 0, time.time()
    saved = start

    def save():
        if pending:
            write_part(out, [i for chunk, _ in pending for i in chunk], torch.cat([x for _, x in pending]))
            pending.clear()

    try:
        for chunk, images, nfe in sample_batches(score_fn, sde, config, indices, batch_size, seed, bar, **kwargs):
            pending.append((chunk, images))
            if time.time() - saved >= save_seconds:
                save()
                saved = time.time()
    finally:
        save()
    return nfe, time.time() - start


def merge(out, grid_size=64, scale=4):
    """Gathers <out>/samples.npz and the parts beside it into <out>/samples.npz (samples 0..N-1 in
    order, uint8 NHWC) and <out>/samples.png (a grid of the first `grid_size`), then deletes the
    parts; checks that every sample number from 0 to the largest is there. Returns the samples
    [N, H, W, C]."""
    merged = os.path.join(out, "samples.npz")
    parts = sorted(glob.glob(os.path.join(out, PARTS)))
    if not parts and not os.path.exists(merged):
        raise FileNotFoundError(f"{out}: no samples.npz or samples_part*.npz to merge")
    indices, samples = [], []
    for path in [merged] * os.path.exists(merged) + parts:
        with np.load(path) as f:
            samples.append(f["samples"])
            indices.append(f["indices"] if "indices" in f.files else np.arange(len(samples[-1])))
    indices, samples = np.concatenate(indices), np.concatenate(samples)
    # A merge stopped between writing samples.npz and deleting the parts leaves samples twice: the first is kept.
    indices, first = np.unique(indices, return_index=True)
    if not np.array_equal(indices, np.arange(len(indices))):
        missing = sorted(set(range(int(indices[-1]) + 1)) - set(indices.tolist()))
        raise ValueError(f"{out}: samples {missing[:5]}{' ...' if len(missing) > 5 else ''} are missing "
                         f"({len(indices)} of 0..{indices[-1]} there)")
    samples = samples[first]
    if parts:
        save_npz(merged, samples=samples)
    images_lib.write_png(os.path.join(out, "samples.png"),
                         images_lib.grid(samples[:grid_size].transpose(0, 3, 1, 2), scale=scale))
    for path in parts:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return samples
