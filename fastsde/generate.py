"""Sampling at scale: per-sample seeds, batches, precision, shards over processes, resuming, and the merge.

Sample i is drawn with its own generator, seeded from (seed, i), so it is the same whatever the
batch size, the number of processes, or how often the run was stopped and resumed. A run lives in
a folder as the fastsde.runs run 'samples': samples.json (run_settings: what the samples depend
on, so that a resumed run draws the same ones), the parts each process saves as it goes
(sample_to) and, once merged, samples.npz (samples 0..N-1, uint8 NHWC under 'samples', as the
official sample files) and a PNG grid. Each process draws its share of the samples missing. Batch
independence holds for every sampler: PC takes a per-sample Langevin step and RK45 steps each
sample on its own.
"""

import os
import sys
import time

import torch

from . import data, runs, sampling, solvers
from . import images as images_lib
from ._random import Philox, derive_seed

SAMPLERS = ("pc", "ode", *solvers.SOLVERS)
SOLVER_STEPS = 20  # the fixed-step solvers' default
SCHEDULE = "edm"
NOISE = ("torch", "philox")


def default_eps(sde, config=None):
    """The sampling eps: the config's sampling.eps where it has one (from a diffusers scheduler's
    sampling_eps), else the official 1e-5 for VE, 1e-3 for VP and sub-VP."""
    from .sde import VESDE

    if config is not None and config.sampling.get("eps") is not None:
        return config.sampling.eps
    return 1e-5 if isinstance(sde, VESDE) else 1e-3


def sample_batch(
    score_fn,
    sde,
    config,
    indices,
    seed,
    sampler="pc",
    steps=None,
    device="cpu",
    eps=None,
    predictor=None,
    corrector=None,
    snr=None,
    n_steps=None,
    cuda_graph=False,
    noise="torch",
    schedule=None,
):
    """Samples `indices` (a list of sample numbers), each from its own seed.

    sampler: 'pc' (the config's predictor and corrector unless given, N = sde.N, per-sample Langevin
    step sizes); 'ode' (RK45, the official probability-flow sampler, steps per sample); or a solver of
    fastsde.solvers, with `steps` steps on `schedule` (default: SOLVER_STEPS on EDM's).
    cuda_graph: each step replays a CUDA graph (CUDA only).
    noise: 'torch' (a torch.Generator per sample) or 'philox' (a fastsde.Philox stream per sample,
    drawn inside the PC kernels; other numbers than 'torch').
    Returns model-space samples [len(indices), C, H, W] and the network evaluations.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if noise not in NOISE:
        raise ValueError(f"noise must be one of {', '.join(NOISE)}, got {noise!r}")
    s = config.sampling
    shape = (len(indices), config.data.num_channels, config.data.image_size, config.data.image_size)
    seeds = [derive_seed(seed, i) for i in indices]
    generators = Philox(seeds, device) if noise == "philox" else [torch.Generator(device).manual_seed(k) for k in seeds]
    eps = default_eps(sde, config) if eps is None else eps
    if sampler == "pc":
        return sampling.pc_sample(
            score_fn,
            sde,
            shape,
            predictor or s.predictor,
            corrector or s.corrector,
            snr=s.snr if snr is None else snr,
            n_steps=n_steps or s.n_steps_each,
            probability_flow=s.probability_flow,
            denoise=s.noise_removal,
            eps=eps,
            generator=generators,
            device=device,
            per_sample=True,
            cuda_graph=cuda_graph,
        )
    if sampler == "ode":
        return sampling.ode_sample(
            score_fn, sde, shape, "RK45", eps=eps, generator=generators, device=device, per_sample=True
        )
    return solvers.sample(
        score_fn,
        sde,
        shape,
        sampler,
        SOLVER_STEPS if steps is None else steps,
        schedule or SCHEDULE,
        eps,
        generator=generators,
        device=device,
        cuda_graph=cuda_graph,
    )


def run_settings(
    sde,
    config,
    seed,
    sampler="pc",
    steps=None,
    predictor=None,
    corrector=None,
    snr=None,
    noise="torch",
    schedule=None,
    **extra,
):
    """What the samples of sample_batch(..., sampler, steps, predictor, corrector, snr, noise, schedule)
    depend on, its defaults filled in, for runs.start; `extra` adds more (the weights' digest, ...)."""
    s = config.sampling
    pc = sampler == "pc"
    fixed = sampler in solvers.FIXED_STEP
    return dict(
        config=config,
        seed=seed,
        sampler=sampler,
        noise=noise,
        schedule=(schedule or SCHEDULE) if fixed else None,
        steps=sde.N if pc else (SOLVER_STEPS if steps is None else steps) if fixed else None,
        predictor=(predictor or s.predictor) if pc else None,
        corrector=(corrector or s.corrector) if pc else None,
        snr=(s.snr if snr is None else snr) if pc else None,
        **extra,
    )


class Progress:
    """A one-line progress report on stderr: images done, images per second."""

    def __init__(self, total, label, stream=None):
        self.total, self.label, self.start, self.done = total, label, time.time(), 0
        self.stream = stream or sys.stderr

    def update(self, n):
        self.done += n
        rate = self.done / max(time.time() - self.start, 1e-9)
        width, filled = 30, self.done * 30 // max(self.total, 1)
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {rate:.2f} img/s"
        )
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def sample_batches(score_fn, sde, config, indices, batch_size, seed=0, **kwargs):
    """Yields, batch by batch, (sample numbers [n], uint8 images [n, C, H, W] on the CPU, network
    evaluations per image) for the sample numbers `indices`. kwargs go to sample_batch."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    for k in range(0, len(indices), batch_size):
        chunk = indices[k : k + batch_size]
        x, nfe = sample_batch(score_fn, sde, config, chunk, seed, **kwargs)
        yield chunk, data.to_uint8(x, config.data.centered).cpu(), nfe


def sample_to(out, score_fn, sde, config, indices, batch_size, seed=0, save_seconds=60, progress="sampling", **kwargs):
    """Draws samples `indices` into the run 'samples' in folder `out` (fastsde.runs), saving what is
    drawn at least every `save_seconds` and when stopped (error, Ctrl-C, SIGTERM), so that a rerun
    resumes where it stopped. progress: the label of a progress line on stderr, or None. Returns
    (the network evaluations of each sample drawn [n], seconds). kwargs go to sample_batch."""
    bar = Progress(len(indices), progress) if progress else None
    counts, start = [torch.zeros(0, dtype=torch.long)], time.time()
    with runs.Saver(out, "samples", save_seconds) as saver:
        for chunk, images, nfe in sample_batches(score_fn, sde, config, indices, batch_size, seed, **kwargs):
            saver.add(chunk, samples=images.permute(0, 2, 3, 1).numpy())
            counts.append(torch.as_tensor(nfe, dtype=torch.long).expand(len(chunk)))  # adaptive solvers: one each
            if bar:  # what it counts is saved, or will be on the way out
                bar.update(len(chunk))
    return torch.cat(counts), time.time() - start


def describe_nfe(counts):
    """'N network evaluations per sample', or their mean and largest where the samples differ."""
    if len(counts) == 0 or bool((counts == counts[0]).all()):
        return f"{int(counts[0]) if len(counts) else 0} network evaluations per sample"
    mean, most = float(counts.double().mean()), int(counts.max())
    return f"{mean:.1f} network evaluations per sample on average (at most {most})"


def merge(out, grid_size=64, scale=4):
    """Merges the run 'samples' in `out` into <out>/samples.npz (samples 0..N-1 in order, uint8
    NHWC under 'samples') and draws <out>/samples.png (a grid of the first `grid_size`). Returns
    the samples [N, H, W, C]."""
    samples = runs.merge(out, "samples")["samples"]
    images_lib.write_png(
        os.path.join(out, "samples.png"), images_lib.grid(samples[:grid_size].transpose(0, 3, 1, 2), scale=scale)
    )
    return samples
