"""DCGAN frame encoder / decoder with skip connections, one family for 48/64/96/128 px.

As released: 48 px has three stride-2 stages (48 -> 24 -> 12 -> 6) then conv(6) -> g; 64 and
96 px one more stage (final map 4 / 6, final kernel 4 / 6); 128 px two more stages than 48
(128 -> 4, final kernel 4). Stage ``i`` has ``min(nf * 2**i, 8 * nf)`` channels (the
original: nf = 64, so 64, 128, 256, 512). The decoder
mirrors it: convT(k) g -> last stage's channels, then per stage a convT(4, 2, 1) over the
concatenation with the matching skip, the last one to the image channels with a sigmoid.
"""
from __future__ import annotations


import torch
from torch import nn

from .layers import MatmulConv2d, PhasedConvTranspose2d, SkipAdd, conv_block, conv_channels, upconv_block

# image width -> (number of stride-2 stages, kernel of the final conv / first convT)
DCGAN_PLANS: dict[int, tuple[int, int]] = {48: (3, 6), 64: (4, 4), 96: (4, 6), 128: (5, 4)}


def _plan(image_width: int, nf: int = 64) -> tuple[list[int], int]:
    if image_width not in DCGAN_PLANS:
        raise ValueError(f"dcgan supports image_width {sorted(DCGAN_PLANS)}, not {image_width}")
    n_stages, kernel = DCGAN_PLANS[image_width]
    return [min(nf * 2 ** i, 8 * nf) for i in range(n_stages)], kernel


class DCGANEncoder(nn.Module):
    """``x [N, C, W, W] -> (h [N, g], skips)``; skips are the stage outputs, highest resolution first."""

    def __init__(self, g_dim: int, channels: int = 1, image_width: int = 48, nf: int = 64):
        super().__init__()
        widths, kernel = _plan(image_width, nf)
        self.g_dim = g_dim
        self.stages = nn.ModuleList(conv_block(c_in, c_out)
                                    for c_in, c_out in zip([channels] + widths[:-1], widths))
        self.final = nn.Sequential(MatmulConv2d(widths[-1], g_dim, kernel, 1, 0), nn.BatchNorm2d(g_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return self.final(x).reshape(x.shape[0], self.g_dim), skips


class DCGANDecoder(nn.Module):
    """``(h [N, g], skips) -> x [N, C, W, W]`` in [0, 1]; skips as the encoder returns them."""

    def __init__(self, g_dim: int, channels: int = 1, image_width: int = 48, nf: int = 64):
        super().__init__()
        widths, kernel = _plan(image_width, nf)
        self.g_dim = g_dim
        self.first = upconv_block(g_dim, widths[-1], kernel, 1, 0)
        # stage i (deepest first) takes [decoder state, skip i] = 2 * widths[i] channels
        self.ups = nn.ModuleList(upconv_block(2 * widths[i], widths[i - 1]) for i in range(len(widths) - 1, 0, -1))
        self.last = nn.Sequential(PhasedConvTranspose2d(2 * widths[0], channels, 4, 2, 1), nn.Sigmoid())

    @property
    def output_conv(self) -> nn.ConvTranspose2d:
        """The convolution before the output sigmoid (``--output_bias`` initialises its bias)."""
        return self.last[-2]

    def forward(self, inputs: tuple[torch.Tensor, list[torch.Tensor]]) -> torch.Tensor:
        h, skips = inputs
        d = self.first(h.reshape(h.shape[0], self.g_dim, 1, 1))
        for up, skip in zip(self.ups, reversed(skips[1:])):
            d = up(torch.cat([d, skip], 1))
        return self.last(torch.cat([d, skips[0]], 1))

    def _split_convs(self) -> list[nn.Module]:
        """The convolutions whose input is ``[decoder state, skip]``, deepest first."""
        return [up[0] for up in self.ups] + [self.last[0]]

    def skip_terms(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """The skip half of every concatenating convolution (no bias), deepest first, for
        skip maps as the encoder returns them (any number of rows)."""
        maps = list(reversed(skips[1:])) + [skips[0]]
        return [conv_channels(conv, s, conv.in_channels // 2, bias=False) for conv, s in zip(self._split_convs(), maps)]

    def forward_terms(self, h: torch.Tensor, terms: list[torch.Tensor], add: SkipAdd) -> torch.Tensor:
        """Decode ``h [N, g]`` with precomputed :meth:`skip_terms`; ``add(out [N, ...], term)``
        places each term on its rows (:func:`layers.skip_add`, :func:`layers.sample_add`).
        Equals ``forward`` with the skips gathered per row, at half the skip convolutions' cost."""
        d = self.first(h.reshape(h.shape[0], self.g_dim, 1, 1))
        for up, term in zip(self.ups, terms):
            d = up[1:](add(conv_channels(up[0], d, 0, bias=True), term))
        return self.last[1](add(conv_channels(self.last[0], d, 0, bias=True), terms[-1]))
