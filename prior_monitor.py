"""Does the prior read the sound? Four figures of a model's learned prior on a fixed batch.

In Sound2Sight the latent ``z`` is the sound's only way to the predicted frames: the
prior sees the past frames and the audio context, the predictor sees the past frame and
``z``. A prior that outputs the same distribution whatever the clip (it has "collapsed")
cannot pass the sound on, and the model then scores like its no-audio ablation. These
figures show it while training runs (``metrics.csv``, TensorBoard ``prior/*``), in the
evaluation (``metrics.json``'s ``prior`` block and its headline) and for any checkpoint
(``experiments/prior_audio.py``):

* ``mu_spread``: the prior mean's standard deviation over the clips of the batch (mean
  over steps and z dimensions); 0 when the prior ignores its inputs;
* ``audio_change``: the mean absolute change of the prior mean when each clip's audio is
  replaced by another clip's (a fixed derangement: clip ``b`` gets clip ``b-1``'s audio);
  0 when the prior ignores the sound (0 by construction for a model without audio);
* ``sigma``: the prior's mean standard deviation;
* ``kl``: KL(posterior || prior) summed over z, per step and clip (the training's ``kld``
  on this batch, in eval mode).

A method without a learned prior (not a :class:`methods.LatentPrior`) has no figures:
:func:`prior_stats` returns None and the callers leave them out.

The computation is the training's teacher-forced prior in eval mode (no dropout, BatchNorm
running statistics): deterministic, it draws no random numbers, so it never moves the
training's RNG.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from methods import has_latent_prior
from models.lstm import gaussian_kl


@dataclass(frozen=True)
class PriorStats:
    """The prior's figures on one batch (see the module docstring)."""

    mu_spread: float
    audio_change: float
    sigma: float
    kl: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def derange_audio(audio: torch.Tensor) -> torch.Tensor:
    """``audio [T, B, ...]`` with clip ``b`` given clip ``b-1``'s audio (``b = 0`` gets ``B-1``'s):
    a derangement for ``B >= 2``."""
    return audio.roll(1, dims=1)


@torch.no_grad()
def prior_stats(model: torch.nn.Module, frames: torch.Tensor, audio: torch.Tensor | None) -> PriorStats | None:
    """The figures of ``model``'s prior (a :class:`methods.LatentPrior` such as
    :class:`models.sound2sight.Sound2Sight`, not a DDP wrapper) on ``frames [T, B, C, H, W]``
    (``T >= 2``) and ``audio [T, B, 1, F, S]`` (None without audio); None for a model without a
    learned prior, and for a single clip (``B < 2``: a spread over clips and a swapped audio need
    two; a validation set of one clip trains on without these figures). Runs in eval mode and
    restores the model's mode."""
    if not has_latent_prior(model):
        return None
    if frames.dim() != 5 or frames.shape[0] < 2:
        raise ValueError(f"prior_stats needs frames [T>=2, B, C, H, W], got {list(frames.shape)}")
    if frames.shape[1] < 2:
        return None
    was_training = model.training
    model.eval()
    try:
        h, _ = model.encode_frames(frames)                        # [T, B, g]
        a_ctx = model.audio_context(audio)                         # [T-1, B, g] or None
        mu_p, logvar_p, _ = model.prior.forward_seq(h[:-1], a_ctx)  # [T-1, B, z]
        mu_q, logvar_q, _ = model.posterior.forward_seq(h[1:], a_ctx)
        # the statistics in float64: a collapsed prior's spread and KL are small differences of
        # nearly equal numbers, which float32 arithmetic would blur
        mu_p, logvar_p, mu_q, logvar_q = (x.double() for x in (mu_p, logvar_p, mu_q, logvar_q))
        change = 0.0
        if a_ctx is not None:
            mu_s, _, _ = model.prior.forward_seq(h[:-1], model.audio_context(derange_audio(audio)))
            change = float((mu_s.double() - mu_p).abs().mean())
        kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).sum(-1)  # [T-1, B]
        return PriorStats(mu_spread=float(mu_p.std(dim=1).mean()), audio_change=change,
                          sigma=float((0.5 * logvar_p).exp().mean()), kl=float(kl.mean()))
    finally:
        model.train(was_training)


def describe(stats: PriorStats) -> str:
    """One line for logs and headlines."""
    return (f"prior: audio change {stats.audio_change:.3g}, mean spread {stats.mu_spread:.3g}, "
            f"sigma {stats.sigma:.3g}, KL {stats.kl:.3g}")
