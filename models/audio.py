"""Per-frame audio encoder: one video frame's feature map ``[1, F, S]`` -> ``[g]``.

The release's M3SO STFT stack (23x21): conv(4, stride 1, pad 0) 1 -> 64 (20x18), then
three conv(4, 2, 1) stages 64 -> 128 -> 256 -> 512 (10x9, 5x4, 2x2), conv(2) -> g, BN,
tanh. Every feature shape keeps that design; only the first conv and the final kernel
follow the shape, by one rule applied to each axis separately (size ``n``):

* ``n < 24``: the first conv has kernel 4, stride 1 and padding ``max(0, ceil((11 - n) / 2))``
  (0 from ``n = 11`` on; smaller maps are padded so the three stages get at least 8);
* ``n >= 24``: stride ``s`` = the smallest power of two >= 2 that leaves a final map of at
  most 3 (``n // (8 s) <= 3``: 2 below 64, 4 below 128, 8 below 256, ...), with kernel
  ``2 s`` and padding ``s / 2``, so the map becomes ``n // s`` (for ``s = 2``: the
  release's conv(4, 2, 1));
* then the three conv(4, 2, 1) stages (each ``m -> m // 2``), and a final conv whose
  kernel is whatever map is left (1 to 3 per axis).

Each axis must be at least :data:`MIN_AUDIO_SIZE` (8). The rule reproduces the layers the
project used for its four named shapes (module names, parameter shapes, strides and
paddings), so checkpoints trained on them load unchanged:

=========  ===========================  =====================  ===========
shape      source                       first conv (k, s, p)   final map
=========  ===========================  =====================  ===========
(23, 21)   M3SO STFT                    4, (1, 1), (0, 0)      2x2
(32, 21)   M3SO MFCC                    4, (2, 1), (1, 0)      2x2
(45, 17)   AudioSet Drums / Painting    4, (2, 1), (1, 0)      2x1
(48, 17)   same, MFCC-like              4, (2, 1), (1, 0)      3x1
=========  ===========================  =====================  ===========

Other shapes, first conv as kernel, stride, padding per axis: (32, 17) (prepared-video
MFCC): (4, 4), (2, 1), (1, 0) -> 2x1; (64, 33): (8, 4), (4, 2), (2, 1) -> 2x2; (128, 44):
(16, 4), (8, 2), (4, 1) -> 2x2; (8, 8): (4, 4), (1, 1), (2, 2) -> 1x1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import MatmulConv2d, conv_block

MIN_AUDIO_SIZE = 8  # per axis: the three stride-2 stages need a map of 8, padding at most 2 gets there
_STRIDE_ONE_BELOW = 24  # axes shorter than this keep the release's stride-1 first conv
_MAX_FINAL = 3  # longer axes are strided until the final map is at most this
#: The four shapes the encoder was first built for (their layers are pinned by tests).
KNOWN_AUDIO_SHAPES = ((23, 21), (32, 21), (45, 17), (48, 17))


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class AudioLayout:
    """The first conv's ``kernel``, ``stride``, ``padding`` and the final conv's ``final_kernel``,
    each per axis ``(F, S)``."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    final_kernel: tuple[int, int]


def _first_conv(n: int) -> tuple[int, int, int]:
    """(kernel, stride, padding) of the first conv along an axis of ``n`` (>= MIN_AUDIO_SIZE)."""
    if n < _STRIDE_ONE_BELOW:
        return 4, 1, max(0, -(-(11 - n) // 2))
    stride = 2
    while n // (8 * stride) > _MAX_FINAL:
        stride *= 2
    return 2 * stride, stride, stride // 2


def check_audio_shape(shape) -> tuple[int, int]:
    """Return ``shape`` as an ``(F, S)`` tuple of ints, or raise ValueError naming the minimum."""
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"audio_shape {shape!r} must be two integers (F, S)") from None
    if len(shape) != 2 or min(shape) < MIN_AUDIO_SIZE:
        raise ValueError(f"audio_shape {list(shape)} is not supported: it must be two sizes (F, S), each at least "
                         f"{MIN_AUDIO_SIZE}, e.g. [23, 21] (M3SO STFT) or [45, 17] (AudioSet Drums)")
    return shape


def audio_layout(shape) -> AudioLayout:
    """The encoder's shape-dependent layers for features ``shape = (F, S)`` (the module docstring's rule)."""
    shape = check_audio_shape(shape)
    first = [_first_conv(n) for n in shape]
    final = []
    for n, (k, s, p) in zip(shape, first):
        m = _conv_out(n, k, s, p)
        for _ in range(3):
            m = _conv_out(m, 4, 2, 1)
        final.append(m)
    return AudioLayout(kernel=(first[0][0], first[1][0]), stride=(first[0][1], first[1][1]),
                       padding=(first[0][2], first[1][2]), final_kernel=(final[0], final[1]))


class AudioEncoder(nn.Module):
    """``a [N, 1, F, S] -> [N, g]`` (tanh-bounded)."""

    def __init__(self, g_dim: int, audio_shape: tuple[int, int] = (23, 21), nf: int = 64):
        super().__init__()
        shape = check_audio_shape(audio_shape)
        layout = audio_layout(shape)
        self.g_dim = g_dim
        self.audio_shape = shape
        # widths nf .. 8 nf (64 .. 512 in the original)
        layers = [conv_block(1, nf, layout.kernel, layout.stride, layout.padding)]
        for c_in in (nf, 2 * nf, 4 * nf):
            layers.append(conv_block(c_in, 2 * c_in))
        self.stack = nn.Sequential(*layers)
        self.final = nn.Sequential(MatmulConv2d(8 * nf, g_dim, layout.final_kernel, 1, 0), nn.BatchNorm2d(g_dim),
                                   nn.Tanh())

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if tuple(a.shape[-2:]) != self.audio_shape:
            raise ValueError(f"audio encoder built for {list(self.audio_shape)} features, got {list(a.shape[-2:])}")
        return self.final(self.stack(a)).reshape(a.shape[0], self.g_dim)
