"""The prior's audio monitor (prior_monitor.py) and the recipe flags that aim to keep the prior on
the sound (--kl_warmup, --noise_warmup, --logvar_bias): each default leaves the release's maths
unchanged, each non-default does what its help says, and a resumed run equals a straight one."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import evaluation
import prior_monitor
import train_sound2sight
import training
from models.lstm import gaussian_kl, reparameterize
from models.sound2sight import Sound2Sight, Sound2SightConfig
from tests.test_train import _state, run

SMALL = dict(g_dim=16, rnn_size=32, z_dim=4, dim_ff=32, nhead=2, disc_rnn_size=16, nf=8)


def small_model(**kw) -> Sound2Sight:
    torch.manual_seed(0)
    return Sound2Sight(Sound2SightConfig(**{**SMALL, **kw}))


def batch(steps: int = 6, clips: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(steps, clips, 1, 48, 48, generator=g), torch.rand(steps, clips, 1, 23, 21, generator=g)


def loud_prior(model: Sound2Sight) -> Sound2Sight:
    """Make the prior's mean follow the audio strongly (an untrained prior barely does)."""
    with torch.no_grad():
        model.audio_transformer.out.weight.mul_(50.0)
        model.prior.lstm.embed.weight[:, model.cfg.g_dim:] *= 40.0
        model.prior.lstm.mu.weight.mul_(40.0)
    return model


def test_derangement_moves_every_clip():
    audio = torch.arange(5.0).view(1, 5, 1).expand(3, 5, 2)
    swapped = prior_monitor.derange_audio(audio)
    assert (swapped[:, :, 0] != audio[:, :, 0]).all()
    assert sorted(swapped[0, :, 0].tolist()) == sorted(audio[0, :, 0].tolist())


def test_prior_stats_are_the_step_by_step_figures_and_touch_nothing():
    # float64: the spread over clips is a small difference of nearly equal numbers, so the
    # vectorised and stepped paths are compared where kernel rounding cannot move it
    model = loud_prior(small_model()).double()
    frames, audio = (x.double() for x in batch())
    model.train()
    rng = torch.get_rng_state()
    stats = prior_monitor.prior_stats(model, frames, audio)
    assert model.training and torch.equal(rng, torch.get_rng_state())  # mode restored, RNG untouched
    assert prior_monitor.prior_stats(model, frames, audio) == stats     # deterministic
    # the figures by hand: the prior stepped one step at a time (LatentNetwork.step), eval mode
    model.eval()
    with torch.no_grad():
        h, _ = model.encode_frames(frames)
        a_ctx, a_swap = model.audio_context(audio), model.audio_context(audio.roll(1, dims=1))
        mus, swaps, lvs, kls, state, state_s, state_q = [], [], [], [], None, None, None
        for t in range(1, frames.shape[0]):
            mu, lv, state = model.prior.step(h[:t], a_ctx[t - 1], state)
            mu_s, _, state_s = model.prior.step(h[:t], a_swap[t - 1], state_s)
            mu_q, lv_q, state_q = model.posterior.step(h[1:t + 1], a_ctx[t - 1], state_q)
            mus.append(mu), swaps.append(mu_s), lvs.append(lv), kls.append(gaussian_kl(mu_q, lv_q, mu, lv).sum(-1))
    mu, mu_s, lv, kl = torch.stack(mus), torch.stack(swaps), torch.stack(lvs), torch.stack(kls)
    assert stats.mu_spread == pytest.approx(float(mu.std(dim=1).mean()), rel=1e-9)
    assert stats.audio_change == pytest.approx(float((mu_s - mu).abs().mean()), rel=1e-9)
    assert stats.sigma == pytest.approx(float((0.5 * lv).exp().mean()), rel=1e-9)
    assert stats.kl == pytest.approx(float(kl.mean()), rel=1e-9)
    assert stats.audio_change > 1e-5 and stats.mu_spread > 1e-5  # the audio does move the prior here


def test_prior_stats_without_audio_and_bad_input():
    model = small_model(use_audio=False, use_disc=False)
    frames, _ = batch()
    stats = prior_monitor.prior_stats(model, frames, None)
    assert stats.audio_change == 0.0 and stats.sigma > 0 and stats.kl >= 0
    assert "audio change 0" in prior_monitor.describe(stats)
    assert prior_monitor.prior_stats(model, frames[:, :1], None) is None  # one clip: no spread, no swap
    with pytest.raises(ValueError, match="T>=2"):
        prior_monitor.prior_stats(model, frames[:1], None)


def test_default_scales_leave_the_maths_unchanged_and_others_do_what_they_say():
    model = small_model()
    model.eval()  # no dropout: the same computation twice
    frames, audio = batch()
    eps = model.draw_noise(frames.shape[0] - 1, frames.shape[1], frames)
    plain = model(frames, audio, 0.5, eps=eps)
    ones = model(frames, audio, 0.5, eps=eps, kl_scale=1.0, noise_scale=1.0)
    for k in ("loss", "mse", "kld", "g_adv", "d_loss", "pred"):
        assert torch.equal(plain[k], ones[k]), k
    # noise_scale 0: z is the prior's mean, as a forward with zero noise
    zero = model(frames, audio, 0.5, eps=torch.zeros_like(eps))
    assert torch.equal(model(frames, audio, 0.5, eps=eps, noise_scale=0.0)["pred"], zero["pred"])
    half = model(frames, audio, 0.5, eps=0.5 * eps)
    assert torch.equal(model(frames, audio, 0.5, eps=eps, noise_scale=0.5)["pred"], half["pred"])
    # kl_scale: only the KL's weight in the loss changes
    steps = frames.shape[0] - 1
    k0 = model(frames, audio, 0.5, eps=eps, kl_scale=0.0)
    k3 = model(frames, audio, 0.5, eps=eps, kl_scale=0.3)
    assert torch.equal(k0["kld"], plain["kld"]) and torch.equal(k0["pred"], plain["pred"])
    base = float(plain["loss"].detach()) - model.cfg.beta * float(plain["kld"]) * steps
    assert float(k0["loss"].detach()) == pytest.approx(base, rel=1e-6)
    assert float(k3["loss"].detach()) == pytest.approx(base + 0.3 * model.cfg.beta * float(plain["kld"]) * steps, rel=1e-6)


def test_noise_scale_zero_gives_the_prior_no_noise_in_the_step_by_step_maths():
    """The shortcut (eps scaled before the vectorised pass) against z = mu stepped by hand."""
    model = small_model()
    model.eval()
    frames, audio = batch(steps=4, clips=3)
    eps = model.draw_noise(3, 3, frames)
    with torch.no_grad():
        tf = model.teacher_forced(frames, audio, 0.0 * eps, "prior", with_prior=True)
        z = reparameterize(tf["mu_p"], tf["logvar_p"], torch.zeros_like(eps))
        assert torch.equal(z, tf["mu_p"])
        out = model(frames, audio, 0.0, eps=eps, noise_scale=0.0)
    assert torch.equal(out["pred"], tf["pred"])


def test_warmup_ramp():
    assert training.warmup(0, 0, 10, 0) == 1.0 and training.warmup(5, 3, 10, -1) == 1.0
    assert training.warmup(0, 0, 10, 2) == pytest.approx(1 / 20)
    assert training.warmup(1, 4, 10, 2) == pytest.approx(15 / 20)
    assert training.warmup(1, 9, 10, 2) == 1.0 and training.warmup(7, 0, 10, 2) == 1.0
    assert training.warmup(0, 9, 10, 0.5) == 1.0


def test_training_logs_the_monitor_and_the_flags_set_what_they_say(tmp_path, tiny_data):
    log = run(tmp_path / "r", tiny_data, "--niter", "2", "--epoch_size", "2", "--kl_warmup", "1.5",
              "--noise_warmup", "1", "--logvar_bias", "-4")
    rows = list(csv.DictReader(open(log / "metrics.csv")))
    for key in ("prior_mu_spread", "prior_audio_change", "prior_sigma", "prior_kl"):
        assert all(float(r[key]) >= 0 for r in rows), key
    # logvar heads started at -4: sigma near exp(-2) after two Adam steps, far from the default's ~1
    assert 0.05 < float(rows[0]["prior_sigma"]) < 0.3
    cfg = json.loads((log / "config.json").read_text())["args"]
    assert (cfg["kl_warmup"], cfg["noise_warmup"], cfg["logvar_bias"]) == (1.5, 1, -4)
    default = run(tmp_path / "d", tiny_data, "--niter", "1", "--epoch_size", "1")
    assert float(next(csv.DictReader(open(default / "metrics.csv")))["prior_sigma"]) > 0.5


def test_warmups_resume_exactly(tmp_path, tiny_data):
    flags = ("--epoch_size", "3", "--kl_warmup", "1.5", "--noise_warmup", "2")
    straight = run(tmp_path / "a", tiny_data, "--niter", "2", *flags)
    run(tmp_path / "b", tiny_data, "--niter", "1", *flags)
    resumed = run(tmp_path / "b", tiny_data, "--niter", "2", "--resume", *flags)
    a, b = _state(straight), _state(resumed)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    # and the warm-ups change the trajectory (they are applied)
    plain = run(tmp_path / "c", tiny_data, "--niter", "2", "--epoch_size", "3")
    assert any(not torch.equal(v, _state(plain)["model"][k]) for k, v in a["model"].items())


def test_evaluation_reports_the_prior(tmp_path, tiny_data, capsys):
    log = run(tmp_path / "r", tiny_data, "--niter", "1", "--epoch_size", "1")
    settings = evaluation.EvalSettings(n_past=3, n_future=3, nsample=2, num_clips=4, batch_size=2)
    capsys.readouterr()
    m = evaluation.evaluate_checkpoint(log / "checkpoints" / "last.pt", str(tiny_data), tmp_path / "eval", settings,
                                       device=torch.device("cpu"), tensorboard=False)
    assert set(m["prior"]) == {"mu_spread", "audio_change", "sigma", "kl"}
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["prior"] == pytest.approx(m["prior"])
    assert "prior: audio change" in capsys.readouterr().out


def test_train_flags_exist_with_release_defaults():
    args = train_sound2sight.parse_args(["--data_root", "/nonexistent"])
    assert (args.kl_warmup, args.noise_warmup, args.logvar_bias) == (0.0, 0.0, 0.0)


def test_the_evaluation_reports_progress_within_a_batch_and_the_same_numbers():
    """The progress callback hears of every clip x sample sequence, after each model call (so a bar
    moves within a batch), and asking for progress changes no number."""

    model = small_model().eval()
    frames, audio = batch(steps=6, clips=3)
    st = evaluation.EvalSettings(n_past=2, n_future=4, nsample=5, chunk_size=6)  # 2 samples x 3 clips a call
    heard: list[int] = []
    with_bar = evaluation.evaluate_batch(model, frames, audio, [0, 1, 2], st, progress=heard.append)
    plain = evaluation.evaluate_batch(model, frames, audio, [0, 1, 2], st)
    assert heard == [6, 6, 3] and sum(heard) == 3 * 5
    for m, v in plain.sample_scores.items():
        np.testing.assert_array_equal(with_bar.sample_scores[m], v)
