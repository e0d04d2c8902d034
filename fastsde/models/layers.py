"""Layers of the official score networks, with the official parameter names (so state dicts load),
routed through fastsde.ops for GroupNorm(+SiLU) and FIR resampling."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops

ACTS = {"swish": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2)}


def get_act(name):
    """The activation module for the config name (swish, elu, relu, lrelu)."""
    if name.lower() not in ACTS:
        raise ValueError(f"model.nonlinearity must be one of {', '.join(ACTS)}, got {name!r}")
    return ACTS[name.lower()]()


def default_init(shape, scale=1.0):
    """DDPM's initialisation: variance scaling, fan_avg, uniform (scale 0 means 1e-10)."""
    scale = 1e-10 if scale == 0 else scale
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    bound = math.sqrt(3 * scale / ((fan_in + fan_out) / 2))
    return (torch.rand(shape) * 2 - 1) * bound


def conv(in_ch, out_ch, kernel=3, stride=1, padding=None, bias=True, init_scale=1.0):
    """nn.Conv2d with DDPM's initialisation ('same' padding by default)."""
    c = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2 if padding is None else padding, bias=bias)
    with torch.no_grad():
        c.weight.copy_(default_init(c.weight.shape, init_scale))
        if bias:
            c.bias.zero_()
    return c


def dense(in_dim, out_dim):
    lin = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        lin.weight.copy_(default_init(lin.weight.shape))
        lin.bias.zero_()
    return lin


class StackedLinear(nn.Linear):
    """Linear maps of the same input as one GEMM, built from their weights [out_i, in] and biases
    [out_i]: forward(x [..., in]) -> their outputs, a tuple of [..., out_i] (views of one result)."""

    def __init__(self, weights, biases):
        w = weights[0]
        super().__init__(w.shape[1], sum(v.shape[0] for v in weights), device=w.device, dtype=w.dtype)
        with torch.no_grad():
            self.weight.copy_(torch.cat(weights))
            self.bias.copy_(torch.cat(biases))
        self.requires_grad_(any(v.requires_grad for v in (*weights, *biases)))  # as frozen as its sources
        self.sizes = [v.shape[0] for v in weights]

    def forward(self, x):
        return super().forward(x).split(self.sizes, dim=-1)


class Pick(nn.Module):
    """Stands for a layer merged into a StackedLinear: forward(outputs) -> outputs[index], the
    layer's own output among the stack's."""

    def __init__(self, index):
        super().__init__()
        self.index = index

    def forward(self, outputs):
        if not isinstance(outputs, tuple):
            raise TypeError(
                f"Pick({self.index}) takes a StackedLinear's outputs (a tuple), got {type(outputs).__name__}"
            )
        return outputs[self.index]


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters) computed by fastsde.ops.group_norm, with the activation that
    follows it fused when it is SiLU, and of x + offset[:, :, None, None] where an offset [N, C] is
    given (a residual block's time embedding, added in the kernel)."""

    def forward(self, x, act=None, offset=None):
        fused = "silu" if isinstance(act, nn.SiLU) else None
        # Under autocast x arrives in half precision; the op wants parameters of x's dtype (it
        # accumulates in float32 all the same).
        w, b, o = (None if p is None else p.to(x.dtype) for p in (self.weight, self.bias, offset))
        y = ops.group_norm(x, self.num_groups, w, b, self.eps, act=fused, offset=o)
        return act(y) if act is not None and fused is None else y


def group_norm(channels, groups=None):
    """NCSN++'s GroupNorm: min(C // 4, 32) groups, eps 1e-6."""
    return GroupNorm(groups or min(channels // 4, 32), channels, eps=1e-6)


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of the (log) noise level: [sin(2 pi x W), cos(2 pi x W)]."""

    def __init__(self, embedding_size=256, scale=1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x):
        proj = x[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def timestep_embedding(t, dim, max_positions=10000):
    """The sinusoidal embedding of DDPM / transformers, [B, dim], sin first, zero-padded if dim is odd."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, dtype=torch.float32, device=t.device) * -(math.log(max_positions) / (half - 1))
    )
    emb = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class NIN(nn.Module):
    """A 1x1 convolution stored as W [in, out] (the official 'network in network' layer)."""

    def __init__(self, in_dim, num_units, init_scale=0.1):
        super().__init__()
        self.W = nn.Parameter(default_init((in_dim, num_units), init_scale))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x):
        """x: [B, in_dim, H, W] -> [B, num_units, H, W], in x's memory format."""
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # In channels_last the pixels are the rows of a contiguous [B*H*W, in_dim] matrix: one
            # GEMM with the bias in it, no copies (the einsum below permutes and adds separately).
            return F.linear(x.permute(0, 2, 3, 1), self.W.t(), self.b).permute(0, 3, 1, 2)
        h = torch.einsum("bchw,co->bohw", x, self.W)
        return h + self.b.to(h.dtype)[None, :, None, None]  # (h's dtype: half precision under autocast)


def fir_taps(kernel, gain=1.0):
    """The separable FIR taps whose outer product is the official normalised 2-D filter times gain."""
    k = torch.as_tensor(kernel, dtype=torch.float32)
    return k / k.sum() * math.sqrt(gain)


class FIR(nn.Module):
    """FIR resampling by 2 with the official semantics (StyleGAN2's upsample_2d / downsample_2d):
    zero padding, filter normalised to unit sum (gain 4 when upsampling)."""

    def __init__(self, kernel, up=False):
        super().__init__()
        self.up, self.pad = up, len(kernel) - 2
        self.register_buffer("taps", fir_taps(kernel, gain=4.0 if up else 1.0), persistent=False)

    def forward(self, x):
        # The taps stay float32 whatever x's dtype: the op filters in float32 (float64 for float64
        # data) and converts the taps to that itself; a cast to x's dtype would round them and cost
        # two casts a call.
        p = self.pad
        if self.up:
            return ops.upfirdn2d(x, self.taps, up=2, pad=((p + 1) // 2 + 1, p // 2))
        return ops.upfirdn2d(x, self.taps, down=2, pad=((p + 1) // 2, p // 2))


class FIRConv2d(nn.Module):
    """A 3x3 convolution fused with FIR resampling by 2 (StyleGAN2's conv_downsample_2d and
    upsample_conv_2d), parameters `weight` [out, in, k, k] and `bias` as upstream."""

    def __init__(self, in_ch, out_ch, kernel=3, up=False, down=False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        if up == down:
            raise ValueError("FIRConv2d resamples: exactly one of up and down")
        self.weight = nn.Parameter(default_init((out_ch, in_ch, kernel, kernel)))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.up = up
        self.register_buffer("taps", fir_taps(fir_kernel, gain=4.0 if up else 1.0), persistent=False)

    def forward(self, x):
        k, kw, taps = len(self.taps), self.weight.shape[-1], self.taps  # float32, as in FIR
        if self.up:
            # Transposed convolution with stride 2, then the FIR filter (StyleGAN2's upsample_conv_2d;
            # upstream's PyTorch port of it fails on a negative-step slice).
            p = (k - 2) - (kw - 1)
            w = self.weight.flip([2, 3]).transpose(0, 1)
            x = F.conv_transpose2d(x, w, stride=2)
            x = ops.upfirdn2d(x, taps, pad=((p + 1) // 2 + 1, p // 2 + 1))
            # (The bias in x's dtype: a float32 bias would promote a half-precision x under autocast.)
            return x + self.bias.to(x.dtype)[None, :, None, None]
        p = (k - 2) + (kw - 1)
        x = ops.upfirdn2d(x, taps, pad=((p + 1) // 2, p // 2))
        return F.conv2d(x, self.weight, self.bias, stride=2)


def naive_upsample(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def naive_downsample(x):
    return F.avg_pool2d(x, 2)
