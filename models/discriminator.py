"""Multimodal discriminator (as released) and its losses, all windows of a clip in one call.

Windows: at every predicted step ``t`` whose window of ``disc_buffer = k`` steps lies
inside ``1..T-1`` (as the original, which filled a buffer from step 1 on), the LSTM reads
``k`` inputs ``[frame encoding, audio encoding]``: the first ``k-1`` are real frames, the
last the real or the generated frame ``t``. Four discriminator passes per window (real /
generated last frame x matched / mismatched audio, mismatched = audio rolled by one along
the batch) plus a per-frame linear head; since the first ``k-1`` inputs of the real and
generated variants are identical, the LSTM prefix is run once per audio variant and only
the last step is branched.

Loss weights follow the original: per window, cross-entropy (mean over the batch) summed
over windows; ``d_loss = real / 2 + (synthetic + mismatched) / 8``; the generator's
adversarial term is the mean of (generated labelled real with matched audio, with
mismatched audio, per-frame head), summed over windows. The discriminator's logits are a
tanh-bounded Linear, as the original's ``lstm`` module produced them.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from .layers import fold, unfold
from .lstm import LSTMPredictor, State


class Discriminator(nn.Module):
    """Own frame and audio encoders, a window LSTM (2g -> 2 classes) and a per-frame head (g -> 2)."""

    #: the discriminator loss: ``REAL_WEIGHT * real + FAKE_WEIGHT * (synthetic + mismatched)``, as released
    REAL_WEIGHT = 1 / 2
    FAKE_WEIGHT = 1 / 8

    def __init__(self, frame_encoder: nn.Module, audio_encoder: nn.Module, g_dim: int, hidden: int = 256,
                 layers: int = 1, buffer: int = 3, train_encoders: bool = False):
        super().__init__()
        if buffer < 1:
            raise ValueError(f"disc_buffer must be >= 1, got {buffer}")
        self.frame_encoder = frame_encoder
        self.audio_encoder = audio_encoder
        self.lstm = LSTMPredictor(2 * g_dim, 2, hidden, layers)
        self.frame_head = nn.Linear(g_dim, 2)
        self.buffer = buffer
        self.train_encoders = train_encoders
        if not train_encoders:  # the released maths: fixed random encoders (BatchNorm still in train mode)
            frame_encoder.requires_grad_(False)
            audio_encoder.requires_grad_(False)

    def forward(self, real: torch.Tensor, gen: torch.Tensor, audio: torch.Tensor,
                with_generator: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Discriminator loss and (optionally) the generator's adversarial term.

        real, gen: ``[S, B, C, H, W]`` real and generated frames of the predicted steps 1..T-1
        (``gen`` may carry gradient: the discriminator loss sees it detached, the generator
        term sees it through a parameter-detached copy of the discriminator).
        audio: ``[S, B, 1, F, S']`` features of the same steps.
        Returns ``(d_loss, g_adv, syn_loss)``; ``g_adv`` is None unless ``with_generator``;
        ``syn_loss`` (detached, for logging) is the discriminator's loss on the generated frames
        alone (the release's ``syn_loss``: window LSTM and per-frame head labelled fake, summed
        over windows); all are 0 when the clip is shorter than one window.
        """
        disc = self
        k = disc.buffer
        steps, batch = real.shape[:2]
        n_win = steps - k + 1
        if n_win <= 0:
            zero = real.new_zeros(())
            return zero, (zero if with_generator else None), zero
        gen_last = fold(gen[k - 1:])                                             # [W*B, C, H, W] last frames
        e_gen_g = None  # generated encodings with a graph to the generated frames (generator term)
        if disc.train_encoders:
            e_real = unfold(disc.frame_encoder(fold(real))[0], steps)           # [S, B, g]
            a = unfold(disc.audio_encoder(fold(audio)), steps)                   # [S, B, g]
            e_gen = disc.frame_encoder(gen_last.detach())[0]                     # [W*B, g]
        else:
            # Frozen encoders: no graph for the real frames and the audio, and ONE pass over the
            # generated frames serves both players (detached for the discriminator loss).
            with torch.no_grad():
                e_real = unfold(disc.frame_encoder(fold(real))[0], steps)
                a = unfold(disc.audio_encoder(fold(audio)), steps)
            e_gen = disc.frame_encoder(gen_last if with_generator else gen_last.detach())[0]
            if with_generator:
                e_gen_g, e_gen = e_gen, e_gen.detach()
        a_mis = a.roll(-1, dims=1)                                               # audio of the next clip
        er_w, a_w, am_w = windows(e_real, k), windows(a, k), windows(a_mis, k)   # [k, W*B, g]
        wb = n_win * batch

        # shared prefix (k-1 real steps), matched and mismatched audio in one batch
        if k > 1:
            prefix = torch.cat([torch.cat([er_w[:-1], a_w[:-1]], -1), torch.cat([er_w[:-1], am_w[:-1]], -1)], 1)
            _, state = disc.lstm.forward_seq(prefix)                             # per layer [2*W*B, r]
            s_match, s_mis = _split_state(state, 2)
        else:
            s_match = s_mis = None
        last = torch.cat([torch.cat([er_w[-1], a_w[-1]], -1), torch.cat([e_gen, a_w[-1]], -1),
                          torch.cat([er_w[-1], am_w[-1]], -1), torch.cat([e_gen, am_w[-1]], -1)])
        state_last = None if s_match is None else _cat_state([s_match, s_match, s_mis, s_mis])
        real_m, gen_m, real_mm, gen_mm = disc.lstm(last, state_last)[0].chunk(4)  # each [W*B, 2]
        head_real, head_gen = disc.frame_head(er_w[-1]), disc.frame_head(e_gen)
        ones = torch.ones(wb, dtype=torch.long, device=real.device)
        zeros = torch.zeros_like(ones)
        ce = F.cross_entropy
        real_loss = n_win * (ce(real_m, ones) + ce(head_real, ones))
        syn_loss = n_win * (ce(gen_m, zeros) + ce(head_gen, zeros))
        mis_loss = n_win * (ce(real_mm, zeros) + ce(gen_mm, zeros))
        d_loss = self.REAL_WEIGHT * real_loss + self.FAKE_WEIGHT * (syn_loss + mis_loss)
        if not with_generator:
            return d_loss, None, syn_loss.detach()

        # generator term: gradient to the generated frames only. Trained encoders need a second
        # encoder pass with detached weights (sharing the forward would need a nested backward,
        # which breaks autograd hooks such as FlopCounterMode's).
        if e_gen_g is None:
            e_gen_g = functional_call(disc.frame_encoder, frozen_params(disc.frame_encoder), (gen_last,))[0]
        a_last, am_last = a_w[-1].detach(), am_w[-1].detach()
        x = torch.cat([torch.cat([e_gen_g, a_last], -1), torch.cat([e_gen_g, am_last], -1)])
        st = None if s_match is None else _cat_state([[(h.detach(), c.detach()) for h, c in s] for s in (s_match, s_mis)])
        g_m, g_mm = functional_call(disc.lstm, frozen_params(disc.lstm), (x, st))[0].chunk(2)
        head = F.linear(e_gen_g, disc.frame_head.weight.detach(), disc.frame_head.bias.detach())
        g_adv = n_win * (ce(g_m, ones) + ce(head, ones) + ce(g_mm, ones)) / 3
        return d_loss, g_adv, syn_loss.detach()


def windows(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x [S, B, D]`` -> ``[k, W*B, D]`` with ``W = S - k + 1`` windows; batch index ``w * B + b``."""
    s, b, d = x.shape
    return x.unfold(0, k, 1).permute(3, 0, 1, 2).reshape(k, (s - k + 1) * b, d)


def frozen_params(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached parameters and cloned buffers of ``module`` for ``functional_call``.

    Running the discriminator with these gives gradients to its INPUTS only, and BatchNorm
    running statistics updated in train mode land in throwaway copies (the generator's
    pass must not move the discriminator's statistics a second time)."""
    out = {n: p.detach() for n, p in module.named_parameters()}
    out.update({n: b.clone() for n, b in module.named_buffers()})
    return out


def _cat_state(parts: list[State]) -> State:
    return [(torch.cat([p[i][0] for p in parts]), torch.cat([p[i][1] for p in parts])) for i in range(len(parts[0]))]


def _split_state(state: State, n: int) -> list[State]:
    chunks = [(h.chunk(n), c.chunk(n)) for h, c in state]
    return [[(h[i], c[i]) for h, c in chunks] for i in range(n)]
