"""VGG frame encoder / decoder with skip connections for 64 and 128 px.

Stage ``i`` is a stack of 3x3 conv+BN+LeakyReLU(0.2) at resolution ``W / 2**i``
(``min(nf * 2**i, 8 * nf)`` channels, nf = 64 in the original; 2, 2, 3, 3, 3 convs), max-pooling between stages; after
the last stage a max-pool to 4x4 and conv(4) -> g, BN, tanh. The decoder mirrors it with
nearest up-sampling and the skips concatenated in; its last layer is a 3x3 convT to the
image channels with a sigmoid.
"""
from __future__ import annotations


import torch
from torch import nn

from .layers import MatmulConv2d, MatmulConvTranspose2d, SkipAdd, conv_channels

VGG_STAGES: dict[int, int] = {64: 4, 128: 5}
_CONVS_PER_STAGE = [2, 2, 3, 3, 3]


def _widths(image_width: int, nf: int = 64) -> list[int]:
    if image_width not in VGG_STAGES:
        raise ValueError(f"vgg supports image_width {sorted(VGG_STAGES)}, not {image_width}")
    return [min(nf * 2 ** i, 8 * nf) for i in range(VGG_STAGES[image_width])]


def vgg_layer(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv + BN + LeakyReLU(0.2), resolution kept."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True))


class VGGEncoder(nn.Module):
    """``x [N, C, W, W] -> (h [N, g], skips)``; skips are the stage outputs, highest resolution first."""

    def __init__(self, g_dim: int, channels: int = 3, image_width: int = 64, nf: int = 64):
        super().__init__()
        widths = _widths(image_width, nf)
        self.g_dim = g_dim
        stages, c_in = [], channels
        for i, w in enumerate(widths):
            n = _CONVS_PER_STAGE[i]
            stages.append(nn.Sequential(*[vgg_layer(c_in if k == 0 else w, w) for k in range(n)]))
            c_in = w
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(2, 2)
        self.final = nn.Sequential(MatmulConv2d(widths[-1], g_dim, 4, 1, 0), nn.BatchNorm2d(g_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.pool(x))
            skips.append(x)
        return self.final(self.pool(x)).reshape(x.shape[0], self.g_dim), skips


class VGGDecoder(nn.Module):
    """``(h [N, g], skips) -> x [N, C, W, W]`` in [0, 1]."""

    def __init__(self, g_dim: int, channels: int = 3, image_width: int = 64, nf: int = 64):
        super().__init__()
        widths = _widths(image_width, nf)
        self.g_dim = g_dim
        self.first = nn.Sequential(MatmulConvTranspose2d(g_dim, widths[-1], 4, 1, 0),
                                   nn.BatchNorm2d(widths[-1]), nn.LeakyReLU(0.2, inplace=True))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        stages = []
        for i in range(len(widths) - 1, 0, -1):  # deepest first: [state, skip i] -> widths[i-1]
            n = _CONVS_PER_STAGE[i]
            layers = [vgg_layer(2 * widths[i], widths[i])] + [vgg_layer(widths[i], widths[i]) for _ in range(n - 2)]
            layers.append(vgg_layer(widths[i], widths[i - 1]))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.last = nn.Sequential(vgg_layer(2 * widths[0], widths[0]),
                                  nn.ConvTranspose2d(widths[0], channels, 3, 1, 1), nn.Sigmoid())

    @property
    def output_conv(self) -> nn.ConvTranspose2d:
        """The convolution before the output sigmoid (``--output_bias`` initialises its bias)."""
        return self.last[-2]

    def forward(self, inputs: tuple[torch.Tensor, list[torch.Tensor]]) -> torch.Tensor:
        h, skips = inputs
        d = self.first(h.reshape(h.shape[0], self.g_dim, 1, 1))
        for stage, skip in zip(self.stages, reversed(skips[1:])):
            d = stage(torch.cat([self.up(d), skip], 1))
        return self.last(torch.cat([self.up(d), skips[0]], 1))

    def skip_terms(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """The skip half of each stage's first convolution (no bias), deepest first
        (see ``DCGANDecoder.skip_terms``)."""
        convs = [stage[0][0] for stage in self.stages] + [self.last[0][0]]
        maps = list(reversed(skips[1:])) + [skips[0]]
        return [conv_channels(conv, s, conv.in_channels // 2, bias=False) for conv, s in zip(convs, maps)]

    def forward_terms(self, h: torch.Tensor, terms: list[torch.Tensor], add: SkipAdd) -> torch.Tensor:
        """Decode with precomputed :meth:`skip_terms` (see ``DCGANDecoder.forward_terms``)."""
        d = self.first(h.reshape(h.shape[0], self.g_dim, 1, 1))
        for stage, term in zip(self.stages, terms):
            first = stage[0]
            d = stage[1:](first[1:](add(conv_channels(first[0], self.up(d), 0, bias=True), term)))
        first = self.last[0]
        return self.last[1:](first[1:](add(conv_channels(first[0], self.up(d), 0, bias=True), terms[-1])))
