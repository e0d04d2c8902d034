"""Gaussian noise from a torch.Generator or from one generator per sample.

With one generator per sample, sample i's noise is the same whatever the batch it is drawn in,
so results do not depend on batch size or the number of processes (as in NVlabs/edm).
"""
import torch


def randn(shape, generator=None, device=None, dtype=torch.float32):
    """Standard normal noise of `shape` ([B, ...]). generator: None (the global RNG), a
    torch.Generator, or a sequence of B generators, one per sample (each on `device`)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    generators = list(generator)
    if len(generators) != shape[0]:
        raise ValueError(f"generator: got {len(generators)} per-sample generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(shape[1:], generator=g, device=device, dtype=dtype) for g in generators])


def as_generator(generator, device):
    """A generator argument with integer seeds turned into generators on `device`: None, a
    torch.Generator, or a sequence with one generator or seed per sample."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return [torch.Generator(device).manual_seed(int(g)) if not isinstance(g, torch.Generator) else g
            for g in generator]
