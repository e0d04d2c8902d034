"""Counter-based Gaussian noise that every backend computes alike, so that a kernel can draw its
noise itself instead of reading a noise tensor: Philox-4x32-10 (Salmon et al., SC 2011) turned into
normals exactly as Triton's tl.randn does.

For a key (seed, offset) per sample, element j of sample b (j its index in the sample's NCHW order,
whatever the memory layout) is tl.randn(seed_b, offset_b + j): the counter (lo, hi, 0, 0) of the
64-bit offset_b + j and the key (lo, hi) of the 64-bit seed go through ten Philox rounds; the first
two 32-bit outputs become uniforms u = |int32| * 4.6566127342e-10 and one Box-Muller normal
sqrt(-2 ln max(u1, 1e-7)) cos(2 pi u2), all in float32.
"""

import torch

_MASK = 0xFFFFFFFF
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85


def _mul32(a, x):
    """(hi, lo) 32-bit halves of a * x for a constant a < 2^32 and int64 x in [0, 2^32), in int64
    arithmetic (the full product would overflow it): a is split into 16-bit halves."""
    p_hi, p_lo = x * (a >> 16), x * (a & 0xFFFF)  # a x = p_hi 2^16 + p_lo, each < 2^48
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & _MASK
    hi = (p_hi + (p_lo >> 16)) >> 16
    return hi, lo


def philox4x32(c0, c1, c2, c3, k0, k1, rounds=10):
    """Philox-4x32 on int64 tensors holding uint32 values; returns the four output words."""
    for _ in range(rounds):
        hi_b, lo_b = _mul32(_ROUND_B, c2)
        hi_a, lo_a = _mul32(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _MASK, (k1 + _KEY_B) & _MASK
    return c0, c1, c2, c3


def _uniform(x):
    """uint32 words -> float32 uniforms in [0, 1), as tl's uint_to_uniform_float."""
    v = torch.where(x >= 2**31, _MASK - x, x)  # int32 v < 0 becomes -v - 1
    return v.to(torch.float32) * torch.tensor(4.6566127342e-10, dtype=torch.float32)


def philox_normal_reference(key, shape):
    """The specification: standard normal noise [B, ...] (float32, NCHW order) for `key`, an int64
    tensor [B, 2] of (seed, offset) per sample, offsets >= 0."""
    D = 1
    for n in shape[1:]:
        D *= n
    key = key.to(torch.int64)
    seed, offset = key[:, :1], key[:, 1:]
    counter = offset + torch.arange(D, dtype=torch.int64, device=key.device)
    zero = torch.zeros_like(counter)
    w0, w1, _, _ = philox4x32(
        counter & _MASK,
        (counter >> 32) & _MASK,
        zero,
        zero,
        (seed & _MASK).expand_as(counter),
        ((seed >> 32) & _MASK).expand_as(counter),
    )
    u1 = torch.clamp_min(_uniform(w0), 1e-7)
    theta = torch.tensor(6.283185307179586, dtype=torch.float32) * _uniform(w1)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(theta)).reshape(shape)
