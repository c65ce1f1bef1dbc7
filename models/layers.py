"""Small building blocks and the weight initialisation shared by the Sound2Sight modules."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def conv_block(c_in: int, c_out: int, kernel=4, stride=2, padding=1) -> nn.Sequential:
    """Conv + BatchNorm + LeakyReLU(0.2): the DCGAN down-sampling unit."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True))


def upconv_block(c_in: int, c_out: int, kernel=4, stride=2, padding=1) -> nn.Sequential:
    """ConvTranspose + BatchNorm + LeakyReLU(0.2): the DCGAN up-sampling unit."""
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True))


def init_weights(module: nn.Module) -> None:
    """The release's initialisation, for ``module.apply``: conv/linear weights N(0, 0.02) with zero
    bias, BatchNorm weight N(1, 0.02) with zero bias. LSTM cells and attention projections
    that are not ``nn.Linear`` keep PyTorch's defaults (as the original did)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def fold(x: torch.Tensor) -> torch.Tensor:
    """[T, B, ...] -> [T*B, ...] (time folded into the batch)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unfold(x: torch.Tensor, steps: int) -> torch.Tensor:
    """[T*B, ...] -> [T, B, ...]."""
    return x.reshape(steps, x.shape[0] // steps, *x.shape[1:])


def _slot_runs(slots: Sequence[int]) -> list[tuple[int, int, bool]]:
    """Split per-step slots into runs ``(length, first slot, repeated)``: a repeated run
    reuses one slot for every step, an aligned run takes consecutive slots."""
    runs, i, n = [], 0, len(slots)
    while i < n:
        j = i + 1
        if j < n and slots[j] == slots[i]:
            while j < n and slots[j] == slots[i]:
                j += 1
            runs.append((j - i, slots[i], True))
        else:
            while j < n and slots[j] == slots[j - 1] + 1 and not (j + 1 < n and slots[j + 1] == slots[j]):
                j += 1
            runs.append((j - i, slots[i], False))
        i = j
    return runs


def add_by_slot(out: torch.Tensor, src: torch.Tensor, slots: Sequence[int]) -> torch.Tensor:
    """``out + src`` gathered by step: ``out [S*B, ...]`` (step-major), ``src [M*B, ...]`` holds
    ``M`` distinct maps per clip, step ``s`` adds map ``slots[s]``.

    Equal to ``out + src.unflatten(0, (M, B))[slots].flatten(0, 1)``, but a run of steps that
    reuses one map adds it by broadcasting and a run of consecutive maps adds a slice, so
    nothing is gathered and the backward is a sum over each repeated run instead of a
    ``scatter_add`` (which cost ~5% of a training step)."""
    batch = out.shape[0] // len(slots)
    s = src.unflatten(0, (src.shape[0] // batch, batch))                   # [M, B, ...]
    runs = _slot_runs(slots)
    # Split and concatenate in 4D (one split: its backward is one concatenation): cat keeps
    # a channels-last layout for 4D tensors only, and a plain-layout result (or gradient)
    # would cost a layout copy in every convolution next to it.
    parts = out.split([n * batch for n, _, _ in runs])                     # [n*B, ...] each
    summed = [(p.unflatten(0, (n, batch)) + (s[first] if repeated else s[first:first + n])).flatten(0, 1)
              for p, (n, first, repeated) in zip(parts, runs)]
    return summed[0] if len(summed) == 1 else torch.cat(summed)


def conv_channels(conv: nn.Module, x: torch.Tensor, first: int, bias: bool) -> torch.Tensor:
    """``conv`` applied to ``x``, which holds its input channels ``first .. first + x.shape[1] - 1``.

    A convolution is linear in its input channels, so ``conv(cat([d, skip], 1))`` equals
    ``conv_channels(conv, d, 0, True) + conv_channels(conv, skip, d.shape[1], False)``: the
    skip half can then run once per DISTINCT skip map and be added to many rows.
    ``conv``: ``nn.Conv2d`` or ``nn.ConvTranspose2d``."""
    c = slice(first, first + x.shape[1])
    b = conv.bias if bias else None
    if isinstance(conv, nn.ConvTranspose2d):  # weight [in, out, k, k]
        return F.conv_transpose2d(x, conv.weight[c], b, conv.stride, conv.padding, conv.output_padding,
                                  conv.groups, conv.dilation)
    return F.conv2d(x, conv.weight[:, c], b, conv.stride, conv.padding, conv.dilation, conv.groups)


SkipAdd = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (conv output rows, skip term) -> sum


def skip_add(slots: Sequence[int]) -> SkipAdd:
    """Adder for decoding ``S`` steps (step-major rows ``[S*B, ...]``) whose skip terms are
    ``[M*B, ...]``, step ``s`` using map ``slots[s]`` (see :func:`add_by_slot`)."""
    return lambda out, term: add_by_slot(out, term, slots)


def sample_add(nsample: int) -> SkipAdd:
    """Adder for decoding ``B*nsample`` rows (index ``b * nsample + s``) whose skip terms are
    one per clip ``[B, ...]``: broadcast over the samples instead of repeating them."""
    return lambda out, term: (out.unflatten(0, (term.shape[0], nsample)) + term.unsqueeze(1)).flatten(0, 1)
