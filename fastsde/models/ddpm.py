"""The DDPM network (Ho et al. 2020) in the official layout (`ddpm`): a U-Net with 32-group
GroupNorm, DDPM residual blocks, attention at chosen resolutions, and sinusoidal embeddings of the
integer or continuous labels."""

import torch
import torch.nn as nn

from .layers import conv, dense, get_act, group_norm, timestep_embedding
from .ncsnpp import AttnBlockpp, Downsample, ResnetBlockDDPM, Upsample, get_sigmas


class DDPM(nn.Module):
    """forward(x [B, C, H, W], labels [B]) -> [B, C, H, W] (the noise, or the score with scale_by_sigma)."""

    def __init__(self, config):
        super().__init__()
        m = config.model
        self.act = act = get_act(m.nonlinearity)
        self.register_buffer("sigmas", torch.tensor(get_sigmas(config)))
        self.nf = nf = m.nf
        self.num_res_blocks, self.attn_resolutions = m.num_res_blocks, m.attn_resolutions
        self.num_resolutions = len(m.ch_mult)
        resolutions = [config.data.image_size // 2**i for i in range(self.num_resolutions)]
        self.conditional, self.centered, self.scale_by_sigma = m.conditional, config.data.centered, m.scale_by_sigma
        self.temb_projections = None  # set by fold_constants
        channels = config.data.num_channels

        def resblock(in_ch, out_ch=None):
            return ResnetBlockDDPM(act, in_ch, out_ch, temb_dim=4 * nf, dropout=m.dropout, groups=32)

        def attn(ch):
            return AttnBlockpp(ch, groups=32)

        # Upstream builds `modules` only when conditional (unconditional models fail there).
        modules = [dense(nf, 4 * nf), dense(4 * nf, 4 * nf)] if self.conditional else []
        modules.append(conv(channels, nf))
        hs_c, in_ch = [nf], nf
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                out_ch = nf * m.ch_mult[level]
                modules.append(resblock(in_ch, out_ch))
                in_ch = out_ch
                if resolutions[level] in self.attn_resolutions:
                    modules.append(attn(in_ch))
                hs_c.append(in_ch)
            if level != self.num_resolutions - 1:
                modules.append(Downsample(in_ch, with_conv=m.resamp_with_conv))
                hs_c.append(in_ch)
        in_ch = hs_c[-1]
        modules += [resblock(in_ch), attn(in_ch), resblock(in_ch)]
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                out_ch = nf * m.ch_mult[level]
                modules.append(resblock(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if resolutions[level] in self.attn_resolutions:
                modules.append(attn(in_ch))
            if level != 0:
                modules.append(Upsample(in_ch, with_conv=m.resamp_with_conv))
        assert not hs_c
        modules += [group_norm(in_ch, 32), conv(in_ch, channels, init_scale=0.0)]
        self.all_modules = nn.ModuleList(modules)

    def forward(self, x, labels):
        mods = iter(self.all_modules)
        temb = None
        if self.conditional:
            temb = next(mods)(timestep_embedding(labels, self.nf))
            temb = self.act(next(mods)(self.act(temb)))  # what each residual block adds a projection of
            if self.temb_projections is not None:  # (fold_constants: all blocks' Dense_0 at once)
                temb = self.temb_projections(temb)
        h = x if self.centered else 2 * x - 1.0
        hs = [next(mods)(h)]
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if h.shape[-1] in self.attn_resolutions:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                hs.append(next(mods)(hs[-1]))
        h = hs[-1]
        h = next(mods)(h, temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if h.shape[-1] in self.attn_resolutions:
                h = next(mods)(h)
            if level != 0:
                h = next(mods)(h)
        assert not hs
        norm, out = next(mods), next(mods)
        h = out(norm(h, self.act))
        assert next(mods, None) is None
        if self.scale_by_sigma:
            h = h / self.sigmas[labels.long()].to(h.dtype).reshape((-1,) + (1,) * (h.dim() - 1))
        return h
