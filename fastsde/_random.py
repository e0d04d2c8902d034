"""Gaussian noise from a torch.Generator, from one generator per sample, or from a Philox stream
per sample that the kernels draw from themselves.

With one generator (or Philox seed) per sample, sample i's noise is the same whatever the batch it
is drawn in, so results do not depend on batch size or the number of processes (as in NVlabs/edm).
"""

import math

import torch

from .ops.philox import philox_normal_reference


class Philox:
    """One counter-based noise stream per sample (fastsde/ops/philox.py), drawn inside the fused
    sampler kernels, so that no noise tensor is written or read. Sample b's numbers depend on
    seeds[b] alone; each draw moves every sample's counter on by its size, on the device, so that
    draws work inside CUDA graphs. Pass it wherever a generator is taken."""

    def __init__(self, seeds, device=None):
        seeds = torch.as_tensor(seeds, dtype=torch.int64).reshape(-1)
        self.key = torch.stack([seeds, torch.zeros_like(seeds)], 1).to(device)  # [B, 2] (seed, offset)
        self.device = self.key.device

    def __len__(self):
        return self.key.shape[0]

    def draw(self, shape, rows=None):
        """The key [B, 2] of the next draw of `shape` ([B, ...]) by the samples `rows` (a long tensor
        of B sample numbers; default: all); their counters move on past it."""
        count = len(self) if rows is None else len(rows)
        if shape[0] != count:
            raise ValueError(f"generator: a Philox stream of {count} samples for a batch of {shape[0]}")
        if rows is None:  # in place on the device: draws inside CUDA graphs
            key = self.key.clone()
            self.key[:, 1] += math.prod(shape[1:])
            return key
        rows = rows.to(self.device)
        key = self.key[rows]
        self.key[rows, 1] += math.prod(shape[1:])
        return key


def derive_seed(seed, *numbers):
    """The generator seed of the stream `numbers` (sample i; pass r and batch k ...) of a run seeded
    with `seed`: a different stream for each tuple, a seed in [0, 2^63)."""
    for n in numbers:
        seed = int(seed) * 1_000_003 + int(n)
    return int(seed) % 2**63


def randn(shape, generator=None, device=None, dtype=torch.float32, rows=None):
    """Standard normal noise of `shape` ([B, ...]). generator: None (the global RNG), a
    torch.Generator, a sequence of generators, one per sample (each on `device`), or a Philox.
    rows: which samples' streams draw (a long tensor of B sample numbers; default: all), for a
    sampler whose samples move on their own (one torch.Generator draws for all rows alike)."""
    if isinstance(generator, Philox):
        return philox_normal_reference(generator.draw(shape, rows), shape).to(device=device, dtype=dtype)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    generators = list(generator)
    generators = generators if rows is None else [generators[i] for i in rows.tolist()]
    if len(generators) != shape[0]:
        raise ValueError(f"generator: got {len(generators)} per-sample generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(shape[1:], generator=g, device=device, dtype=dtype) for g in generators])


def as_generator(generator, device):
    """A generator argument with integer seeds turned into generators on `device`: None, a
    torch.Generator, a Philox, or a sequence with one generator or seed per sample."""
    if generator is None or isinstance(generator, (torch.Generator, Philox)):
        return generator
    return [torch.Generator(device).manual_seed(int(g)) if not isinstance(g, torch.Generator) else g for g in generator]
