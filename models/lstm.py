"""LSTM modules of Sound2Sight (SVG-LP style), with the hidden state passed explicitly.

The original stored the hidden state on the module (``module.hidden``) between calls,
sized for one fixed batch: that is what made it hard to batch samples or to run two
sequences at once. Here every call takes a ``state`` (``None`` = zeros) and returns the
new one; a state is a list with one ``(h, c)`` pair ``[B, r]`` per layer.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

State = list[tuple[torch.Tensor, torch.Tensor]]


def zero_state(layers: int, batch: int, hidden: int, like: torch.Tensor) -> State:
    """All-zero state for ``layers`` LSTM cells, dtype/device of ``like``."""
    z = like.new_zeros(batch, hidden)
    return [(z, z) for _ in range(layers)]


def gaussian_kl(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mu1, exp(logvar1)) || N(mu2, exp(logvar2)))."""
    return 0.5 * (logvar2 - logvar1) + (logvar1.exp() + (mu1 - mu2) ** 2) / (2 * logvar2.exp()) - 0.5


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + eps * sigma, with the standard-normal ``eps`` supplied by the caller."""
    return mu + eps * torch.exp(0.5 * logvar)


class _CellStack(nn.Module):
    """Linear(in -> r) then ``layers`` stacked LSTMCells."""

    def __init__(self, input_size: int, hidden: int, layers: int):
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.embed = nn.Linear(input_size, hidden)
        self.cells = nn.ModuleList(nn.LSTMCell(hidden, hidden) for _ in range(layers))

    def _cells(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """One time step of the cells on an already embedded ``x [B, r]``."""
        if state is None:
            state = zero_state(self.layers, x.shape[0], self.hidden, x)
        new = []
        for cell, hc in zip(self.cells, state):
            h, c = cell(x, hc)
            new.append((h, c))
            x = h
        return x, new

    def _run(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """``x [T, B, in]`` -> top-layer outputs ``[T, B, r]`` and the final state.

        The same maths as calling :meth:`_cells` per step, but the embedding runs over all
        steps at once and the cells through ATen's fused multi-layer LSTM with the cells'
        own weights: one call instead of ~10 small ops per step and layer (on a busy CPU
        every small op can cost a scheduler tick)."""
        e = self.embed(x)
        cell0 = self.cells[0]
        e = e.to(cell0.weight_ih.dtype)
        if state is None:
            h0 = e.new_zeros(self.layers, x.shape[1], self.hidden)
            c0 = h0
        else:
            h0 = torch.stack([h for h, _ in state]).to(e.dtype)
            c0 = torch.stack([c for _, c in state]).to(e.dtype)
        params = [w for cell in self.cells for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
        # in the weights' dtype: under CPU bf16 autocast oneDNN may have no bf16 LSTM primitive.
        # On CUDA, cuDNN copies the cells' separate weights into one buffer per call and warns
        # (once per process) that this may cost memory; here that is well under a megabyte per
        # call, so the warning is silenced for this call only.
        quiet = warnings.catch_warnings() if e.is_cuda else contextlib.nullcontext()
        with torch.autocast(x.device.type, enabled=False), quiet:
            if e.is_cuda:
                warnings.filterwarnings("ignore", "RNN module weights are not part of single contiguous", UserWarning)
            out, hn, cn = torch.lstm(e, (h0, c0), params, True, self.layers, 0.0, self.training, False, False)
        return out, list(zip(hn.unbind(0), cn.unbind(0)))


class GaussianLSTM(_CellStack):
    """Prior / posterior: ``x -> (mu, logvar)`` of a diagonal Gaussian over z."""

    def __init__(self, input_size: int, z_dim: int, hidden: int, layers: int = 1):
        super().__init__(input_size, hidden, layers)
        self.mu = nn.Linear(hidden, z_dim)
        self.logvar = nn.Linear(hidden, z_dim)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One step: ``x [B, in] -> (mu [B, z], logvar [B, z], state)``."""
        h, state = self._cells(self.embed(x), state)
        return self.mu(h), self.logvar(h), state

    def forward_seq(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, torch.Tensor, State]:
        """All steps: ``x [T, B, in] -> (mu [T, B, z], logvar [T, B, z], state)``."""
        h, state = self._run(x, state)
        return self.mu(h), self.logvar(h), state


class LSTMPredictor(_CellStack):
    """Frame predictor (and the discriminator's LSTM): ``x -> tanh(Linear(top h))``."""

    def __init__(self, input_size: int, output_size: int, hidden: int, layers: int = 2):
        super().__init__(input_size, hidden, layers)
        self.out = nn.Linear(hidden, output_size)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """One step: ``x [B, in] -> (y [B, out], state)``."""
        h, state = self._cells(self.embed(x), state)
        return torch.tanh(self.out(h)), state

    def forward_seq(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """All steps: ``x [T, B, in] -> (y [T, B, out], state)``."""
        h, state = self._run(x, state)
        return torch.tanh(self.out(h)), state
