"""The noise-conditional Wide-ResNet classifier of class-conditional sampling (the official JAX
code's models/wideresnet_noise_conditional.py): p(y | x_t) for images perturbed to noise level
std(t), conditioned through Gaussian Fourier features of log std.

Differences from the JAX model, on purpose: GroupNorm (fastsde's fused op) instead of BatchNorm, so
that a prediction never depends on the rest of the batch, and sizes are arguments (the JAX
CIFAR-10 classifier is blocks_per_group=4, channel_multiplier=10).
"""

import torch
from torch import nn

from .layers import GaussianFourierProjection, conv, dense, group_norm

_SILU = nn.SiLU()  # passed to the GroupNorms, which fuse it


class _Block(nn.Module):
    def __init__(self, in_ch, out_ch, stride, emb_dim):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), conv(in_ch, out_ch, stride=stride)
        self.emb = dense(emb_dim, out_ch)
        self.norm2, self.conv2 = group_norm(out_ch), conv(out_ch, out_ch)
        self.skip = conv(in_ch, out_ch, kernel=1, stride=stride) if (in_ch != out_ch or stride != 1) else None

    def forward(self, x, emb):
        h = self.conv1(self.norm1(x, _SILU))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.norm2(h, _SILU))
        return h + (x if self.skip is None else self.skip(x))


class WideResNet(nn.Module):
    """logits [B, num_classes] = net(x [B, in_ch, H, W], std [B]); three groups of blocks of width
    16k, 32k, 64k (k = channel_multiplier), the last two at stride 2."""

    def __init__(
        self, num_classes=10, in_ch=3, blocks_per_group=4, channel_multiplier=10, embedding_size=64, fourier_scale=16.0
    ):
        super().__init__()
        self.args = dict(
            num_classes=num_classes,
            in_ch=in_ch,
            blocks_per_group=blocks_per_group,
            channel_multiplier=channel_multiplier,
            embedding_size=embedding_size,
            fourier_scale=fourier_scale,
        )
        emb_dim = 2 * embedding_size
        self.fourier = GaussianFourierProjection(embedding_size, fourier_scale)
        self.emb = nn.Sequential(dense(emb_dim, emb_dim), nn.SiLU(), dense(emb_dim, emb_dim))
        self.conv_in = conv(in_ch, 16)
        blocks, ch = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks_per_group):
                blocks.append(_Block(ch, width * channel_multiplier, stride if i == 0 else 1, emb_dim))
                ch = width * channel_multiplier
        self.blocks = nn.ModuleList(blocks)
        self.norm_out, self.head = group_norm(ch), nn.Linear(ch, num_classes)

    def forward(self, x, std):
        if x.shape[1] != self.args["in_ch"]:
            raise ValueError(f"classifier input has {x.shape[1]} channels; it was built for {self.args['in_ch']}")
        emb = self.emb(self.fourier(torch.log(std)))
        # per-image standardisation, as the JAX classifier (tf.image.per_image_standardization)
        flat = x.flatten(1)
        x = (x - flat.mean(1)[:, None, None, None]) / torch.clamp(flat.std(1), min=flat.shape[1] ** -0.5)[
            :, None, None, None
        ]
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(self.norm_out(h, _SILU).mean((2, 3)))
