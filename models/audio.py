"""Per-frame audio encoder: one video frame's feature map ``[1, F, S]`` -> ``[g]``.

The release's M3SO STFT stack (23x21): conv(4, stride 1, pad 0) 1 -> 64 (20x18), then
three conv(4, 2, 1) stages 64 -> 128 -> 256 -> 512 (10x9, 5x4, 2x2), conv(2) -> g, BN,
tanh. The other feature shapes keep that design and change only the first conv (so the
map stays comparable) and the final kernel (= whatever map is left):

=========  ===========================  =====================  ===========
shape      source                       first conv (k, s, p)   final map
=========  ===========================  =====================  ===========
(23, 21)   M3SO STFT                    4, (1, 1), (0, 0)      2x2
(32, 21)   M3SO MFCC                    4, (2, 1), (1, 0)      2x2
(45, 17)   AudioSet Drums / Painting    4, (2, 1), (1, 0)      2x1
(48, 17)   same, MFCC-like              4, (2, 1), (1, 0)      3x1
=========  ===========================  =====================  ===========
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import conv_block

# feature shape (F, S) -> first conv's (stride, padding); the kernel is always 4
AUDIO_FIRST_CONV: dict[tuple[int, int], tuple[tuple[int, int], tuple[int, int]]] = {
    (23, 21): ((1, 1), (0, 0)),
    (32, 21): ((2, 1), (1, 0)),
    (45, 17): ((2, 1), (1, 0)),
    (48, 17): ((2, 1), (1, 0)),
}
SUPPORTED_AUDIO_SHAPES = tuple(AUDIO_FIRST_CONV)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def check_audio_shape(shape) -> tuple[int, int]:
    """Return ``shape`` as a tuple or raise ValueError listing the supported shapes."""
    shape = tuple(int(s) for s in shape)
    if shape not in AUDIO_FIRST_CONV:
        raise ValueError(f"audio_shape {list(shape)} is not supported; choose one of "
                         f"{[list(s) for s in SUPPORTED_AUDIO_SHAPES]}")
    return shape


class AudioEncoder(nn.Module):
    """``a [N, 1, F, S] -> [N, g]`` (tanh-bounded)."""

    def __init__(self, g_dim: int, audio_shape: tuple[int, int] = (23, 21), nf: int = 64):
        super().__init__()
        shape = check_audio_shape(audio_shape)
        stride, padding = AUDIO_FIRST_CONV[shape]
        self.g_dim = g_dim
        self.audio_shape = shape
        size = [_conv_out(s, 4, st, p) for s, st, p in zip(shape, stride, padding)]
        layers = [conv_block(1, nf, 4, stride, padding)]  # widths nf .. 8 nf (64 .. 512 in the original)
        for c_in in (nf, 2 * nf, 4 * nf):
            layers.append(conv_block(c_in, 2 * c_in))
            size = [_conv_out(s, 4, 2, 1) for s in size]
        self.stack = nn.Sequential(*layers)
        self.final = nn.Sequential(nn.Conv2d(8 * nf, g_dim, tuple(size), 1, 0), nn.BatchNorm2d(g_dim), nn.Tanh())

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if tuple(a.shape[-2:]) != self.audio_shape:
            raise ValueError(f"audio encoder built for {list(self.audio_shape)} features, got {list(a.shape[-2:])}")
        return self.final(self.stack(a)).reshape(a.shape[0], self.g_dim)
