"""NCSN (Song & Ermon 2019) and NCSNv2 (Song & Ermon 2020): RefineNet-style score networks with the
official parameter names (`ncsn`, `ncsnv2_64`, `ncsnv2_128`, `ncsnv2_256`).

Upstream's PyTorch port cannot build them (it reads `config.data.channels`; its `ncsn` also pairs
unconditional norms with conditional blocks). Here NCSN is noise-conditional through
ConditionalInstanceNorm++ over the num_scales noise levels, as in the original NCSN, and NCSNv2
is unconditional and divides its output by sigma_y. Blocks take an optional class index y; their
norms condition on it only in NCSN.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import get_act
from .ncsnpp import get_sigmas


class InstanceNormPlus(nn.Module):
    """InstanceNorm++: instance norm that puts back the normalised per-channel means (alpha) and
    applies gamma, beta; conditional on y (one row of [gamma, alpha, beta] per class) when
    num_classes is given."""

    def __init__(self, num_features, num_classes=None, bias=True):
        super().__init__()
        self.num_features, self.bias, self.conditional = num_features, bias, num_classes is not None
        k = 3 if bias else 2
        if self.conditional:
            self.embed = nn.Embedding(num_classes, k * num_features)
            with torch.no_grad():
                self.embed.weight[:, : 2 * num_features].normal_(1, 0.02)
                self.embed.weight[:, 2 * num_features :].zero_()
        else:
            self.alpha = nn.Parameter(torch.empty(num_features).normal_(1, 0.02))
            self.gamma = nn.Parameter(torch.empty(num_features).normal_(1, 0.02))
            if bias:
                self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x, y=None):
        means = x.mean(dim=(2, 3))
        means = (means - means.mean(-1, keepdim=True)) / torch.sqrt(means.var(-1, keepdim=True) + 1e-5)
        h = F.instance_norm(x, eps=1e-5)
        if self.conditional:
            parts = self.embed(y).chunk(3 if self.bias else 2, dim=-1)
            gamma, alpha = parts[0], parts[1]
            beta = parts[2] if self.bias else None
        else:
            gamma, alpha, beta = self.gamma[None], self.alpha[None], getattr(self, "beta", None)
            beta = None if beta is None else beta[None]
        h = h + means[..., None, None] * alpha[..., None, None]
        out = gamma[..., None, None] * h
        return out if beta is None else out + beta[..., None, None]


def conv3x3(in_ch, out_ch, bias=True, dilation=1):
    return nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """A convolution followed by 2x2 mean pooling (zero-padding first for odd sizes, adjust_padding)."""

    def __init__(self, in_ch, out_ch, kernel_size=3, adjust_padding=False):
        super().__init__()
        c = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        self.conv = nn.Sequential(nn.ZeroPad2d((1, 0, 1, 0)), c) if adjust_padding else c

    def forward(self, x):
        h = self.conv(x)
        return (h[:, :, ::2, ::2] + h[:, :, 1::2, ::2] + h[:, :, ::2, 1::2] + h[:, :, 1::2, 1::2]) / 4.0


class ResidualBlock(nn.Module):
    """norm, act, conv, norm, act, conv, plus a shortcut; 'down' halves the size (mean pool, or a
    dilated conv at dilation > 1, which keeps the size as upstream does)."""

    def __init__(self, in_ch, out_ch, act, num_classes=None, resample=None, dilation=1, adjust_padding=False):
        super().__init__()
        self.act = act
        norm = lambda ch: InstanceNormPlus(ch, num_classes)  # noqa: E731
        if resample == "down":
            self.conv1 = conv3x3(in_ch, in_ch, dilation=dilation)
            self.normalize2 = norm(in_ch)
            if dilation > 1:
                self.conv2 = conv3x3(in_ch, out_ch, dilation=dilation)
                shortcut = conv3x3(in_ch, out_ch, dilation=dilation)
            else:
                self.conv2 = ConvMeanPool(in_ch, out_ch, 3, adjust_padding)
                shortcut = ConvMeanPool(in_ch, out_ch, 1, adjust_padding)
        elif resample is None:
            self.conv1 = conv3x3(in_ch, out_ch, dilation=dilation)
            self.normalize2 = norm(out_ch)
            self.conv2 = conv3x3(out_ch, out_ch, dilation=dilation)
            if dilation > 1:
                shortcut = conv3x3(in_ch, out_ch, dilation=dilation)
            else:
                shortcut = nn.Conv2d(in_ch, out_ch, 1)
        else:
            raise ValueError(f"resample must be 'down' or None, got {resample!r}")
        if out_ch != in_ch or resample is not None:
            self.shortcut = shortcut
        self.normalize1 = norm(in_ch)

    def forward(self, x, y=None):
        h = self.conv1(self.act(self.normalize1(x, y)))
        h = self.conv2(self.act(self.normalize2(h, y)))
        return (self.shortcut(x) if hasattr(self, "shortcut") else x) + h


class RCUBlock(nn.Module):
    """Residual conv units: n_blocks residual stacks of n_stages (norm,) act, conv."""

    def __init__(self, features, n_blocks, n_stages, act, num_classes=None):
        super().__init__()
        self.n_blocks, self.n_stages, self.act, self.conditional = n_blocks, n_stages, act, num_classes is not None
        for i in range(1, n_blocks + 1):
            for j in range(1, n_stages + 1):
                if self.conditional:
                    setattr(self, f"{i}_{j}_norm", InstanceNormPlus(features, num_classes))
                setattr(self, f"{i}_{j}_conv", conv3x3(features, features, bias=False))

    def forward(self, x, y=None):
        for i in range(1, self.n_blocks + 1):
            residual = x
            for j in range(1, self.n_stages + 1):
                if self.conditional:
                    x = getattr(self, f"{i}_{j}_norm")(x, y)
                x = getattr(self, f"{i}_{j}_conv")(self.act(x))
            x = x + residual
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: (norm,) conv each input, resize bilinearly to one shape, sum."""

    def __init__(self, in_planes, features, num_classes=None):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(c, features) for c in in_planes)
        if num_classes is not None:
            self.norms = nn.ModuleList(InstanceNormPlus(c, num_classes) for c in in_planes)

    def forward(self, xs, shape, y=None):
        total = 0
        for i, x in enumerate(xs):
            h = self.norms[i](x, y) if hasattr(self, "norms") else x
            total = total + F.interpolate(self.convs[i](h), size=shape, mode="bilinear", align_corners=True)
        return total


class CRPBlock(nn.Module):
    """Chained residual pooling: act, then n_stages of (norm,) pool, conv, each added to the input.
    Max pooling unconditionally, average pooling in the conditional (NCSN) form, as upstream."""

    def __init__(self, features, n_stages, act, num_classes=None):
        super().__init__()
        self.act = act
        self.convs = nn.ModuleList(conv3x3(features, features, bias=False) for _ in range(n_stages))
        if num_classes is not None:
            self.norms = nn.ModuleList(InstanceNormPlus(features, num_classes) for _ in range(n_stages))
            self.pool = nn.AvgPool2d(5, stride=1, padding=2)
        else:
            self.pool = nn.MaxPool2d(5, stride=1, padding=2)

    def forward(self, x, y=None):
        x = self.act(x)
        path = x
        for i, conv in enumerate(self.convs):
            if hasattr(self, "norms"):
                path = self.norms[i](path, y)
            path = conv(self.pool(path))
            x = path + x
        return x


class RefineBlock(nn.Module):
    """RefineNet block: RCU on each input, fuse (MSF) unless it is the first, CRP, output RCU."""

    def __init__(self, in_planes, features, act, num_classes=None, start=False, end=False):
        super().__init__()
        self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2, act, num_classes) for c in in_planes)
        self.output_convs = RCUBlock(features, 3 if end else 1, 2, act, num_classes)
        if not start:
            self.msf = MSFBlock(in_planes, features, num_classes)
        self.crp = CRPBlock(features, 2, act, num_classes)

    def forward(self, xs, shape, y=None):
        hs = [adapt(x, y) for adapt, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, shape, y) if hasattr(self, "msf") else hs[0]
        return self.output_convs(self.crp(h, y), y)


# Per architecture: the encoder stages (name, in, out multiples of nf, resample, dilation) and the
# refine blocks (name, input multiples, output multiple), in upstream's registration order, plus
# the order the forward pass fuses them in.
_STAGES = {
    "ncsnv2_64": [
        ("res1", 1, 1, None, 1),
        ("res2", 1, 2, "down", 1),
        ("res3", 2, 2, "down", 2),
        ("res4", 2, 2, "down", 4),
    ],
    "ncsnv2_128": [
        ("res1", 1, 1, None, 1),
        ("res2", 1, 2, "down", 1),
        ("res3", 2, 2, "down", 1),
        ("res4", 2, 4, "down", 2),
        ("res5", 4, 4, "down", 4),
    ],
    "ncsnv2_256": [
        ("res1", 1, 1, None, 1),
        ("res2", 1, 2, "down", 1),
        ("res3", 2, 2, "down", 1),
        ("res31", 2, 2, "down", 1),
        ("res4", 2, 4, "down", 2),
        ("res5", 4, 4, "down", 4),
    ],
}
_REFINES = {
    "ncsnv2_64": [("refine1", 2, 2), ("refine2", 2, 2), ("refine3", 2, 1), ("refine4", 1, 1)],
    "ncsnv2_128": [("refine1", 4, 4), ("refine2", 4, 2), ("refine3", 2, 2), ("refine4", 2, 1), ("refine5", 1, 1)],
    "ncsnv2_256": [
        ("refine1", 4, 4),
        ("refine2", 4, 2),
        ("refine3", 2, 2),
        ("refine31", 2, 2),
        ("refine4", 2, 1),
        ("refine5", 1, 1),
    ],
}
# The refine block that consumes each encoder stage, deepest first.
_FUSE = {
    "ncsnv2_64": ["refine1", "refine2", "refine3", "refine4"],
    "ncsnv2_128": ["refine1", "refine2", "refine3", "refine4", "refine5"],
    "ncsnv2_256": ["refine1", "refine2", "refine31", "refine3", "refine4", "refine5"],
}


class RefineNet(nn.Module):
    """NCSNv2 (unconditional, output / sigma_y) or, with conditional=True, NCSN (CondInstanceNorm++).
    forward(x [B, C, H, W], y [B]): y integer noise-level indices into the descending sigmas (discrete
    labels, as upstream trains these networks), or for NCSNv2 also the noise levels sigma themselves
    (floating point: continuous VE labels, which upstream's port would use as indices)."""

    def __init__(self, config, arch, conditional):
        super().__init__()
        m = config.model
        if m.normalization != "InstanceNorm++":
            raise ValueError(f"model.normalization: only 'InstanceNorm++' is implemented, got {m.normalization!r}")
        self.centered, self.conditional, self.arch = config.data.centered, conditional, arch
        self.act = act = get_act(m.nonlinearity)
        nf, channels = m.nf, config.data.num_channels
        num_classes = m.num_scales if conditional else None
        if not conditional:
            self.register_buffer("sigmas", torch.tensor(get_sigmas(config)))
        self.begin_conv = nn.Conv2d(channels, nf, 3, padding=1)
        self.normalizer = InstanceNormPlus(nf, num_classes)
        self.end_conv = nn.Conv2d(nf, channels, 3, padding=1)
        adjust = config.data.image_size == 28
        for i, (name, cin, cout, resample, dil) in enumerate(_STAGES[arch]):
            first = ResidualBlock(
                cin * nf, cout * nf, act, num_classes, resample, dil, adjust_padding=adjust and name == "res4"
            )
            setattr(
                self, name, nn.ModuleList([first, ResidualBlock(cout * nf, cout * nf, act, num_classes, None, dil)])
            )
        refines = _REFINES[arch]
        for i, (name, cin, cout) in enumerate(refines):
            in_planes = [cin * nf] if i == 0 else [cin * nf, cin * nf]
            setattr(
                self, name, RefineBlock(in_planes, cout * nf, act, num_classes, start=i == 0, end=i == len(refines) - 1)
            )

    def forward(self, x, y):
        if self.conditional and y.is_floating_point():
            raise ValueError(
                f"ncsn: y must be integer noise-level indices (a discrete VE network: "
                f"continuous=False), got {y.dtype} labels"
            )
        h = x if self.centered else 2 * x - 1.0
        h = self.begin_conv(h)
        layers = []
        for name, *_ in _STAGES[self.arch]:
            for block in getattr(self, name):
                h = block(h, y)
            layers.append(h)
        ref = None
        for refine_name, layer in zip(_FUSE[self.arch], reversed(layers)):
            inputs = [layer] if ref is None else [layer, ref]
            ref = getattr(self, refine_name)(inputs, layer.shape[2:], y)
        h = self.end_conv(self.act(self.normalizer(ref, y)))
        if not self.conditional:
            sigma_y = y if y.is_floating_point() else self.sigmas[y]
            h = h / sigma_y.to(h.dtype).reshape((-1,) + (1,) * (h.dim() - 1))
        return h


def ncsn(config):
    return RefineNet(config, "ncsnv2_64", conditional=True)


def ncsnv2_64(config):
    return RefineNet(config, "ncsnv2_64", conditional=False)


def ncsnv2_128(config):
    return RefineNet(config, "ncsnv2_128", conditional=False)


def ncsnv2_256(config):
    return RefineNet(config, "ncsnv2_256", conditional=False)
