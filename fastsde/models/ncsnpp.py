"""NCSN++ and DDPM++ (Song et al. 2021, App. H), state-dict compatible with the official `ncsnpp`.

Every submodule sits in one flat nn.ModuleList `all_modules`, in the order the forward pass uses
them, because that order is what names the official parameters (all_modules.<i>.<name>).
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import (
    FIR,
    NIN,
    FIRConv2d,
    GaussianFourierProjection,
    Pick,
    StackedLinear,
    conv,
    dense,
    get_act,
    group_norm,
    naive_downsample,
    naive_upsample,
    timestep_embedding,
)

SQRT2 = math.sqrt(2.0)


def _combine_skip(h, x, skip_rescale, folded=False):
    """The residual sum h + x, or (h + x) / sqrt(2) with skip_rescale; once fold_constants has put
    that 1 / sqrt(2) into the layer that made h, h + x / sqrt(2), one kernel instead of two."""
    if folded and skip_rescale:
        return torch.add(h, x, alpha=1 / SQRT2)
    return (h + x) / SQRT2 if skip_rescale else h + x


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block, optionally resampling both paths (FIR or naive)."""

    def __init__(
        self,
        act,
        in_ch,
        out_ch=None,
        temb_dim=None,
        up=False,
        down=False,
        dropout=0.1,
        fir=False,
        fir_kernel=(1, 3, 3, 1),
        skip_rescale=True,
        init_scale=0.0,
    ):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv(in_ch, out_ch, kernel=1)
        self.act, self.skip_rescale, self.folded = act, skip_rescale, False
        self.resample = None
        if up or down:
            self.resample = FIR(fir_kernel, up=up) if fir else (naive_upsample if up else naive_downsample)

    def forward(self, x, temb=None):
        """x: [B, in_ch, H, W]; temb: the activated time embedding act(temb) [B, temb_dim], or None
        (in a network folded by fold_constants: the blocks' projections of it, a tuple)."""
        h = self.GroupNorm_0(x, self.act)
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.Conv_0(h)
        temb = None if temb is None else self.Dense_0(temb)  # added to h in GroupNorm_1
        h = self.Conv_1(self.Dropout_0(self.GroupNorm_1(h, self.act, offset=temb)))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return _combine_skip(h, x, self.skip_rescale, self.folded)


class ResnetBlockDDPM(nn.Module):
    """DDPM's residual block (NCSN++'s resblock_type 'ddpm'; the DDPM model with groups=32):
    NIN or 3x3 conv shortcut."""

    def __init__(
        self,
        act,
        in_ch,
        out_ch=None,
        temb_dim=None,
        conv_shortcut=False,
        dropout=0.1,
        skip_rescale=False,
        init_scale=0.0,
        groups=None,
    ):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch, groups)
        self.Conv_0 = conv(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch, groups)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.skip_rescale, self.folded = act, skip_rescale, False

    def forward(self, x, temb=None):
        """x: [B, in_ch, H, W]; temb: the activated time embedding act(temb) [B, temb_dim], or None
        (in a network folded by fold_constants: the blocks' projections of it, a tuple)."""
        h = self.Conv_0(self.GroupNorm_0(x, self.act))
        temb = None if temb is None else self.Dense_0(temb)  # added to h in GroupNorm_1
        h = self.Conv_1(self.Dropout_0(self.GroupNorm_1(h, self.act, offset=temb)))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        elif hasattr(self, "NIN_0"):
            x = self.NIN_0(x)
        return _combine_skip(h, x, self.skip_rescale, self.folded)


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all positions, head dimension C (DDPM's AttnBlock with
    groups=32)."""

    def __init__(self, channels, skip_rescale=False, init_scale=0.0, groups=None):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels, groups)
        self.NIN_0, self.NIN_1, self.NIN_2 = (NIN(channels, channels) for _ in range(3))
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale, self.folded = skip_rescale, False
        self.qkv = None  # fold_constants: NIN_0, NIN_1 and NIN_2 as one StackedLinear

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.GroupNorm_0(x)
        if self.qkv is None:
            q, k, v = (m(h).reshape(B, 1, C, H * W).transpose(2, 3) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        else:  # views of one [B, H, W, 3C] product: a GEMM over the pixels, no copies in channels_last
            q, k, v = (a.reshape(B, 1, H * W, C) for a in self.qkv(h.permute(0, 2, 3, 1)))
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v
        h = self.NIN_3(h.transpose(2, 3).reshape(B, C, H, W))
        return _combine_skip(h, x, self.skip_rescale, self.folded)


def fold_constants(model):
    """Folds constants of a network's residual and attention blocks into its parameters, in place,
    for inference: the same function up to rounding, with fewer kernels a call. On GPUs cuDNN leaves
    a convolution's bias to a kernel of its own, and (h + x) / sqrt(2) is two. In each block:
    - Conv_0's bias joins Dense_0's (GroupNorm_1 adds both per channel; conditional networks only,
      where Dense_0 runs),
    - with skip_rescale, the 1 / sqrt(2) goes into the layer that makes h (Conv_1, NIN_3), so that
      the residual sum is h + x / sqrt(2),
    - Conv_1's bias joins the shortcut layer's (Conv_2 or NIN_0), where there is one,
    - an attention block's query, key and value layers (NIN_0, NIN_1, NIN_2) become one GEMM (qkv).
    And in a conditional NCSN++ / DDPM++ / DDPM, the blocks' Dense_0 become one GEMM before the
    blocks (model.temb_projections, a StackedLinear; each Dense_0 a Pick of its output).
    Train the unfolded network: its parameters are the official ones. Returns `model`."""
    conditional = getattr(model, "conditional", False)
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, (ResnetBlockBigGAN, ResnetBlockDDPM, AttnBlockpp)) or m.folded:
                continue
            m.folded = True
            attention = isinstance(m, AttnBlockpp)
            if attention:
                nins = (m.NIN_0, m.NIN_1, m.NIN_2)
                m.qkv = StackedLinear([n.W.t() for n in nins], [n.b for n in nins])
                m.NIN_0 = m.NIN_1 = m.NIN_2 = None
            if not attention and conditional and m.Conv_0.bias is not None:
                m.Dense_0.bias += m.Conv_0.bias
                m.Conv_0.bias = None
            shortcut = None if attention else getattr(m, "Conv_2", None) or getattr(m, "NIN_0", None)
            if shortcut is not None and m.Conv_1.bias is not None:
                (shortcut.b if isinstance(shortcut, NIN) else shortcut.bias).add_(m.Conv_1.bias)
                m.Conv_1.bias = None
            if m.skip_rescale:
                for p in (m.NIN_3 if attention else m.Conv_1).parameters():
                    p /= SQRT2
    # (Only networks whose forward hands the blocks temb_projections' outputs declare the attribute.)
    if conditional and hasattr(model, "temb_projections") and model.temb_projections is None:
        blocks = [m for m in model.modules() if isinstance(m, (ResnetBlockBigGAN, ResnetBlockDDPM))]
        model.temb_projections = StackedLinear([m.Dense_0.weight for m in blocks], [m.Dense_0.bias for m in blocks])
        for i, m in enumerate(blocks):
            m.Dense_0 = Pick(i)
    return model


class Upsample(nn.Module):
    """Upsampling by 2: nearest (+3x3 conv), FIR, or FIR fused with a 3x3 conv."""

    def __init__(self, in_ch=None, out_ch=None, with_conv=False, fir=False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, up=True, fir_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv(in_ch, out_ch)
        self.fir = FIR(fir_kernel, up=True) if fir and not with_conv else None

    def forward(self, x):
        if hasattr(self, "Conv2d_0"):
            return self.Conv2d_0(x)
        if self.fir is not None:
            return self.fir(x)
        h = naive_upsample(x)
        return self.Conv_0(h) if hasattr(self, "Conv_0") else h


class Downsample(nn.Module):
    """Downsampling by 2: 2x2 mean or a stride-2 3x3 conv (TF 'SAME' padding), FIR, or FIR fused
    with a stride-2 3x3 conv."""

    def __init__(self, in_ch=None, out_ch=None, with_conv=False, fir=False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, down=True, fir_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv(in_ch, out_ch, stride=2, padding=0)
        self.fir = FIR(fir_kernel) if fir and not with_conv else None

    def forward(self, x):
        if hasattr(self, "Conv2d_0"):
            return self.Conv2d_0(x)
        if self.fir is not None:
            return self.fir(x)
        if hasattr(self, "Conv_0"):
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return naive_downsample(x)


class Combine(nn.Module):
    """Merges the input pyramid into the features: 1x1 conv, then concatenation or sum."""

    def __init__(self, dim1, dim2, method="cat"):
        super().__init__()
        self.Conv_0 = conv(dim1, dim2, kernel=1)
        self.method = method

    def forward(self, x, y):
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


def get_sigmas(config):
    """The descending noise levels of the config, float64 numpy: exp(linspace(log max, log min, N))."""
    m = config.model
    return np.exp(np.linspace(np.log(m.sigma_max), np.log(m.sigma_min), m.num_scales))


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++: a U-Net of residual blocks with attention at chosen resolutions, noise-level
    conditioning, and optional progressive input/output pyramids. forward(x [B, C, H, W], labels [B])."""

    def __init__(self, config):
        super().__init__()
        m = config.model
        self.centered = config.data.centered
        self.scale_by_sigma, self.skip_rescale = m.scale_by_sigma, m.skip_rescale
        self.act = act = get_act(m.nonlinearity)
        self.register_buffer("sigmas", torch.tensor(get_sigmas(config)))
        self.nf = nf = m.nf
        ch_mult, self.num_res_blocks = m.ch_mult, m.num_res_blocks
        self.attn_resolutions = m.attn_resolutions
        self.num_resolutions = len(ch_mult)
        resolutions = [config.data.image_size // 2**i for i in range(self.num_resolutions)]
        self.conditional = m.conditional
        self.temb_projections = None  # set by fold_constants
        fir, fir_kernel, skip_rescale, init_scale = m.fir, m.fir_kernel, m.skip_rescale, m.init_scale
        self.resblock_type = m.resblock_type.lower()
        self.progressive, self.progressive_input = m.progressive.lower(), m.progressive_input.lower()
        self.embedding_type = m.embedding_type.lower()
        combine = m.progressive_combine.lower()
        for name, value, allowed in [
            ("progressive", self.progressive, ("none", "output_skip", "residual")),
            ("progressive_input", self.progressive_input, ("none", "input_skip", "residual")),
            ("embedding_type", self.embedding_type, ("fourier", "positional")),
            ("resblock_type", self.resblock_type, ("ddpm", "biggan")),
            ("progressive_combine", combine, ("cat", "sum")),
        ]:
            if value not in allowed:
                raise ValueError(f"model.{name} must be one of {', '.join(allowed)}, got {value!r}")
        channels = config.data.num_channels

        def attn(ch):
            return AttnBlockpp(ch, skip_rescale=skip_rescale, init_scale=init_scale)

        def resblock(in_ch, out_ch=None, up=False, down=False):
            if self.resblock_type == "ddpm":
                return ResnetBlockDDPM(
                    act,
                    in_ch,
                    out_ch,
                    temb_dim=4 * nf,
                    dropout=m.dropout,
                    skip_rescale=skip_rescale,
                    init_scale=init_scale,
                )
            return ResnetBlockBigGAN(
                act,
                in_ch,
                out_ch,
                temb_dim=4 * nf,
                up=up,
                down=down,
                dropout=m.dropout,
                fir=fir,
                fir_kernel=fir_kernel,
                skip_rescale=skip_rescale,
                init_scale=init_scale,
            )

        modules = []
        if self.embedding_type == "fourier":
            modules.append(GaussianFourierProjection(embedding_size=nf, scale=m.fourier_scale))
            embed_dim = 2 * nf
        else:
            embed_dim = nf
        if self.conditional:
            modules += [dense(embed_dim, 4 * nf), dense(4 * nf, 4 * nf)]
        if self.progressive == "output_skip":
            self.pyramid_upsample = FIR(fir_kernel, up=True) if fir else naive_upsample
        if self.progressive_input == "input_skip":
            self.pyramid_downsample = FIR(fir_kernel) if fir else naive_downsample

        modules.append(conv(channels, nf))
        hs_c, in_ch, pyramid_in_ch = [nf], nf, channels
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                out_ch = nf * ch_mult[level]
                modules.append(resblock(in_ch, out_ch))
                in_ch = out_ch
                if resolutions[level] in self.attn_resolutions:
                    modules.append(attn(in_ch))
                hs_c.append(in_ch)
            if level != self.num_resolutions - 1:
                if self.resblock_type == "ddpm":
                    modules.append(Downsample(in_ch, with_conv=m.resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    modules.append(resblock(in_ch, down=True))
                if self.progressive_input == "input_skip":
                    modules.append(Combine(pyramid_in_ch, in_ch, method=combine))
                    in_ch = 2 * in_ch if combine == "cat" else in_ch
                elif self.progressive_input == "residual":
                    modules.append(Downsample(pyramid_in_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    pyramid_in_ch = in_ch
                hs_c.append(in_ch)

        in_ch = hs_c[-1]
        modules += [resblock(in_ch), attn(in_ch), resblock(in_ch)]

        pyramid_ch = 0
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                out_ch = nf * ch_mult[level]
                modules.append(resblock(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if resolutions[level] in self.attn_resolutions:
                modules.append(attn(in_ch))
            if self.progressive != "none":
                if level == self.num_resolutions - 1 or self.progressive == "output_skip":
                    # output_skip: a GroupNorm + conv head per level; residual: one at the lowest level.
                    head_ch = channels if self.progressive == "output_skip" else in_ch
                    modules += [
                        group_norm(in_ch),
                        conv(in_ch, head_ch, init_scale=init_scale if self.progressive == "output_skip" else 1.0),
                    ]
                    pyramid_ch = head_ch
                else:
                    modules.append(Upsample(pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    pyramid_ch = in_ch
            if level != 0:
                if self.resblock_type == "ddpm":
                    modules.append(Upsample(in_ch, with_conv=m.resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    modules.append(resblock(in_ch, up=True))
        assert not hs_c
        if self.progressive != "output_skip":
            modules += [group_norm(in_ch), conv(in_ch, channels, init_scale=init_scale)]
        self.all_modules = nn.ModuleList(modules)

    def forward(self, x, time_cond):
        mods = iter(self.all_modules)

        def norm_act_conv(h):  # the next GroupNorm, the activation (fused), the next conv
            gn, cv = next(mods), next(mods)
            return cv(gn(h, self.act))

        if self.embedding_type == "fourier":
            used_sigmas = time_cond
            temb = next(mods)(torch.log(used_sigmas))
        else:
            # Only scale_by_sigma reads used_sigmas; upstream indexed sigmas regardless, which fails
            # for a continuous VP model (labels up to 999) with num_scales < 1000. It leaked float64 too.
            used_sigmas = self.sigmas[time_cond.long()].to(x.dtype) if self.scale_by_sigma else None
            temb = timestep_embedding(time_cond, self.nf)
        if self.conditional:
            temb = next(mods)(temb)
            # Every residual block adds Dense_0(act(temb)): the activation once here, not in each.
            temb = self.act(next(mods)(self.act(temb)))
            if self.temb_projections is not None:  # (fold_constants: all blocks' Dense_0 at once)
                temb = self.temb_projections(temb)
        else:
            temb = None
        if not self.centered:
            x = 2 * x - 1.0  # the network sees [-1, 1] data

        input_pyramid = x if self.progressive_input != "none" else None
        hs = [next(mods)(x)]
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if h.shape[-1] in self.attn_resolutions:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                h = next(mods)(hs[-1]) if self.resblock_type == "ddpm" else next(mods)(hs[-1], temb)
                if self.progressive_input == "input_skip":
                    input_pyramid = self.pyramid_downsample(input_pyramid)
                    h = next(mods)(input_pyramid, h)
                elif self.progressive_input == "residual":
                    input_pyramid = _combine_skip(next(mods)(input_pyramid), h, self.skip_rescale)
                    h = input_pyramid
                hs.append(h)

        h = hs[-1]
        h = next(mods)(h, temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)

        pyramid = None
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if h.shape[-1] in self.attn_resolutions:
                h = next(mods)(h)
            if self.progressive != "none":
                if level == self.num_resolutions - 1:
                    pyramid = norm_act_conv(h)
                elif self.progressive == "output_skip":
                    pyramid = self.pyramid_upsample(pyramid) + norm_act_conv(h)
                else:
                    pyramid = _combine_skip(next(mods)(pyramid), h, self.skip_rescale)
                    h = pyramid
            if level != 0:
                h = next(mods)(h) if self.resblock_type == "ddpm" else next(mods)(h, temb)
        assert not hs

        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = norm_act_conv(h)
        assert next(mods, None) is None
        if self.scale_by_sigma:
            h = h / used_sigmas.reshape((-1,) + (1,) * (x.dim() - 1))
        return h
