"""Step-by-step reference of the Sound2Sight computation, with the original's loop structure.

Uses the SAME module instances (and their one-step methods, e.g. ``prior.step``) as
:class:`models.sound2sight.Sound2Sight` but computes as
the released training script did: per time step it encodes frame ``t-1`` (predictor input)
and frame ``t`` (posterior target) separately, re-runs every causal transformer over the
prefix ``0..t`` and keeps its last output, runs the discriminator window by window (six
LSTM passes per window) and decodes one step at a time; the generator's adversarial
terms use the discriminator as is, and :func:`classic_backward` applies two backward
passes (generator, then discriminator), as the original did with its 13 optimisers.

Two uses: the tests prove the vectorised model equal to this (eval mode, same weights,
same noise); ``bench/train_step.py`` times :func:`train_step` as "the original's step".
With ``disc_train_encoders=False`` (the default, the released maths) the discriminator
follows the released script exactly: one encoder pass per generated frame, whose
encoding the discriminator loss sees detached and the generator's terms attached.
Noise is drawn through ``model.draw_noise`` in the same order as the vectorised paths.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from models.lstm import gaussian_kl, reparameterize
from models.sound2sight import Sound2Sight


def _ce(logits: torch.Tensor, label: int) -> torch.Tensor:
    return F.cross_entropy(logits, torch.full((logits.shape[0],), label, dtype=torch.long, device=logits.device))


def _run_window(model: Sound2Sight, frame_encs: list[torch.Tensor], audio_encs: list[torch.Tensor]) -> torch.Tensor:
    """Discriminator LSTM over one window, from a zero state; returns the last step's logits [B, 2]."""
    state, out = None, None
    for f, a in zip(frame_encs, audio_encs):
        out, state = model.disc.lstm(torch.cat([f, a], 1), state)
    return out


def forward(model: Sound2Sight, frames: torch.Tensor, audio: torch.Tensor | None, adv_weight: float = 0.0,
            eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Stepwise training computation. Returns ``gen_loss`` (mse + beta*kld + adv_weight*g_adv,
    with gradient into the discriminator too, to be discarded), ``d_loss`` (generated frames
    detached), ``loss`` = their sum, and ``mse``, ``kld``, ``g_adv``, ``pred`` as the model's forward."""
    cfg = model.cfg
    steps, batch = frames.shape[0] - 1, frames.shape[1]
    if eps is None:
        eps = model.draw_noise(steps, batch, frames)
    with_gen = cfg.use_disc and adv_weight > 0
    k = cfg.disc_buffer
    mse = kld = g_adv = d_loss = syn_total = frames.new_zeros(())
    h_list, tgt_list, a_list, preds = [], [], [], []
    real_buf, gen_d_buf, gen_g_buf, aud_buf = [], [], [], []
    post_state = prior_state = pred_state = None
    a_c = skip = None
    for t in range(1, steps + 1):
        h, sk = model.encoder(frames[t - 1])
        h_tgt = model.encoder(frames[t])[0]
        if cfg.last_frame_skip or t <= cfg.n_past:
            skip = sk
        h_list.append(h)
        tgt_list.append(h_tgt)
        if cfg.use_audio:
            a_list.append(model.audio_encoder(audio[t]))
            a_c = model.audio_transformer(torch.stack(a_list))[-1]
        mu_q, lv_q, post_state = model.posterior.step(torch.stack(tgt_list), a_c, post_state)
        mu_p, lv_p, prior_state = model.prior.step(torch.stack(h_list), a_c, prior_state)
        if cfg.train_latent == "posterior":  # SVG-LP's training: the predictor reads the posterior's z
            z = reparameterize(mu_q, lv_q, eps[t - 1])
        else:  # the release's "sample_prior" variant
            z = reparameterize(mu_p, lv_p, eps[t - 1])
        g_out, pred_state = model.predictor(torch.cat([h, z], 1), pred_state)
        x_pred = model.decoder((g_out, skip))
        preds.append(x_pred)
        mse = mse + F.mse_loss(x_pred, frames[t])
        kld = kld + gaussian_kl(mu_q, lv_q, mu_p, lv_p).sum() / batch
        if not cfg.use_disc:
            continue
        disc = model.disc
        real_enc, aud_enc = disc.frame_encoder(frames[t])[0], disc.audio_encoder(audio[t])
        if cfg.disc_train_encoders:
            gen_d_buf.append(disc.frame_encoder(x_pred.detach())[0])
            if with_gen:
                gen_g_buf.append(disc.frame_encoder(x_pred)[0])
        else:  # as released: one encoder pass over x_pred; the discriminator loss sees detached encodings
            gen_enc = disc.frame_encoder(x_pred)[0]
            gen_g_buf.append(gen_enc)
            gen_d_buf.append(gen_enc.detach())
            real_enc = real_enc.detach()
        real_buf.append(real_enc)
        aud_buf.append(aud_enc)
        real_buf, gen_d_buf, gen_g_buf, aud_buf = real_buf[-k:], gen_d_buf[-k:], gen_g_buf[-k:], aud_buf[-k:]
        if len(real_buf) < k:
            continue
        mis = [a.roll(-1, 0) for a in aud_buf]  # audio of the next clip in the batch
        if not cfg.disc_train_encoders:  # the released discriminator loss: detached encodings
            aud_d, mis_d = [a.detach() for a in aud_buf], [a.detach() for a in mis]
        else:
            aud_d, mis_d = aud_buf, mis
        real_loss = _ce(_run_window(model, real_buf, aud_d), 1) + _ce(disc.frame_head(real_buf[-1]), 1)
        syn_loss = (_ce(_run_window(model, real_buf[:-1] + gen_d_buf[-1:], aud_d), 0)
                    + _ce(disc.frame_head(gen_d_buf[-1]), 0))
        mis_loss = (_ce(_run_window(model, real_buf, mis_d), 0)
                    + _ce(_run_window(model, real_buf[:-1] + gen_d_buf[-1:], mis_d), 0))
        d_loss = d_loss + disc.REAL_WEIGHT * real_loss + disc.FAKE_WEIGHT * (syn_loss + mis_loss)
        syn_total = syn_total + syn_loss.detach()  # the release's syn_loss, which it logged as "gen loss"
        if with_gen:
            # real prefix detached; as released, the last step's audio encoding stays attached
            # (with frozen encoders: the weight gradients it leaves are discarded by
            # classic_backward; trained encoders share that graph with d_loss, so detach)
            real_det = [r.detach() for r in real_buf[:-1]]
            keep = (lambda a: a.detach()) if cfg.disc_train_encoders else (lambda a: a)
            aud_g = [a.detach() for a in aud_buf[:-1]] + [keep(aud_buf[-1])]
            mis_g = [a.detach() for a in mis[:-1]] + [keep(mis[-1])]
            g_m = _ce(_run_window(model, real_det + gen_g_buf[-1:], aud_g), 1)
            g_mm = _ce(_run_window(model, real_det + gen_g_buf[-1:], mis_g), 1)
            g_adv = g_adv + (g_m + _ce(disc.frame_head(gen_g_buf[-1]), 1) + g_mm) / 3
    gen_loss = mse + cfg.beta * kld + (adv_weight * g_adv if with_gen else 0.0)
    return {"gen_loss": gen_loss, "d_loss": d_loss, "loss": gen_loss + d_loss,
            "mse": (mse / steps).detach(), "kld": (kld / steps).detach(), "g_adv": g_adv.detach(),
            "syn_loss": syn_total, "pred": torch.stack(preds).detach()}


def classic_backward(model: Sound2Sight, out: dict[str, torch.Tensor]) -> None:
    """The original's two backward passes: generator loss -> generator grads (the grads it
    leaves in the discriminator are discarded), then discriminator loss -> discriminator grads."""
    disc_params = model.discriminator_parameters()
    out["gen_loss"].backward()
    for p in disc_params:
        p.grad = None
    if disc_params and out["d_loss"].requires_grad:
        out["d_loss"].backward()


def train_step(model: Sound2Sight, optimizer: torch.optim.Optimizer, frames: torch.Tensor,
               audio: torch.Tensor | None, adv_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """One stepwise training iteration: zero grads, forward, two backward passes, optimiser step."""
    optimizer.zero_grad(set_to_none=True)
    out = forward(model, frames, audio, adv_weight)
    classic_backward(model, out)
    optimizer.step()
    return out


@torch.no_grad()
def reconstruct(model: Sound2Sight, frames: torch.Tensor, audio: torch.Tensor | None,
                eps: torch.Tensor | None = None) -> torch.Tensor:
    """Stepwise posterior reconstruction ``[T, B, C, H, W]`` (index 0 = ``frames[0]``)."""
    cfg = model.cfg
    steps, batch = frames.shape[0] - 1, frames.shape[1]
    if eps is None:
        eps = model.draw_noise(steps, batch, frames)
    tgt_list, a_list, out = [], [], [frames[0]]
    post_state = pred_state = a_c = skip = None
    for t in range(1, steps + 1):
        h, sk = model.encoder(frames[t - 1])
        if cfg.last_frame_skip or t <= cfg.n_past:
            skip = sk
        tgt_list.append(model.encoder(frames[t])[0])
        if cfg.use_audio:
            a_list.append(model.audio_encoder(audio[t]))
            a_c = model.audio_transformer(torch.stack(a_list))[-1]
        mu_q, lv_q, post_state = model.posterior.step(torch.stack(tgt_list), a_c, post_state)
        g_out, pred_state = model.predictor(torch.cat([h, reparameterize(mu_q, lv_q, eps[t - 1])], 1), pred_state)
        out.append(model.decoder((g_out, skip)))
    return torch.stack(out)


@torch.no_grad()
def reconstruct_generated(model: Sound2Sight, frames: torch.Tensor, audio: torch.Tensor | None, n_past: int,
                          eps: torch.Tensor) -> torch.Tensor:
    """Stepwise: the release's generation-script posterior row (given frames during the context,
    then the predictor fed its own decoded frame while the posterior reads the true ones)."""
    cfg = model.cfg
    total = frames.shape[0]
    tgt_list, a_list, out = [], [], [frames[0]]
    post_state = pred_state = a_c = skip = None
    x_in = frames[0]
    for t in range(1, total):
        h, sk = model.encoder(x_in)
        if cfg.last_frame_skip or t <= n_past:
            skip = sk
        tgt_list.append(model.encoder(frames[t])[0])
        if cfg.use_audio:
            a_list.append(model.audio_encoder(audio[t]))
            a_c = model.audio_transformer(torch.stack(a_list))[-1]
        mu_q, lv_q, post_state = model.posterior.step(torch.stack(tgt_list), a_c, post_state)
        g_out, pred_state = model.predictor(torch.cat([h, reparameterize(mu_q, lv_q, eps[t - 1])], 1), pred_state)
        if t < n_past:
            x_in = frames[t]
        else:
            x_in = model.decoder((g_out, skip))
        out.append(x_in)
    return torch.stack(out)


@torch.no_grad()
def sample(model: Sound2Sight, context: torch.Tensor, audio: torch.Tensor | None, nsample: int, n_future: int,
           eps: torch.Tensor | None = None) -> torch.Tensor:
    """Stepwise sampling as released, same contract and noise as ``Sound2Sight.sample``.

    Every step re-encodes its input frame and audio and re-runs the transformers over the
    prefix. During the context steps the posterior is advanced on the known target frame
    and its z discarded, as the release did; the predictor always gets the prior's z."""
    cfg = model.cfg
    n_past, batch = context.shape[:2]
    total = n_past + n_future
    bn = batch * nsample
    if eps is None:
        eps = model.draw_noise(total - 1, bn, context)
    ctx = context.repeat_interleave(nsample, dim=1)
    aud = None if audio is None else audio.repeat_interleave(nsample, dim=1)
    hs, tgt_list, a_list, out = [], [], [], [ctx[0]]
    post_state = prior_state = pred_state = a_c = skip = None
    x_in = ctx[0]
    for t in range(1, total):
        h, sk = model.encoder(x_in)
        if cfg.last_frame_skip or t <= n_past:
            skip = sk
        hs.append(h)
        if cfg.use_audio:
            a_list.append(model.audio_encoder(aud[t]))
            a_c = model.audio_transformer(torch.stack(a_list))[-1]
        if t < n_past:  # the release advances the posterior here; its z is never used
            tgt_list.append(model.encoder(ctx[t])[0])
            _, _, post_state = model.posterior.step(torch.stack(tgt_list), a_c, post_state)
        mu_p, lv_p, prior_state = model.prior.step(torch.stack(hs), a_c, prior_state)
        z = reparameterize(mu_p, lv_p, eps[t - 1])
        g_out, pred_state = model.predictor(torch.cat([h, z], 1), pred_state)
        x_in = ctx[t] if t < n_past else model.decoder((g_out, skip))
        out.append(x_in)
    frames = torch.stack(out)
    return frames.reshape(total, batch, nsample, *frames.shape[2:])
