"""The frame decoder's contract: what :class:`models.sound2sight.Sound2Sight` calls on its decoder.

Every frame decoder is a :class:`FrameDecoder`: ``decoder((h [N, g], skips)) -> frames
[N, C, H, W]`` in [0, 1], the skips as the family's encoder returns them (highest resolution
first; each concatenated to the decoder's state at the matching resolution), and
``output_conv``, the convolution before the output sigmoid (``--output_bias`` sets its bias).

A decoder may also be a :class:`SplitSkipDecoder`, the fast path: a convolution is linear over
its input channels, so a convolution over ``cat([state, skip], 1)`` equals one over ``state``
(with the bias) plus one over ``skip`` (without it; :func:`models.layers.conv_channels`).
When many rows share a skip map (every generated step decodes with the last context frame's
skips), the skip half then runs once per distinct map and is added to every row that reads
it. A decoder without it is decoded with the skips gathered per row and concatenated: the
same frames (to float rounding), at the price of the skip half on every row.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from .layers import SkipAdd


@runtime_checkable
class FrameDecoder(Protocol):
    """``(h [N, g], skips) -> frames [N, C, H, W]`` in [0, 1]."""

    def __call__(self, inputs: tuple[torch.Tensor, list[torch.Tensor]]) -> torch.Tensor: ...

    @property
    def output_conv(self) -> nn.Module:
        """The convolution before the output sigmoid (a bias to initialise)."""
        ...


@runtime_checkable
class SplitSkipDecoder(FrameDecoder, Protocol):
    """A :class:`FrameDecoder` that decodes with precomputed skip halves (the fast path).

    ``forward_terms(h, skip_terms(maps), add)`` must equal ``decoder((h, gathered))`` where
    ``gathered`` holds, for every row of ``h``, the skip maps ``add`` places on that row."""

    def skip_terms(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """The skip half (no bias) of every convolution that reads a concatenated skip, in the
        order :meth:`forward_terms` adds them; ``skips`` as the encoder returns them, any rows."""
        ...

    def forward_terms(self, h: torch.Tensor, terms: list[torch.Tensor], add: SkipAdd) -> torch.Tensor:
        """Decode ``h [N, g]`` with :meth:`skip_terms`' output; ``add(out [N, ...], term)`` places
        each term on its rows (:func:`models.layers.skip_add`, :func:`models.layers.sample_add`)."""
        ...
