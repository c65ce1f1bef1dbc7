"""Causal transformer encoder over per-frame vectors, as released.

Linear(g -> r), LeakyReLU(0.01), x sqrt(r), sinusoidal positions + dropout ``pos_dropout``
(0.2 in the release), ``nn.TransformerEncoder`` with a causal mask whose layer's attention
and feed-forward dropouts are ``layer_dropout`` (the release built the layer without a
dropout argument, so PyTorch's default 0.1), Linear(r -> g) + tanh. Output ``t`` depends
on inputs ``0..t`` only, so ONE pass over a sequence gives what the original computed by
re-running the transformer on every prefix and keeping its last output.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def sinusoidal_positions(steps: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[steps, 1, dim]`` sin on even features, cos on odd ones (Vaswani et al.)."""
    position = torch.arange(steps, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(steps, dim, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return pe.unsqueeze(1).to(dtype)


class CausalTransformer(nn.Module):
    """``x [T, B, g] -> [T, B, g]``; position ``t`` sees positions ``0..t`` only."""

    def __init__(self, g_dim: int, hidden: int, layers: int = 1, nhead: int = 4, dim_ff: int = 128,
                 pos_dropout: float = 0.2, layer_dropout: float = 0.1):
        super().__init__()
        if hidden % nhead:
            raise ValueError(f"rnn_size {hidden} must be divisible by nhead {nhead}")
        self.hidden = hidden
        self.embed = nn.Linear(g_dim, hidden)
        self.pos_dropout = nn.Dropout(pos_dropout)
        layer = nn.TransformerEncoderLayer(hidden, nhead, dim_feedforward=dim_ff, dropout=layer_dropout)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(hidden, g_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[0]
        src = F.leaky_relu(self.embed(x), 0.01) * math.sqrt(self.hidden)
        src = self.pos_dropout(src + sinusoidal_positions(steps, self.hidden, x.device, src.dtype))
        mask = nn.Transformer.generate_square_subsequent_mask(steps, device=x.device, dtype=src.dtype)
        return torch.tanh(self.out(self.encoder(src, mask=mask, is_causal=True)))
