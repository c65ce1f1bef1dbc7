"""Small building blocks and the weight initialisation shared by the Sound2Sight modules."""
from __future__ import annotations

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
    """SPEC §5 initialisation, for ``module.apply``: conv/linear weights N(0, 0.02) with zero
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


def conv_on_cat(conv: nn.Module, d: torch.Tensor, skip: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``conv(cat([d, skip[index]], 1))`` without building the gathered, concatenated input.

    A convolution is linear in its input channels, so it splits into the part over ``d``'s
    channels and the part over the skip's; the skip part runs once per DISTINCT skip map
    (``skip [M, c, h, w]``, rows picked by ``index [N]``) and is gathered afterwards. The
    decoder of a sequence whose steps all reuse the last context frame's skips thus does
    that half of its convolution work once per clip instead of once per step.
    ``conv``: ``nn.Conv2d`` or ``nn.ConvTranspose2d`` whose input is ``[d, skip]``.
    """
    c = d.shape[1]
    if isinstance(conv, nn.ConvTranspose2d):  # weight [in, out, k, k]
        args = (conv.stride, conv.padding, conv.output_padding, conv.groups, conv.dilation)
        out_d = F.conv_transpose2d(d, conv.weight[:c], conv.bias, *args)
        out_s = F.conv_transpose2d(skip, conv.weight[c:], None, *args)
    else:  # nn.Conv2d, weight [out, in, k, k]
        args = (conv.stride, conv.padding, conv.dilation, conv.groups)
        out_d = F.conv2d(d, conv.weight[:, :c], conv.bias, *args)
        out_s = F.conv2d(skip, conv.weight[:, c:], None, *args)
    return out_d + out_s.index_select(0, index)
