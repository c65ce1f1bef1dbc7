"""The prior and the posterior: one module each, the same shape (as released).

A latent network reads per-frame encodings through a causal transformer, concatenates
the audio context of the same step (when the model has audio) and maps the result to a
diagonal Gaussian over ``z`` with a Gaussian LSTM:

    posterior q_t = N(mu, sigma) from [VT_post(h_1..h_t)[-1], c_t]
    prior     p_t = N(mu, sigma) from [VT_prior(h_0..h_{t-1})[-1], c_t]

Two ways to run it, the same maths:

* :meth:`LatentNetwork.forward_seq` for a whole teacher-forced sequence: the transformer
  runs ONCE over the sequence (its output ``t`` equals a re-run over the prefix ``0..t``,
  it is causal) and the LSTM through ATen's fused kernel;
* :meth:`LatentNetwork.step` for one step of a sequence that is being generated: the
  transformer over the prefix so far, its last output, one LSTM step.
"""
from __future__ import annotations

import torch
from torch import nn

from .lstm import GaussianLSTM, State
from .transformer import CausalTransformer


def condition(video: torch.Tensor, audio_ctx: torch.Tensor | None) -> torch.Tensor:
    """A latent network's LSTM input: ``[video transformer output, audio context]`` (video only without audio)."""
    return video if audio_ctx is None else torch.cat([video, audio_ctx], -1)


class LatentNetwork(nn.Module):
    """Causal transformer over frame encodings + audio context + Gaussian LSTM -> ``(mu, logvar)`` over z."""

    def __init__(self, g_dim: int, z_dim: int, hidden: int, transformer_layers: int, lstm_layers: int,
                 use_audio: bool, nhead: int = 4, dim_ff: int = 128, pos_dropout: float = 0.2,
                 layer_dropout: float = 0.1):
        super().__init__()
        self.transformer = CausalTransformer(g_dim, hidden, transformer_layers, nhead=nhead, dim_ff=dim_ff,
                                             pos_dropout=pos_dropout, layer_dropout=layer_dropout)
        self.lstm = GaussianLSTM(2 * g_dim if use_audio else g_dim, z_dim, hidden, lstm_layers)

    def forward_seq(self, h: torch.Tensor, audio_ctx: torch.Tensor | None,
                    state: State | None = None) -> tuple[torch.Tensor, torch.Tensor, State]:
        """A whole sequence: ``h [S, B, g]`` (step ``s`` reads ``h[0..s]``), ``audio_ctx [S, B, g]`` or None
        -> ``(mu [S, B, z], logvar [S, B, z], state)``."""
        return self.lstm.forward_seq(condition(self.transformer(h), audio_ctx), state)

    def step(self, h_prefix: torch.Tensor, audio_t: torch.Tensor | None,
             state: State | None) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One step: ``h_prefix [t, B, g]`` the encodings read so far, ``audio_t [B, g]`` or None
        -> ``(mu [B, z], logvar [B, z], state)``."""
        return self.lstm(condition(self.transformer(h_prefix)[-1], audio_t), state)


#: state-dict key prefixes of checkpoints written before the prior and posterior were one
#: module each: old prefix -> new prefix (longest first, so "prior_transformer." wins over "prior.").
LEGACY_PREFIXES = (("posterior_transformer.", "posterior.transformer."), ("prior_transformer.", "prior.transformer."),
                   ("posterior.", "posterior.lstm."), ("prior.", "prior.lstm."))


def migrate_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a state dict written before the latent networks existed (a no-op on
    today's keys): ``prior_transformer.*`` -> ``prior.transformer.*``, ``prior.*`` -> ``prior.lstm.*``,
    the same for the posterior."""
    if not any(k.startswith(("prior_transformer.", "posterior_transformer.")) for k in state):
        return state
    out = {}
    for key, value in state.items():
        for old, new in LEGACY_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out
