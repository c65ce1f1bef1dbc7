"""Sound2Sight: audio-conditioned stochastic video prediction (ECCV 2020), vectorised.

Maths of one training iteration (the released "sample_prior" variant, docs/DESIGN.md), for a clip
of ``T`` frames ``x_0..x_{T-1}`` and per-frame audio features ``a_0..a_{T-1}``:

- ``h_t = enc(x_t)``; audio context ``c_t = AT(aenc(a_1..a_t))[-1]`` (the original's audio
  list starts at step 1, so ``a_0`` is never used);
- posterior ``q_t = N(mu, sigma)`` from ``[VT_post(h_1..h_t)[-1], c_t]``; prior ``p_t`` from
  ``[VT_prior(h_0..h_{t-1})[-1], c_t]``; ``z_t ~ p_t`` (reparameterised);
- ``x^_t = dec(pred(h_{t-1}, z_t), skips)``, skips from frame ``t-1`` for ``t <= n_past``
  (or every step with ``last_frame_skip``), else from the last context frame ``n_past-1``;
- loss = sum_t MSE(x^_t, x_t) + beta * sum_t KL(q_t || p_t) (KL summed over z, / batch)
  + adv_weight * generator adversarial term + discriminator loss.

How it is computed differs from the original (which looped over steps calling every
module per step): every frame is encoded ONCE for all ``T*B`` frames and reused as the
predictor input and the posterior target; each causal transformer runs once over the
whole sequence (its output ``t`` equals the original's re-run over the prefix ``0..t``);
the decoder runs once over all steps, and the skip half of its convolutions runs once per
distinct skip frame (all steps after the context reuse the last context frame's skips);
the discriminator's windows are folded into the batch (see ``discriminator.py``); the
LSTMs run as ATen's fused LSTM over the known inputs (only sampling steps them one by one).
Weights are kept channels-last (NHWC), which oneDNN's CPU convolutions run faster.
``tests/stepwise.py`` keeps the original loop structure and the tests prove both equal.

Deviation: BatchNorm in train mode normalises over all ``T*B`` frames of a call instead
of the ``B`` frames of one step (the statistics differ slightly; eval mode is identical).

One scalar to backward: ``out["loss"]`` gives the generator exactly the gradient of
``mse + beta*kld + adv_weight*g_adv`` and the discriminator exactly that of ``d_loss``:
the discriminator loss sees the generated frames detached, and the generator's term runs
the discriminator with detached parameters. So one optimizer (two parameter groups for
the two learning rates) steps the whole iteration, and DDP/AMP/compile see one graph.

Discriminator schedule: the discriminator always trains (``d_loss`` is in ``loss``
whenever ``use_disc``); the generator's adversarial term is added only when
``adv_weight > 0`` (the caller passes 0 in the first epoch, as the original started it
after the first epoch, then ``beta_gen_loss`` x schedule).

The discriminator's own frame and audio encoders: the released script fed its
discriminator loss detached ENCODINGS, so those encoders never received a gradient and
stayed at their random initialisation (random convolutional features under a trained
LSTM and head). That is the maths behind the paper's numbers, so it is the default here
(``disc_train_encoders=False``: the encoders are frozen, and the generated frames are
encoded once, for both players). ``disc_train_encoders=True`` trains them as the paper's
text suggests (``--disc_train_encoders``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .audio import AudioEncoder, check_audio_shape
from .dcgan import DCGAN_PLANS, DCGANDecoder, DCGANEncoder
from .discriminator import Discriminator
from .decoder import FrameDecoder, SplitSkipDecoder
from .latent import LatentNetwork
from .layers import fold, init_weights, sample_add, skip_add, unfold
from .lstm import LSTMPredictor, gaussian_kl, reparameterize
from .optim import OPTIMIZERS, build_optimizer  # noqa: F401  (OPTIMIZERS: --optimizer's choices)
from .transformer import CausalTransformer
from .vgg import VGG_STAGES, VGGDecoder, VGGEncoder

FRAME_MODELS = {"dcgan": (DCGANEncoder, DCGANDecoder, tuple(sorted(DCGAN_PLANS))),
                "vgg": (VGGEncoder, VGGDecoder, tuple(sorted(VGG_STAGES)))}


def _setting(default: Any, help: str, **flag: Any) -> Any:
    """A config field with its command-line help: ``train_sound2sight.py`` makes one flag per field
    from these (:func:`cli.add_config_flags`). ``flag=False``: no flag (set from the data or
    another flag); ``flag="no_x"``: a True default switched off by ``--no_x``; ``choices``."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class Sound2SightConfig:
    """Architecture of a Sound2Sight model (everything a checkpoint needs to be rebuilt).

    Each field's default is the original's, and its metadata holds the flag's help text."""

    image_width: int = _setting(48, "frame size in pixels (the dataset's; the --dataset presets check it)")
    channels: int = _setting(1, "frame channels (the dataset's)")
    model: str = _setting("dcgan", "frame encoder/decoder family", choices=tuple(FRAME_MODELS))
    audio_shape: tuple[int, int] = _setting((23, 21), "per-frame audio feature shape (F, S)", flag=False)
    g_dim: int = _setting(128, "frame/audio encoding size")
    z_dim: int = _setting(10, "latent size")
    rnn_size: int = _setting(256, "width of the LSTMs and transformers")
    nf: int = _setting(64, "base conv width of the frame/audio encoders and decoder (64 as the original; the "
                           "convolutions' cost grows with its square)")
    prior_rnn_layers: int = _setting(1, "LSTM layers of the prior")
    posterior_rnn_layers: int = _setting(1, "LSTM layers of the posterior")
    predictor_rnn_layers: int = _setting(2, "LSTM layers of the frame predictor")
    audio_rnn_layers: int = _setting(1, "layers of the audio transformer")
    video_rnn_layers: int = _setting(1, "layers of the two video transformers (prior's and posterior's)")
    nhead: int = _setting(4, "transformer attention heads")
    dim_ff: int = _setting(128, "transformer feed-forward width")
    pos_dropout: float = _setting(0.2, "transformers' positional-encoding dropout (as released)")
    layer_dropout: float = _setting(0.1, "transformers' attention and feed-forward dropout (PyTorch's default, "
                                         "as released)")
    disc_rnn_size: int = _setting(256, "discriminator LSTM width")
    disc_layers: int = _setting(1, "discriminator LSTM layers")
    disc_buffer: int = _setting(3, "discriminator window (steps)")
    n_past: int = _setting(5, "context frames (set from the training's --n_past)", flag=False)
    last_frame_skip: bool = _setting(False, "decoder skips from each step's input frame instead of the last "
                                            "context frame")
    beta: float = _setting(1e-4, "KL weight")
    train_latent: str = _setting("prior", "which z the predictor reads in training: prior (the release's "
                                 "'sample_prior' variant: the posterior enters through the KL only) or posterior "
                                 "(SVG-LP's training: the posterior's z, which the KL teaches the prior to predict); "
                                 "sampling always draws from the prior", choices=("prior", "posterior"))
    use_audio: bool = _setting(True, "SVG-LP ablation: prior and posterior see frames only (implies --no_disc: "
                                     "the discriminator is audio-visual, and SVG-LP has none)", flag="no_audio")
    use_disc: bool = _setting(True, "no discriminator, no adversarial terms", flag="no_disc")
    # False (the released maths): the discriminator's own frame/audio encoders keep their
    # initial weights, as in the released script (its discriminator loss saw detached
    # encodings); True: they train with the rest of the discriminator
    disc_train_encoders: bool = _setting(False, "train the discriminator's own frame and audio encoders too (the "
                                                "released script left them at their random initial weights, "
                                                "which is the default here)")

    def __post_init__(self) -> None:
        if self.model not in FRAME_MODELS:
            raise ValueError(f"model {self.model!r} is unknown; choose one of {sorted(FRAME_MODELS)}")
        widths = FRAME_MODELS[self.model][2]
        if self.image_width not in widths:
            raise ValueError(f"image_width {self.image_width} is not supported by model {self.model!r}; "
                             f"choose one of {list(widths)}")
        self.audio_shape = check_audio_shape(self.audio_shape)
        for name in ("channels", "nf", "g_dim", "z_dim", "rnn_size", "prior_rnn_layers", "posterior_rnn_layers",
                     "predictor_rnn_layers", "audio_rnn_layers", "video_rnn_layers", "nhead", "dim_ff",
                     "disc_rnn_size", "disc_layers", "disc_buffer", "n_past"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.rnn_size % self.nhead:
            raise ValueError(f"rnn_size {self.rnn_size} must be divisible by nhead {self.nhead}")
        if self.train_latent not in ("prior", "posterior"):
            raise ValueError(f"train_latent must be 'prior' or 'posterior', got {self.train_latent!r}")
        if self.use_disc and not self.use_audio:
            raise ValueError("use_disc=True needs use_audio=True (the discriminator is audio-visual); "
                             "set use_disc=False for the SVG-LP ablation")


def migrate_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``model_config`` dict, written by any earlier version, as today's fields.

    - ``disc_train_encoders`` is True for checkpoints older than the field (their
      discriminator's encoders always trained);
    - ``dropout`` (one rate for every transformer dropout, before the release's two rates
      were split) becomes ``pos_dropout`` and ``layer_dropout``, both at its value.
    """
    cfg = {"disc_train_encoders": True, **raw}
    if "dropout" in cfg:
        rate = cfg.pop("dropout")
        cfg.setdefault("pos_dropout", rate)
        cfg.setdefault("layer_dropout", rate)
    return cfg


def _frame_codec(cfg: Sound2SightConfig) -> tuple[type, type]:
    enc, dec, _ = FRAME_MODELS[cfg.model]
    return enc, dec


class Sound2Sight(nn.Module):
    """The generator (encoders, transformers, prior/posterior, predictor, decoder) and the discriminator."""

    def __init__(self, cfg: Sound2SightConfig):
        super().__init__()
        self.cfg = cfg
        g, r, z = cfg.g_dim, cfg.rnn_size, cfg.z_dim
        enc_cls, dec_cls = _frame_codec(cfg)
        self.encoder = enc_cls(g, cfg.channels, cfg.image_width, cfg.nf)
        self.decoder: FrameDecoder = dec_cls(g, cfg.channels, cfg.image_width, cfg.nf)
        # Decode through the decoder's split skip convolutions (models.decoder) when it has them;
        # False decodes with plain concatenated skips (same frames; tests compare the two).
        self.split_skips: bool = isinstance(self.decoder, SplitSkipDecoder)
        tf = dict(nhead=cfg.nhead, dim_ff=cfg.dim_ff, pos_dropout=cfg.pos_dropout, layer_dropout=cfg.layer_dropout)
        if cfg.use_audio:
            self.audio_encoder = AudioEncoder(g, cfg.audio_shape, cfg.nf)
            self.audio_transformer = CausalTransformer(g, r, cfg.audio_rnn_layers, **tf)
        self.posterior = LatentNetwork(g, z, r, cfg.video_rnn_layers, cfg.posterior_rnn_layers, cfg.use_audio, **tf)
        self.prior = LatentNetwork(g, z, r, cfg.video_rnn_layers, cfg.prior_rnn_layers, cfg.use_audio, **tf)
        self.predictor = LSTMPredictor(g + z, g, r, cfg.predictor_rnn_layers)
        if cfg.use_disc:
            self.disc = Discriminator(enc_cls(g, cfg.channels, cfg.image_width, cfg.nf),
                                      AudioEncoder(g, cfg.audio_shape, cfg.nf), g, cfg.disc_rnn_size,
                                      cfg.disc_layers, cfg.disc_buffer, train_encoders=cfg.disc_train_encoders)
        self.apply(init_weights)
        # NHWC weights: oneDNN's convolutions (most of the work) run ~10-15% faster on CPU,
        # and CUDA tensor cores prefer it too; inputs may stay NCHW
        self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ parameters
    def generator_parameters(self) -> list[nn.Parameter]:
        """Everything but the discriminator."""
        return [p for n, p in self.named_parameters() if not n.startswith("disc.")]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """The discriminator's trainable parameters (its encoders only with ``disc_train_encoders``)."""
        return [p for p in self.disc.parameters() if p.requires_grad] if self.cfg.use_disc else []

    def configure_optimizer(self, lr: float, disc_lr: float, beta1: float, name: str = "adam") -> torch.optim.Optimizer:
        """One optimiser, two parameter groups (generator at ``lr``, discriminator at ``disc_lr``).

        Adam / RMSprop keep per-parameter state, so this equals the original's 13 separate
        optimisers (:func:`models.optim.build_optimizer`)."""
        groups = [{"params": self.generator_parameters(), "lr": lr, "name": "generator"}]
        if self.cfg.use_disc:
            groups.append({"params": self.discriminator_parameters(), "lr": disc_lr, "name": "discriminator"})
        return build_optimizer(groups, lr, beta1, name)

    def checkpoint(self) -> dict[str, Any]:
        """The dict :func:`load_model` reads: ``{"model_config": asdict(cfg), "model": state_dict}``."""
        return {"model_config": asdict(self.cfg), "model": self.state_dict()}

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_output_bias(self, value: float) -> None:
        """Start the decoder's output convolution (before the sigmoid) at bias ``value``
        (``--output_bias``; the release's initialisation is 0)."""
        self.decoder.output_conv.bias.fill_(value)

    @torch.no_grad()
    def init_logvar_bias(self, value: float) -> None:
        """Start the prior's and the posterior's log-variance heads at bias ``value``
        (``--logvar_bias``; the release's initialisation is 0, sigma near 1)."""
        self.prior.lstm.logvar.bias.fill_(value)
        self.posterior.lstm.logvar.bias.fill_(value)

    # ------------------------------------------------------------------ noise
    @property
    def noise_dim(self) -> int:
        """Width of the prior noise :meth:`sample` reads per step (``cfg.z_dim``)."""
        return self.cfg.z_dim

    def draw_noise(self, steps: int, batch: int, like: torch.Tensor) -> torch.Tensor:
        """Standard-normal ``eps [steps, batch, z]`` (float32 on ``like``'s device).

        Every path (vectorised and stepwise) draws its noise up front through this, in the
        same order, so reseeding gives both the same z."""
        return torch.randn(steps, batch, self.cfg.z_dim, device=like.device)

    # ------------------------------------------------------------------ shared pieces
    def encode_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``frames [T, B, C, H, W]`` -> ``(h [T, B, g], skips: list of [T, B, c, h, w])`` in ONE encoder call."""
        steps = frames.shape[0]
        h, skips = self.encoder(fold(frames))
        return unfold(h, steps), [unfold(s, steps) for s in skips]

    def audio_context(self, audio: torch.Tensor | None) -> torch.Tensor | None:
        """``audio [T, B, 1, F, S]`` -> audio transformer outputs ``[T-1, B, g]`` for steps 1..T-1."""
        if not self.cfg.use_audio:
            return None
        steps = audio.shape[0] - 1
        return self.audio_transformer(unfold(self.audio_encoder(fold(audio[1:])), steps))

    def skip_index(self, steps: int, n_past: int) -> list[int]:
        """Frame whose skips decode step ``t`` (1..steps): ``t-1`` up to ``n_past``, then ``n_past-1``."""
        if self.cfg.last_frame_skip:
            return [t - 1 for t in range(1, steps + 1)]
        return [min(t - 1, n_past - 1) for t in range(1, steps + 1)]

    def decode_steps(self, g_pred: torch.Tensor, skips: list[torch.Tensor], index: list[int]) -> torch.Tensor:
        """``g_pred [S, B, g]`` decoded with the skips of frame ``index[s]`` (``skips``: per frame ``[T, B, ...]``)
        -> ``[S, B, C, H, W]`` in one decoder call.

        Steps that share a skip frame (all steps after the context, unless ``last_frame_skip``)
        share the skip half of the decoder's convolutions: it runs once per distinct frame
        (with :attr:`split_skips`; else the skips are gathered per step and concatenated)."""
        steps = g_pred.shape[0]
        frames = sorted(set(index))
        if len(frames) == steps or not self.split_skips:  # nothing shared (or no fast path): concatenation
            sel = torch.as_tensor(index, device=g_pred.device)
            return unfold(self.decoder((fold(g_pred), [fold(s.index_select(0, sel)) for s in skips])), steps)
        if frames == list(range(frames[0], frames[-1] + 1)):  # the usual case: a slice, no gather
            distinct = [fold(s[frames[0]:frames[-1] + 1]) for s in skips]
        else:
            distinct = [fold(s.index_select(0, torch.as_tensor(frames, device=g_pred.device))) for s in skips]
        slot = {f: i for i, f in enumerate(frames)}
        terms = self.decoder.skip_terms(distinct)
        return unfold(self.decoder.forward_terms(fold(g_pred), terms, skip_add([slot[f] for f in index])), steps)

    def _check(self, frames: torch.Tensor, audio: torch.Tensor | None) -> None:
        c, w = self.cfg.channels, self.cfg.image_width
        if frames.dim() != 5 or tuple(frames.shape[2:]) != (c, w, w):
            raise ValueError(f"frames must be [T, B, {c}, {w}, {w}], got {list(frames.shape)}")
        if self.cfg.use_audio:
            if audio is None or audio.dim() != 5 or tuple(audio.shape[2:]) != (1, *self.cfg.audio_shape):
                got = None if audio is None else list(audio.shape)
                raise ValueError(f"audio must be [T, B, 1, {self.cfg.audio_shape[0]}, {self.cfg.audio_shape[1]}], got {got}")

    # ------------------------------------------------------------------ teacher forcing
    def teacher_forced(self, frames: torch.Tensor, audio: torch.Tensor | None, eps: torch.Tensor,
                       latent: str = "prior", with_prior: bool | None = None) -> dict[str, torch.Tensor]:
        """The teacher-forced pass shared by training and reconstruction.

        frames ``[T, B, C, H, W]``; audio ``[T, B, 1, F, S]`` or None; eps ``[T-1, B, z]``.
        Step ``t`` (1..T-1) reads frame ``t-1``; the posterior sees frame ``t``. The predictor's
        z comes from ``latent``: ``"prior"`` (training, the released "sample_prior" variant)
        or ``"posterior"`` (reconstruction, and training with ``train_latent="posterior"``).
        ``with_prior`` (default: ``latent == "prior"``) also computes the prior (for the KL).
        Returns ``pred [T-1, B, C, H, W]``, ``mu_q``/``logvar_q`` and, with the prior, ``mu_p``/``logvar_p``
        (each ``[T-1, B, z]``).
        """
        if latent not in ("prior", "posterior"):
            raise ValueError(f"latent must be 'prior' or 'posterior', got {latent!r}")
        steps = frames.shape[0] - 1
        h, skips = self.encode_frames(frames)                                  # [T, B, g]
        a_ctx = self.audio_context(audio)                                      # [T-1, B, g]
        out: dict[str, torch.Tensor] = {}
        out["mu_q"], out["logvar_q"], _ = self.posterior.forward_seq(h[1:], a_ctx)
        if with_prior if with_prior is not None else latent == "prior":
            out["mu_p"], out["logvar_p"], _ = self.prior.forward_seq(h[:-1], a_ctx)
        mu, logvar = (out["mu_p"], out["logvar_p"]) if latent == "prior" else (out["mu_q"], out["logvar_q"])
        z = reparameterize(mu, logvar, eps)                                    # [T-1, B, z]
        g_pred, _ = self.predictor.forward_seq(torch.cat([h[:-1], z], -1))     # [T-1, B, g]
        out["pred"] = self.decode_steps(g_pred, skips, self.skip_index(steps, self.cfg.n_past))
        return out

    # ------------------------------------------------------------------ training
    def forward(self, frames: torch.Tensor, audio: torch.Tensor | None, adv_weight: float = 0.0,
                eps: torch.Tensor | None = None, *, kl_scale: float = 1.0,
                noise_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """One training computation (teacher forcing; z from the prior, or the posterior with
        ``cfg.train_latent == "posterior"``).

        frames ``[T, B, C, H, W]`` in [0, 1]; audio ``[T, B, 1, F, S]`` (scaled features; may be
        None without audio); eps ``[T-1, B, z]`` prior noise (drawn if None).
        ``kl_scale`` multiplies ``beta`` (a KL warm-up ramps it from 0 to 1); ``noise_scale``
        multiplies the noise of the training's z, ``z = mu + noise_scale * eps * sigma`` (a noise
        warm-up ramps it from 0 to 1: at 0 the predictor reads the latent's mean). Both default
        to 1, the release's maths, and are then not applied at all (bit-identical).
        Returns ``loss`` (the one scalar to backward) and, detached: ``mse`` and ``kld``
        (sums over steps divided by the T-1 steps), ``g_adv`` (unweighted), ``d_loss`` (summed
        over windows), ``syn_loss`` (its term on the generated frames, summed over windows),
        ``pred [T-1, B, C, H, W]`` (predictions of frames 1..T-1). What training logs, on the
        release's scale, is :func:`training.logged_figures` of these.
        """
        self._check(frames, audio)
        steps, batch = frames.shape[0] - 1, frames.shape[1]
        if steps < 1:
            raise ValueError("forward needs at least 2 frames")
        if eps is None:
            eps = self.draw_noise(steps, batch, frames)
        if noise_scale != 1.0:
            eps = eps * noise_scale
        tf = self.teacher_forced(frames, audio, eps, self.cfg.train_latent, with_prior=True)
        pred, target = tf["pred"], frames[1:]
        mse = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(2).mean(-1).mean(-1).sum()
        kld = gaussian_kl(tf["mu_q"].float(), tf["logvar_q"].float(), tf["mu_p"].float(),
                          tf["logvar_p"].float()).sum() / batch
        loss = mse + (self.cfg.beta if kl_scale == 1.0 else self.cfg.beta * kl_scale) * kld
        zero = loss.new_zeros(())
        g_adv, d_loss, syn_loss = zero, zero, zero
        if self.cfg.use_disc:
            with_gen = adv_weight > 0
            d_loss, g, syn_loss = self.disc(target, pred, audio[1:], with_gen)
            loss = loss + d_loss
            if with_gen:
                g_adv = g
                loss = loss + adv_weight * g_adv
        return {"loss": loss, "mse": (mse / steps).detach(), "kld": (kld / steps).detach(),
                "g_adv": g_adv.detach(), "d_loss": d_loss.detach(), "syn_loss": syn_loss,
                "pred": pred.detach().to(frames.dtype)}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def reconstruct(self, frames: torch.Tensor, audio: torch.Tensor | None,
                    eps: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior reconstruction ``[T, B, C, H, W]``: index 0 is ``frames[0]``, index ``t`` is
        decoded (teacher forcing) with ``z_t`` drawn from the posterior (noise ``eps [T-1, B, z]``)."""
        self._check(frames, audio)
        steps, batch = frames.shape[0] - 1, frames.shape[1]
        if eps is None:
            eps = self.draw_noise(steps, batch, frames)
        pred = self.teacher_forced(frames, audio, eps, "posterior")["pred"]
        return torch.cat([frames[:1], pred.to(frames.dtype)])

    @torch.no_grad()
    def reconstruct_generated(self, frames: torch.Tensor, audio: torch.Tensor | None, n_past: int,
                              eps: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior row of the release's evaluation GIFs ``[T, B, C, H, W]``: the ``n_past`` given
        frames, then frames decoded with ``z_t`` from the posterior (which reads the true frames, noise
        ``eps [T-1, B, z]``) while the predictor reads its OWN previous output after the context, as
        the release's generation script fed its decoded frame back. Skips as in :meth:`sample`."""
        self._check(frames, audio)
        total, batch = frames.shape[:2]
        if not 1 <= n_past < total:
            raise ValueError(f"need 1 <= n_past < T, got n_past {n_past} for {total} frames")
        if eps is None:
            eps = self.draw_noise(total - 1, batch, frames)
        h, skips = self.encode_frames(frames)                                  # [T, B, g], skips per frame
        mu_q, logvar_q, _ = self.posterior.forward_seq(h[1:], self.audio_context(audio))
        z = reparameterize(mu_q, logvar_q, eps)                                # [T-1, B, z]
        g_seq, state = self.predictor.forward_seq(torch.cat([h[:n_past], z[:n_past]], -1))  # steps 1..n_past
        g_out, skip = g_seq[-1], [s[n_past - 1] for s in skips]
        out = list(frames[:n_past].unbind(0))
        for t in range(n_past, total):                                         # decode frame t
            x = self.decoder((g_out, skip))
            out.append(x.to(frames.dtype))
            if t == total - 1:
                break
            h_new, own_skip = self.encoder(x)
            if self.cfg.last_frame_skip:
                skip = own_skip
            g_out, state = self.predictor(torch.cat([h_new, z[t]], -1), state)  # step t+1 reads frame t
        return torch.stack(out)

    @torch.no_grad()
    def sample(self, context: torch.Tensor, audio: torch.Tensor | None, nsample: int, n_future: int,
               eps: torch.Tensor | None = None) -> torch.Tensor:
        """Generate ``nsample`` futures per clip, as the release sampled.

        context ``[n_past, B, C, H, W]``; audio ``[n_past + n_future, B, 1, F, S]``; eps
        ``[T-1, B*nsample, z]`` standard-normal prior noise for steps 1..T-1 (drawn if None).
        Returns ``[T, B, nsample, C, H, W]`` with ``T = n_past + n_future``; the first
        ``n_past`` entries are the context. Samples are folded into the batch (index
        ``b * nsample + s``); context frames and audio are encoded once per clip.

        Every step's z comes from the PRIOR, the context steps included (there the predictor
        reads the ground-truth frames and its output is discarded): the release advanced the
        posterior during the context but discarded its z, exactly as training's
        "sample_prior" variant, where the predictor never sees a posterior z. The posterior
        therefore has no effect on samples and is not run. Steps 1..n_past read known
        frames, so they run as one sequence; later steps feed generated frames back.
        """
        n_past, batch = context.shape[:2]
        total = n_past + n_future
        if n_past < 1 or n_future < 0 or nsample < 1:
            raise ValueError(f"need n_past >= 1, n_future >= 0, nsample >= 1 (got {n_past}, {n_future}, {nsample})")
        self._check(context, audio)
        if audio is not None and audio.shape[0] != total:
            raise ValueError(f"audio has {audio.shape[0]} steps, n_past + n_future = {total}")
        bn = batch * nsample
        if eps is None:
            eps = self.draw_noise(total - 1, bn, context)
        if eps.shape[:2] != (total - 1, bn):
            raise ValueError(f"eps must be [{total - 1}, {bn}, z], got {list(eps.shape)}")
        out = list(context.repeat_interleave(nsample, dim=1).unbind(0))       # T x [BN, C, H, W]
        if n_future == 0:
            return torch.stack(out).reshape(total, batch, nsample, *context.shape[2:])

        def rep(x: torch.Tensor) -> torch.Tensor:  # [S, B, ...] -> [S, B*nsample, ...]
            return x.repeat_interleave(nsample, dim=1)

        h_ctx, skips_ctx = self.encode_frames(context)                        # [n_past, B, g], skips
        a_ctx = rep(self.audio_context(audio)) if self.cfg.use_audio else None  # [T-1, BN, g]
        a_at = (lambda t: None) if a_ctx is None else (lambda t: a_ctx[t - 1])
        # steps 1..n_past: inputs are the known frames 0..n_past-1
        hs = list(rep(h_ctx).unbind(0))                                       # encodings fed in so far
        mu_p, logvar_p, prior_state = self.prior.forward_seq(torch.stack(hs), None if a_ctx is None else a_ctx[:n_past])
        z = reparameterize(mu_p, logvar_p, eps[:n_past])                      # [n_past, BN, z]
        g_seq, pred_state = self.predictor.forward_seq(torch.cat([torch.stack(hs), z], -1))
        g_out = g_seq[-1]                                                     # step n_past's output
        # all generated steps share the last context frame's skips (unless last_frame_skip: each
        # decodes with its own input frame's); with split_skips, their half of the decoder's
        # concatenating convolutions runs once per clip, broadcast over samples
        split = self.split_skips and not self.cfg.last_frame_skip
        if split:
            terms = self.decoder.skip_terms([s[n_past - 1] for s in skips_ctx])
            add = sample_add(nsample)
        else:
            skip = [s[n_past - 1].repeat_interleave(nsample, dim=0) for s in skips_ctx]  # [BN, ...] each
        for t in range(n_past, total):                                        # decode step t
            if split:
                x = self.decoder.forward_terms(g_out, terms, add)
            else:
                x = self.decoder((g_out, skip))
            out.append(x.to(context.dtype))
            if t == total - 1:
                break
            if self.cfg.last_frame_skip:
                h_new, skip = self.encoder(x)
            else:
                h_new = self.encoder(x)[0]
            hs.append(h_new)                                                  # step t+1 reads frame t
            mu_p, logvar_p, prior_state = self.prior.step(torch.stack(hs), a_at(t + 1), prior_state)
            g_out, pred_state = self.predictor(torch.cat([h_new, reparameterize(mu_p, logvar_p, eps[t])], -1),
                                               pred_state)
        frames = torch.stack(out)                                              # [T, BN, C, H, W]
        return frames.reshape(total, batch, nsample, *frames.shape[2:])
