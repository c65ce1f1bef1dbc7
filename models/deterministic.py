"""A deterministic frame predictor: Sound2Sight's frame encoder, LSTM predictor and decoder with
no latent, no audio and no discriminator, trained on the reconstruction error alone.

The baseline that says what Sound2Sight's latent and sound add on top of its own backbone
(``--method deterministic``). Maths, for a clip ``x_0..x_{T-1}``:

- ``h_t = enc(x_t)``; ``x^_t = dec(pred(h_{t-1}), skips)`` with the skips of frame ``t-1`` up
  to ``n_past`` (or every step with ``last_frame_skip``), else of the last context frame,
  as in :class:`models.sound2sight.Sound2Sight`;
- loss = sum_t MSE(x^_t, x_t) (teacher forcing, per-step MSE summed over steps);
- sampling feeds each generated frame back; every "sample" of a clip is the same sequence,
  so its noise is empty (``noise_dim`` 0).

Built from the same pieces as Sound2Sight (:data:`models.sound2sight.FRAME_MODELS`,
:class:`models.lstm.LSTMPredictor`, :func:`models.layers.init_weights`), so its flags keep
Sound2Sight's names and defaults.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .audio import check_audio_shape
from .layers import fold, init_weights, unfold
from .lstm import LSTMPredictor
from .optim import build_optimizer
from .sound2sight import FRAME_MODELS, _setting  # one way to declare a flagged config field


@dataclass
class DeterministicConfig:
    """Architecture of a deterministic predictor (what a checkpoint needs to rebuild it)."""

    image_width: int = _setting(48, "frame size in pixels (the dataset's)")
    channels: int = _setting(1, "frame channels (the dataset's)")
    model: str = _setting("dcgan", "frame encoder/decoder family", choices=tuple(FRAME_MODELS))
    g_dim: int = _setting(128, "frame encoding size")
    rnn_size: int = _setting(256, "width of the predictor LSTM")
    nf: int = _setting(64, "base conv width of the frame encoder and decoder")
    predictor_rnn_layers: int = _setting(2, "LSTM layers of the frame predictor")
    last_frame_skip: bool = _setting(False, "decoder skips from each step's input frame instead of the last "
                                            "context frame")
    n_past: int = _setting(5, "context frames (set from the training's --n_past)", flag=False)
    audio_shape: tuple[int, int] = _setting((23, 21), "the data's audio feature shape (not read)", flag=False)
    use_audio: bool = _setting(False, "never: the predictor reads no audio", flag=False)

    def __post_init__(self) -> None:
        if self.model not in FRAME_MODELS:
            raise ValueError(f"model {self.model!r} is unknown; choose one of {sorted(FRAME_MODELS)}")
        if self.image_width not in FRAME_MODELS[self.model][2]:
            raise ValueError(f"image_width {self.image_width} is not supported by model {self.model!r}; "
                             f"choose one of {list(FRAME_MODELS[self.model][2])}")
        self.audio_shape = check_audio_shape(self.audio_shape)
        for name in ("channels", "g_dim", "rnn_size", "nf", "predictor_rnn_layers", "n_past"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.use_audio:
            raise ValueError("the deterministic predictor reads no audio (use_audio must be False)")


class DeterministicPredictor(nn.Module):
    """Frame encoder, LSTM predictor, frame decoder (a :class:`methods.TrainedModel`, no latent)."""

    def __init__(self, cfg: DeterministicConfig):
        super().__init__()
        self.cfg = cfg
        enc_cls, dec_cls, _ = FRAME_MODELS[cfg.model]
        self.encoder = enc_cls(cfg.g_dim, cfg.channels, cfg.image_width, cfg.nf)
        self.decoder = dec_cls(cfg.g_dim, cfg.channels, cfg.image_width, cfg.nf)
        self.predictor = LSTMPredictor(cfg.g_dim, cfg.g_dim, cfg.rnn_size, cfg.predictor_rnn_layers)
        self.apply(init_weights)
        self.to(memory_format=torch.channels_last)  # as Sound2Sight: oneDNN's convolutions prefer NHWC

    @property
    def noise_dim(self) -> int:
        """0: deterministic, :meth:`sample` reads no noise."""
        return 0

    @torch.no_grad()
    def init_output_bias(self, value: float) -> None:
        """Start the decoder's output convolution at bias ``value`` (``--output_bias``)."""
        self.decoder.output_conv.bias.fill_(value)

    def configure_optimizer(self, lr: float, disc_lr: float, beta1: float, name: str = "adam") -> torch.optim.Optimizer:
        """One parameter group, ``generator`` (there is no discriminator; ``disc_lr`` is unused)."""
        groups = [{"params": list(self.parameters()), "lr": lr, "name": "generator"}]
        return build_optimizer(groups, lr, beta1, name)

    def _check(self, frames: torch.Tensor) -> None:
        c, w = self.cfg.channels, self.cfg.image_width
        if frames.dim() != 5 or tuple(frames.shape[2:]) != (c, w, w):
            raise ValueError(f"frames must be [T, B, {c}, {w}, {w}], got {list(frames.shape)}")

    def forward(self, frames: torch.Tensor, audio: torch.Tensor | None = None,
                adv_weight: float = 0.0) -> dict[str, torch.Tensor]:
        """Teacher forcing: frames ``[T, B, C, H, W]`` in [0, 1] (audio and ``adv_weight`` are not read).
        Returns ``loss`` (the per-step MSE summed over steps), ``mse`` (per step, detached) and
        ``pred [T-1, B, C, H, W]``."""
        self._check(frames)
        total = frames.shape[0]
        steps = total - 1
        if steps < 1:
            raise ValueError("forward needs at least 2 frames")
        h, skips = self.encoder(fold(frames))                                   # [T*B, g], skips [T*B, ...]
        h, skips = unfold(h, total), [unfold(s, total) for s in skips]          # [T, B, g], [T, B, ...]
        g_pred, _ = self.predictor.forward_seq(h[:-1])                          # [T-1, B, g]
        index = [t - 1 if self.cfg.last_frame_skip else min(t - 1, self.cfg.n_past - 1) for t in range(1, total)]
        sel = torch.as_tensor(index, device=frames.device)
        pred = unfold(self.decoder((fold(g_pred), [fold(s.index_select(0, sel)) for s in skips])), steps)
        mse = F.mse_loss(pred.float(), frames[1:].float(), reduction="none").flatten(2).mean(-1).mean(-1).sum()
        return {"loss": mse, "mse": (mse / steps).detach(), "pred": pred.detach().to(frames.dtype)}

    @torch.no_grad()
    def sample(self, context: torch.Tensor, audio: torch.Tensor | None, nsample: int, n_future: int,
               eps: torch.Tensor | None = None) -> torch.Tensor:
        """The one future of each clip, repeated ``nsample`` times: context ``[n_past, B, C, H, W]`` ->
        ``[n_past + n_future, B, nsample, C, H, W]`` (the context first; ``audio``, ``eps`` not read)."""
        n_past = context.shape[0]
        if n_past < 1 or n_future < 0 or nsample < 1:
            raise ValueError(f"need n_past >= 1, n_future >= 0, nsample >= 1 (got {n_past}, {n_future}, {nsample})")
        self._check(context)
        out = list(context.unbind(0))                                           # T x [B, C, H, W]
        if n_future:
            h, skips = self.encoder(fold(context))
            h, skips = unfold(h, n_past), [unfold(s, n_past) for s in skips]
            g_seq, state = self.predictor.forward_seq(h)                        # steps 1..n_past
            g_out, skip = g_seq[-1], [s[-1] for s in skips]
            for t in range(n_past, n_past + n_future):                          # decode frame t
                x = self.decoder((g_out, skip)).to(context.dtype)
                out.append(x)
                if t == n_past + n_future - 1:
                    break
                h_new, own_skip = self.encoder(x)
                if self.cfg.last_frame_skip:
                    skip = own_skip
                g_out, state = self.predictor(h_new, state)                     # step t+1 reads frame t
        frames = torch.stack(out)                                               # [T, B, C, H, W]
        return frames[:, :, None].repeat(1, 1, nsample, 1, 1, 1)              # its own memory: callers write into it
