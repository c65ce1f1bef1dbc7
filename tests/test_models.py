"""Tests of the Sound2Sight model: shapes, the vectorised == stepwise equalities, gradient
routing of the one-scalar loss, losses, checkpoints, config errors, a short training run."""
from __future__ import annotations

import dataclasses
import math
import pickle

import pytest
import torch

import stepwise
from models.dcgan import DCGANDecoder, DCGANEncoder
from models.lstm import gaussian_kl
from checkpoints import load_model
from models.sound2sight import Sound2Sight, Sound2SightConfig
from models.transformer import CausalTransformer
from models.vgg import VGGDecoder, VGGEncoder
from errors import InputError
from runtime import match_param_layout

torch.set_num_threads(2)
TINY = dict(g_dim=16, rnn_size=32, z_dim=4, disc_rnn_size=32, dim_ff=32)
TOL = 1e-5


def tiny(**kw) -> Sound2SightConfig:
    return Sound2SightConfig(**{**TINY, **kw})


def batch(cfg: Sound2SightConfig, steps: int = 7, size: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = cfg.image_width
    frames = torch.rand(steps, size, cfg.channels, w, w, generator=g)
    audio = torch.rand(steps, size, 1, *cfg.audio_shape, generator=g)
    return frames, audio


def model_of(cfg: Sound2SightConfig, seed: int = 0) -> Sound2Sight:
    torch.manual_seed(seed)
    return Sound2Sight(cfg)


def calibrated(cfg: Sound2SightConfig, frames, audio, seed: int = 0) -> Sound2Sight:
    """A model in eval mode whose BatchNorm running statistics are those of one train-mode pass
    (:func:`training.recalibrate_batchnorm`, the library's own re-estimation).

    Fresh running statistics (mean 0, var 1) do not normalise the N(0, 0.02)-initialised
    activations, which then shrink layer by layer until every output is ~0.5 and any
    comparison is trivially met; calibrated, the outputs (and the effect of z) are O(1)."""
    import training

    model = model_of(cfg, seed)
    training.recalibrate_batchnorm(model, [(frames, audio)])
    return model.eval()


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("kind,width", [("dcgan", 48), ("dcgan", 64), ("dcgan", 96), ("dcgan", 128),
                                        ("vgg", 64), ("vgg", 128)])
@pytest.mark.parametrize("channels", [1, 3])
def test_frame_codec_shapes(kind, width, channels):
    enc_cls, dec_cls = (DCGANEncoder, DCGANDecoder) if kind == "dcgan" else (VGGEncoder, VGGDecoder)
    enc, dec = enc_cls(8, channels, width), dec_cls(8, channels, width)
    x = torch.rand(2, channels, width, width)
    h, skips = enc(x)
    assert h.shape == (2, 8)
    assert h.abs().max() <= 1  # tanh
    # skips halve in resolution from the full image on (vgg keeps the first at full size)
    first = width if kind == "vgg" else width // 2
    assert [s.shape[-1] for s in skips] == [first // 2 ** i for i in range(len(skips))]
    y = dec((h, skips))
    assert y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1


@pytest.mark.parametrize("kind,width", [("dcgan", 48), ("dcgan", 64), ("vgg", 64)])
def test_decoder_with_shared_skips_equals_gathered(kind, width):
    from models.layers import sample_add, skip_add

    enc_cls, dec_cls = (DCGANEncoder, DCGANDecoder) if kind == "dcgan" else (VGGEncoder, VGGDecoder)
    torch.manual_seed(0)
    enc, dec = enc_cls(8, 2, width).eval(), dec_cls(8, 2, width).eval()
    batch, slots = 2, [1, 0, 1, 1, 0, 1, 2, 2, 2, 0, 1]  # repeated, aligned and lone runs
    _, skips = enc(torch.rand(3 * batch, 2, width, width))   # 3 distinct skip frames per clip
    h = torch.randn(len(slots) * batch, 8, requires_grad=True)
    rows = torch.tensor([m * batch + b for m in slots for b in range(batch)])
    want = dec((h, [s[rows] for s in skips]))
    got = dec.forward_terms(h, dec.skip_terms(skips), skip_add(slots))
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got[0], got[2], atol=1e-4)  # the slot matters
    # the backward (sums over repeated runs) equals the gathered one; in float64, where the
    # different summation order cannot hide a real difference (float32 differs by ~1e-3 here)
    dec, h = dec.double(), h.detach().double().requires_grad_()
    skips = [s.detach().double().requires_grad_() for s in skips]
    w = torch.randn_like(want, dtype=torch.float64)
    g_want = torch.autograd.grad((dec((h, [s[rows] for s in skips])) * w).sum(), [h, *skips])
    g_got = torch.autograd.grad((dec.forward_terms(h, dec.skip_terms(skips), skip_add(slots)) * w).sum(),
                                [h, *skips])
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(g_got, g_want))
    # sampling: one skip map per clip, broadcast over nsample rows per clip (index b * nsample + s)
    nsample = 3
    per_clip = [s[:batch] for s in skips]
    h2 = torch.randn(batch * nsample, 8, dtype=torch.float64)
    want2 = dec((h2, [s.repeat_interleave(nsample, dim=0) for s in per_clip]))
    got2 = dec.forward_terms(h2, dec.skip_terms(per_clip), sample_add(nsample))
    assert torch.allclose(got2, want2, atol=1e-12)


def test_slot_runs():
    from models.layers import _slot_runs

    assert _slot_runs([0, 1, 2, 3, 4, 4, 4]) == [(4, 0, False), (3, 4, True)]
    assert _slot_runs([1, 0, 1, 1, 0]) == [(1, 1, False), (1, 0, False), (2, 1, True), (1, 0, False)]
    assert _slot_runs([0, 1, 2]) == [(3, 0, False)] and _slot_runs([5]) == [(1, 5, False)]


@pytest.mark.parametrize("kw,needle", [(dict(model="resnet"), "dcgan"), (dict(model="vgg", image_width=48), "64"),
                                       (dict(image_width=50), "48"), (dict(audio_shape=(6, 6)), "at least 8"),
                                       (dict(use_audio=False, use_disc=True), "use_disc")])
def test_config_errors_name_the_choices(kw, needle):
    with pytest.raises(ValueError, match=needle):
        Sound2SightConfig(**kw)


def test_transformer_is_causal():
    torch.manual_seed(0)
    tf = CausalTransformer(8, 16, 1, 4, 16).eval()
    x = torch.randn(6, 2, 8)
    y = tf(x)
    x2 = x.clone()
    x2[4:] += 1.0
    y2 = tf(x2)
    assert torch.allclose(y[:4], y2[:4], atol=1e-6)
    assert not torch.allclose(y[4:], y2[4:], atol=1e-3)
    # output t == last output of the prefix 0..t (what the original computed)
    for t in range(6):
        assert torch.allclose(tf(x[: t + 1])[-1], y[t], atol=1e-6)


# ----------------------------------------------------------------------------- vectorised == stepwise
EQ_CONFIGS = [dict(), dict(last_frame_skip=True), dict(n_past=2, disc_buffer=2, predictor_rnn_layers=1),
              dict(use_audio=False, use_disc=False), dict(disc_buffer=1, disc_layers=2, prior_rnn_layers=2),
              dict(disc_train_encoders=True), dict(train_latent="posterior")]


@pytest.mark.parametrize("kw", EQ_CONFIGS)
def test_forward_equals_stepwise(kw):
    cfg = tiny(n_past=3, **kw) if "n_past" not in kw else tiny(**kw)
    frames, audio = batch(cfg)
    audio = audio if cfg.use_audio else None
    model = calibrated(cfg, frames, audio)
    torch.manual_seed(5)
    fast = model(frames, audio, adv_weight=0.3)
    torch.manual_seed(5)
    ref = stepwise.forward(model, frames, audio, adv_weight=0.3)
    for key in ("loss", "mse", "kld", "g_adv", "d_loss", "syn_loss", "pred"):
        assert torch.allclose(fast[key], ref[key].detach(), atol=TOL, rtol=TOL), key
    assert fast["pred"].shape == frames[1:].shape
    if cfg.use_disc:
        assert fast["d_loss"] > 0 and fast["g_adv"] > 0 and 0 < fast["syn_loss"] < 8 * fast["d_loss"]


def test_logged_figures_are_the_releases():
    """What training logs: the release's train() returned sum_t MSE / T, sum_t KL / T, its
    discriminator loss / T and syn_loss / T ("gen loss"), T = the clip's frames (n_past + n_future)."""
    import training

    cfg = tiny(n_past=3)
    frames, audio = batch(cfg)
    model = calibrated(cfg, frames, audio)
    torch.manual_seed(5)
    ref = stepwise.forward(model, frames, audio, adv_weight=0.3)
    torch.manual_seed(5)
    out = model(frames, audio, adv_weight=0.3)
    t = frames.shape[0]
    fig = training.logged_figures({k: float(v.detach()) for k, v in out.items() if v.numel() == 1}, t)
    assert set(fig) == set(training.RELEASE_FIGURES) | {"g_adv", "loss"}
    steps = t - 1  # the reference's per-step means times its steps are its sums
    assert fig["train_mse_loss"] == pytest.approx(float(ref["mse"]) * steps / t, rel=1e-5)
    assert fig["kld_loss"] == pytest.approx(float(ref["kld"]) * steps / t, rel=1e-3, abs=1e-9)
    assert fig["disc_loss"] == pytest.approx(float(ref["d_loss"].detach()) / t, rel=1e-5)
    assert fig["gen_loss"] == pytest.approx(float(ref["syn_loss"]) / t, rel=1e-5)


def test_posterior_training_feeds_the_posterior_z_and_keeps_the_kl():
    """train_latent="posterior": the training prediction is the posterior reconstruction for the
    same noise, and the KL (which does not depend on the z fed) equals the release variant's."""
    cfg = tiny(n_past=3, use_disc=False)
    frames, audio = batch(cfg)
    model = calibrated(cfg, frames, audio).eval()
    with torch.no_grad():  # make z matter to the prediction (it hardly does in a fresh model)
        model.predictor.embed.weight[:, cfg.g_dim:] *= 40.0
    svg = Sound2Sight(dataclasses.replace(cfg, train_latent="posterior")).eval()
    svg.load_state_dict(model.state_dict())
    eps = torch.randn(frames.shape[0] - 1, frames.shape[1], cfg.z_dim)
    out, release = svg(frames, audio, eps=eps), model(frames, audio, eps=eps)
    assert torch.allclose(out["pred"], svg.reconstruct(frames, audio, eps=eps)[1:], atol=TOL)
    assert torch.allclose(out["kld"], release["kld"], atol=TOL)
    assert not torch.allclose(out["pred"], release["pred"], atol=1e-4)  # a different z reached the predictor
    with pytest.raises(ValueError, match="train_latent"):
        tiny(train_latent="both")


@pytest.mark.parametrize("kw", [dict(), dict(last_frame_skip=True), dict(use_audio=False, use_disc=False)])
def test_sample_and_reconstruct_equal_stepwise(kw):
    cfg = tiny(n_past=3, **kw)
    frames, audio = batch(cfg, steps=7, size=2)
    audio = audio if cfg.use_audio else None
    model = calibrated(cfg, frames, audio)
    torch.manual_seed(7)
    fast = model.sample(frames[:3], audio, nsample=3, n_future=4)
    torch.manual_seed(7)
    ref = stepwise.sample(model, frames[:3], audio, nsample=3, n_future=4)
    assert fast.shape == (7, 2, 3, 1, 48, 48)
    assert torch.allclose(fast, ref, atol=TOL)
    # context first (aligned with ground truth), generated frames differ between samples
    assert torch.equal(fast[:3], frames[:3].unsqueeze(2).expand(-1, -1, 3, -1, -1, -1))
    assert (fast[3:, :, 0] - fast[3:, :, 1]).abs().max() > 1e-4
    torch.manual_seed(8)
    rec = model.reconstruct(frames, audio)
    torch.manual_seed(8)
    rec_ref = stepwise.reconstruct(model, frames, audio)
    assert rec.shape == frames.shape
    assert torch.equal(rec[0], frames[0])
    assert torch.allclose(rec, rec_ref, atol=TOL)
    # the evaluation GIFs' posterior row: the release's generation loop, step by step
    eps = model.draw_noise(6, 2, frames)
    gen = model.reconstruct_generated(frames, audio, 3, eps=eps)
    gen_ref = stepwise.reconstruct_generated(model, frames, audio, 3, eps)
    assert gen.shape == frames.shape and torch.equal(gen[:3], frames[:3])  # the given frames first
    assert torch.allclose(gen, gen_ref, atol=TOL)
    assert (gen[4:] - model.reconstruct(frames, audio, eps=eps)[4:]).abs().max() > 1e-6  # fed back, not forced
    with pytest.raises(ValueError, match="n_past"):
        model.reconstruct_generated(frames, audio, 7, eps=eps)


def test_sample_noise_is_injectable_and_per_sample():
    cfg = tiny(n_past=2)
    frames, audio = batch(cfg, steps=5, size=2)
    model = calibrated(cfg, frames, audio)
    eps = torch.randn(4, 4, cfg.z_dim)
    a = model.sample(frames[:2], audio, 2, 3, eps=eps)
    b = model.sample(frames[:2], audio, 2, 3, eps=eps)
    assert torch.equal(a, b)
    # folded index b * nsample + s: giving sample 1 of clip 0 the noise of its sample 0 makes them equal
    eps2 = eps.clone()
    eps2[:, 1] = eps2[:, 0]
    c = model.sample(frames[:2], audio, 2, 3, eps=eps2)
    assert torch.allclose(c[:, 0, 0], c[:, 0, 1], atol=1e-6)
    assert not torch.allclose(c[2:, 1, 0], c[2:, 1, 1], atol=1e-4)
    with pytest.raises(ValueError, match="eps must be"):
        model.sample(frames[:2], audio, 2, 3, eps=eps[:3])


def test_sampling_uses_the_prior_in_the_context_steps():
    """As released: the context steps' z comes from the prior, so the posterior has no
    effect on samples, while the context-step noise does (it moves the predictor's state)."""
    cfg = tiny(n_past=3)
    frames, audio = batch(cfg, steps=6, size=2)
    model = calibrated(cfg, frames, audio)
    eps = torch.randn(5, 4, cfg.z_dim)
    base = model.sample(frames[:3], audio, 2, 3, eps=eps)
    with torch.no_grad():
        for p in model.posterior.parameters():
            p.add_(torch.randn_like(p))
    assert torch.equal(model.sample(frames[:3], audio, 2, 3, eps=eps), base)
    assert torch.allclose(stepwise.sample(model, frames[:3], audio, 2, 3, eps=eps), base, atol=TOL)
    eps_ctx = eps.clone()
    eps_ctx[:2] = torch.randn(2, 4, cfg.z_dim)  # steps 1, 2: context steps whose output is discarded
    moved = model.sample(frames[:3], audio, 2, 3, eps=eps_ctx)
    assert torch.equal(moved[:3], base[:3])
    assert (moved[3:] - base[3:]).abs().max() > 1e-4


def test_transformer_dropouts_are_the_released_two_rates():
    model = model_of(tiny())
    tf = model.prior.transformer
    assert tf.pos_dropout.p == 0.2
    layer = tf.encoder.layers[0]
    assert layer.dropout.p == layer.dropout1.p == layer.dropout2.p == 0.1
    other = model_of(tiny(pos_dropout=0.3, layer_dropout=0.0)).audio_transformer
    assert other.pos_dropout.p == 0.3 and other.encoder.layers[0].dropout1.p == 0.0


def test_checkpoint_with_one_dropout_rate_loads_with_it_for_both(tmp_path):
    ckpt = model_of(tiny(n_past=2)).checkpoint()
    cfg = ckpt["model_config"]
    del cfg["pos_dropout"], cfg["layer_dropout"]
    cfg["dropout"] = 0.2
    torch.save(ckpt, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt")
    assert loaded.cfg.pos_dropout == 0.2 and loaded.cfg.layer_dropout == 0.2


# ----------------------------------------------------------------------------- gradients
def _grads(model):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


@pytest.mark.parametrize("adv_weight", [0.0, 0.7])
@pytest.mark.parametrize("train_enc", [False, True])
def test_one_backward_equals_classic_two_backward(adv_weight, train_enc):
    cfg = tiny(n_past=3, disc_train_encoders=train_enc)
    frames, audio = batch(cfg, steps=6)
    model = calibrated(cfg, frames, audio)
    torch.manual_seed(3)
    model.zero_grad(set_to_none=True)
    model(frames, audio, adv_weight=adv_weight)["loss"].backward()
    one = _grads(model)
    torch.manual_seed(3)
    model.zero_grad(set_to_none=True)
    stepwise.classic_backward(model, stepwise.forward(model, frames, audio, adv_weight=adv_weight))
    two = _grads(model)
    for name in one:
        scale = max(two[name].abs().max().item(), 1e-3)
        assert (one[name] - two[name]).abs().max().item() <= 1e-4 * scale + 1e-7, name
    enc = [n for n in one if n.startswith(("disc.frame_encoder.", "disc.audio_encoder.")) and n.endswith("weight")]
    assert enc and all((one[n].abs().sum() > 0) == train_enc for n in enc)
    assert all(one[n].abs().sum() > 0 for n in one if n.startswith(("disc.lstm.", "disc.frame_head.")))


def test_frozen_discriminator_encoders_stay_put_and_are_not_optimised():
    from training import train_step

    cfg = tiny(n_past=3)
    frames, audio = batch(cfg, steps=6)
    model = model_of(cfg).train()
    opt = model.configure_optimizer(0.01, 0.01, 0.9)
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()
              if n.startswith(("disc.frame_encoder.", "disc.audio_encoder."))}
    assert frozen and not any(id(p) in optimised for n, p in model.named_parameters() if n in frozen)
    head = model.disc.frame_head.weight.detach().clone()
    for _ in range(2):
        train_step(model, opt, frames, audio, 0.5)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert not torch.equal(model.disc.frame_head.weight, head)  # the rest of the discriminator trains
    trained = model_of(tiny(n_past=3, disc_train_encoders=True))
    opt2 = trained.configure_optimizer(0.01, 0.01, 0.9)
    assert sum(len(g["params"]) for g in opt2.param_groups) > sum(len(g["params"]) for g in opt.param_groups)


@pytest.mark.parametrize("train_enc", [False, True])
def test_adversarial_term_reaches_generator_not_discriminator(train_enc):
    cfg = tiny(n_past=3, disc_train_encoders=train_enc)
    frames, audio = batch(cfg, steps=6)
    model = calibrated(cfg, frames, audio)
    grads = {}
    for w in (0.0, 5.0):
        torch.manual_seed(3)
        model.zero_grad(set_to_none=True)
        model(frames, audio, adv_weight=w)["loss"].backward()
        grads[w] = _grads(model)
    disc = [n for n in grads[0.0] if n.startswith("disc.")]
    gen = [n for n in grads[0.0] if not n.startswith("disc.")]
    assert all(torch.equal(grads[0.0][n], grads[5.0][n]) for n in disc)
    assert any(not torch.allclose(grads[0.0][n], grads[5.0][n]) for n in gen if n.startswith("decoder."))


# ----------------------------------------------------------------------------- losses
def test_gaussian_kl_hand_values():
    # KL(N(0,1) || N(1,4)) = log 2 + (1 + 1) / 8 - 1/2
    val = gaussian_kl(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0), torch.tensor(math.log(4.0)))
    assert abs(val.item() - (math.log(2) + 0.25 - 0.5)) < 1e-6
    assert abs(gaussian_kl(*[torch.tensor(0.3)] * 4).item()) < 1e-7
    g = torch.Generator().manual_seed(0)
    mu1, lv1, mu2, lv2 = torch.randn(4, 5, 3, generator=g, dtype=torch.float64).unbind(0)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu1, (0.5 * lv1).exp()),
                                            torch.distributions.Normal(mu2, (0.5 * lv2).exp()))
    assert torch.allclose(gaussian_kl(mu1, lv1, mu2, lv2), ref)


def test_loss_composition_and_mse_by_hand():
    cfg = tiny(n_past=3, use_disc=False, beta=0.25)
    model = model_of(cfg).eval()
    frames, audio = batch(cfg, steps=5, size=2)
    out = model(frames, audio)
    steps = 4
    # per step mean over all pixels of the batch, summed, reported / steps
    diff = (out["pred"].double() - frames[1:].double()) ** 2
    per_step = [diff[t].sum().item() / diff[t].numel() for t in range(steps)]
    assert abs(out["mse"].item() - sum(per_step) / steps) < 1e-6
    assert abs(out["loss"].item() - steps * (out["mse"].item() + 0.25 * out["kld"].item())) < 1e-5
    assert out["kld"] >= 0
    assert out["d_loss"] == 0 and out["g_adv"] == 0


def test_discriminator_loss_of_chance_logits():
    """With zero LSTM/head outputs every cross-entropy is log 2: d_loss = W*(2/2 + 4/8)*log 2 and
    g_adv = W*log 2 (W windows), which checks the weights and the window count."""
    cfg = tiny(n_past=3, disc_buffer=2)
    model = model_of(cfg).eval()
    with torch.no_grad():
        model.disc.lstm.out.weight.zero_()
        model.disc.lstm.out.bias.zero_()
        model.disc.frame_head.weight.zero_()
        model.disc.frame_head.bias.zero_()
    frames, audio = batch(cfg, steps=6)
    out = model(frames, audio, adv_weight=1.0)
    windows = 5 - 2 + 1
    assert abs(out["d_loss"].item() - windows * 1.5 * math.log(2)) < 1e-5
    assert abs(out["g_adv"].item() - windows * math.log(2)) < 1e-5


def test_bf16_autocast_runs():
    cfg = tiny(n_past=1, disc_buffer=2)
    model = model_of(cfg).train()
    frames, audio = batch(cfg, steps=3, size=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(frames, audio, adv_weight=0.5)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["pred"].dtype == torch.float32
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


# ----------------------------------------------------------------------------- ablations
def test_svg_lp_ablation_runs_without_audio():
    cfg = tiny(use_audio=False, use_disc=False, n_past=2)
    model = model_of(cfg)
    assert not any(n.startswith(("audio", "disc")) for n, _ in model.named_parameters())
    frames, _ = batch(cfg, steps=4)
    out = model(frames, None, adv_weight=1.0)
    out["loss"].backward()
    model.eval()
    assert model.sample(frames[:2], None, 2, 2).shape == (4, 3, 2, 1, 48, 48)
    assert model.reconstruct(frames, None).shape == frames.shape
    opt = model.configure_optimizer(1e-3, 2e-3, 0.9)
    assert len(opt.param_groups) == 1


def test_no_disc_keeps_audio():
    cfg = tiny(use_disc=False)
    model = model_of(cfg)
    assert hasattr(model, "audio_encoder") and not hasattr(model, "disc")
    frames, audio = batch(cfg, steps=4)
    out = model(frames, audio, adv_weight=1.0)
    assert out["d_loss"] == 0 and torch.isfinite(out["loss"])


# ----------------------------------------------------------------------------- optimiser and checkpoints
def test_configure_optimizer_groups():
    model = model_of(tiny())
    opt = model.configure_optimizer(0.002, 0.0025, 0.9)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == [0.002, 0.0025]
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert isinstance(model.configure_optimizer(1, 1, 0.5, "rmsprop"), torch.optim.RMSprop)
    assert isinstance(model.configure_optimizer(1, 1, 0.5, "sgd"), torch.optim.SGD)
    with pytest.raises(ValueError, match="optimizer"):
        model.configure_optimizer(1, 1, 0.5, "lion")


def test_fused_adam_equals_the_plain_update():
    """The model's Adam runs PyTorch's fused kernel; five steps of it leave the same weights
    and moments as the for-loop Adam on the same gradients, up to float32 rounding. Half the
    gradients arrive contiguous (NCHW) for channels-last weights: ``match_param_layout`` (which
    ``training.train_step`` calls) must re-lay them out, or the fused kernel, which reads them
    as flat memory, updates the wrong elements."""
    cfg = tiny()
    fused_model, plain_model = model_of(cfg), model_of(cfg)
    fused = fused_model.configure_optimizer(0.002, 0.0025, 0.9)
    assert all(g["fused"] for g in fused.param_groups)
    names = {id(p): n for n, p in fused_model.named_parameters()}
    plain_params = dict(plain_model.named_parameters())
    plain = torch.optim.Adam([{"params": [plain_params[names[id(p)]] for p in g["params"]], "lr": g["lr"]}
                              for g in fused.param_groups], betas=(0.9, 0.999), fused=False, foreach=False)
    assert any(not p.is_contiguous() for p in fused_model.parameters())  # channels-last weights present
    gen = torch.Generator().manual_seed(0)
    for step in range(5):
        for name, p in fused_model.named_parameters():
            if p.requires_grad:
                grad = torch.randn(p.shape, generator=gen)                     # contiguous
                p.grad = grad.clone() if step % 2 else torch.empty_like(p).copy_(grad)
                plain_params[name].grad = grad.clone()
        match_param_layout(fused)
        assert all(p.grad.stride() == p.stride() for p in fused_model.parameters() if p.grad is not None and min(p.shape, default=2) > 1)
        fused.step()
        plain.step()
    for name, p in fused_model.named_parameters():
        torch.testing.assert_close(p, plain_params[name], rtol=1e-5, atol=1e-7)
        if p.requires_grad:
            a, b = fused.state[p], plain.state[plain_params[name]]
            torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=1e-5, atol=1e-9)
            torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], rtol=1e-5, atol=1e-12)


def test_match_param_layout_relays_out_loaded_state():
    """Optimiser state saved NCHW (older checkpoints) gets each parameter's channels-last
    strides, values unchanged; state of another shape (Adam's ``step``) is left alone."""
    model = model_of(tiny())
    opt = model.configure_optimizer(0.002, 0.0025, 0.9)
    weight = next(p for p in model.parameters() if not p.is_contiguous())
    nchw = torch.randn(weight.shape)
    opt.state[weight] = {"step": torch.tensor(3.0), "exp_avg": nchw.clone(), "exp_avg_sq": nchw.abs()}
    match_param_layout(opt, state=True)
    st = opt.state[weight]
    assert st["exp_avg"].stride() == weight.stride() and torch.equal(st["exp_avg"], nchw)
    assert st["exp_avg_sq"].stride() == weight.stride() and torch.equal(st["exp_avg_sq"], nchw.abs())
    assert float(st["step"]) == 3.0

def test_load_model_round_trip_and_mismatch(tmp_path):
    cfg = tiny(n_past=2)
    model = model_of(cfg).eval()
    path = tmp_path / "model.pt"
    torch.save(model.checkpoint(), path)
    loaded, ckpt = load_model(path, expect=cfg)
    assert loaded.cfg == cfg and not loaded.training
    frames, audio = batch(cfg, steps=4)
    torch.manual_seed(1)
    a = model.reconstruct(frames, audio)
    torch.manual_seed(1)
    b = loaded.reconstruct(frames, audio)
    assert torch.equal(a, b)
    # the config of this run differs from the checkpoint's
    with pytest.raises(InputError, match=r"image_width 48, this run asks for 64") as err:
        load_model(path, expect={**vars(cfg), "image_width": 64, "model": "dcgan"})
    assert str(path) in str(err.value)
    # weights of another config under this config's name
    other = model_of(tiny(n_past=2, g_dim=8))
    torch.save({"model_config": vars(cfg), "model": other.state_dict()}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="bad.pt.*do not fit"):
        load_model(tmp_path / "bad.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_model_bad_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")
    torch.save({"weights": {}}, tmp_path / "keys.pt")
    with pytest.raises(InputError, match="model_config"):
        load_model(tmp_path / "keys.pt")

    class Evil:  # a pickled object must not be executed / accepted
        def __reduce__(self):
            return (print, ("boom",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"model_config": Evil(), "model": {}}, f)
    with pytest.raises(InputError, match="evil.pt"):
        load_model(tmp_path / "evil.pt")
    torch.save({"model_config": {**vars(tiny()), "image_width": 50}, "model": {}}, tmp_path / "cfg.pt")
    with pytest.raises(InputError, match="image_width 50"):
        load_model(tmp_path / "cfg.pt")


# ----------------------------------------------------------------------------- training
def test_a_few_training_steps_lower_the_mse():
    cfg = tiny(n_past=2)
    model = model_of(cfg).train()
    frames, audio = batch(cfg, steps=4, size=2, seed=1)
    opt = model.configure_optimizer(0.002, 0.0025, 0.9)
    mses = []
    for it in range(12):
        opt.zero_grad(set_to_none=True)
        out = model(frames, audio, adv_weight=1e-4 if it else 0.0)
        out["loss"].backward()
        opt.step()
        mses.append(out["mse"].item())
    assert all(math.isfinite(m) for m in mses)
    assert sum(mses[-3:]) / 3 < 0.7 * mses[0]


def test_stepwise_train_step_runs():
    cfg = tiny(n_past=2)
    model = model_of(cfg).train()
    frames, audio = batch(cfg, steps=4, size=2)
    opt = model.configure_optimizer(0.002, 0.0025, 0.9)
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    out = stepwise.train_step(model, opt, frames, audio, adv_weight=0.1)
    assert torch.isfinite(out["loss"])
    changed = [not torch.equal(b, p) for b, p in zip(before, trainable)]
    assert sum(changed) > 0.9 * len(changed)


@pytest.mark.parametrize("index", [[0, 1, 2, 2, 2], [0, 2, 2, 1], [1, 1, 1], [0, 1, 2]])
def test_decode_steps_equals_gathered_decoder(index):
    """Shared-skip decoding (slice or gather of the distinct frames) == the plain decoder per step."""
    cfg = tiny(n_past=3)
    frames, audio = batch(cfg, steps=3, size=2)
    model = calibrated(cfg, frames, audio)
    _, skips = model.encode_frames(frames)                                   # per frame [3, 2, ...]
    g_pred = torch.randn(len(index), 2, cfg.g_dim)
    got = model.decode_steps(g_pred, skips, index)
    sel = torch.as_tensor(index)
    want = model.decoder((g_pred.flatten(0, 1), [s[sel].flatten(0, 1) for s in skips])).unflatten(0, (len(index), 2))
    assert (got - want).abs().max() < TOL, float((got - want).abs().max())
    other = model.decode_steps(g_pred, skips, [(i + 1) % 3 for i in index])
    assert (got - other).abs().max() > 1e-3  # the skip frame matters


def test_checkpoint_from_before_disc_train_encoders_loads_as_trained(tmp_path):
    """Checkpoints written before the field existed trained the discriminator's encoders."""
    cfg = tiny(n_past=2)
    ckpt = model_of(cfg).checkpoint()
    del ckpt["model_config"]["disc_train_encoders"]
    torch.save(ckpt, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt")
    assert loaded.cfg.disc_train_encoders is True
    assert all(p.requires_grad for p in loaded.disc.frame_encoder.parameters())
    assert model_of(cfg).cfg.disc_train_encoders is False  # the default: frozen, as released
    # resuming such a run with today's default is refused by name (train_sound2sight's check)
    from checkpoints import check_config, saved_config

    with pytest.raises(InputError, match="disc_train_encoders True, this run asks for False"):
        check_config(tmp_path / "old.pt", saved_config(ckpt), cfg)


class PlainDecoder(torch.nn.Module):
    """A frame decoder with the plain contract only (models.decoder.FrameDecoder): no split skips."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    @property
    def output_conv(self) -> torch.nn.Module:
        return self.inner.output_conv

    def forward(self, inputs):
        return self.inner(inputs)


@pytest.mark.parametrize("kw", [dict(model="dcgan"), dict(model="vgg", image_width=64, nf=8, channels=3)])
def test_split_skip_path_equals_plain_path(kw):
    """The decoder's fast path (skip halves once per distinct map) and plain concatenated skips give
    the same frames, teacher-forced (train and eval mode) and sampled; a decoder without the fast
    path is decoded through the plain one."""
    from models.decoder import FrameDecoder, SplitSkipDecoder

    cfg = tiny(n_past=3, **kw)
    frames, audio = batch(cfg, steps=6, size=2)
    fast = calibrated(cfg, frames, audio)
    assert isinstance(fast.decoder, SplitSkipDecoder) and fast.split_skips
    plain = calibrated(cfg, frames, audio)
    plain.decoder = PlainDecoder(plain.decoder)
    plain.split_skips = isinstance(plain.decoder, SplitSkipDecoder)
    assert isinstance(plain.decoder, FrameDecoder) and not plain.split_skips
    eps = torch.randn(5, 2, cfg.z_dim, generator=torch.Generator().manual_seed(1))
    for train in (False, True):
        outs = []
        for model in (fast, plain):
            model.train(train)
            torch.manual_seed(2)  # the same dropout masks in train mode
            outs.append(model.teacher_forced(frames, audio, eps, "posterior")["pred"])
        assert (outs[0] - outs[1]).abs().max() < TOL, (train, float((outs[0] - outs[1]).abs().max()))
    fast.eval(), plain.eval()
    eps_s = torch.randn(5, 2 * 3, cfg.z_dim, generator=torch.Generator().manual_seed(3))
    got, want = (m.sample(frames[:3], audio, 3, 3, eps=eps_s) for m in (fast, plain))
    assert (got - want).abs().max() < TOL, float((got - want).abs().max())
    assert (got[3:, :, 0] - got[3:, :, 1]).abs().max() > 1e-3  # the samples differ: the comparison means something


def test_backward_gives_gradients_in_their_parameters_layout():
    """What makes ``match_param_layout`` a check that copies nothing in training: autograd
    leaves every gradient in its (channels-last) parameter's element order."""
    from runtime import _same_layout

    cfg = tiny()
    model = model_of(cfg).train()
    frames, audio = batch(cfg, steps=4)
    model(frames, audio, adv_weight=1.0)["loss"].backward()
    grads = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
    assert grads and any(not p.is_contiguous() for _, p in grads)
    assert [n for n, p in grads if not _same_layout(p.grad, p)] == []


def assert_same_conv(conv, plain_fn, x: torch.Tensor, tol: float) -> None:
    """``conv(x)`` and the gradients of its input, weight and bias equal ``plain_fn``'s (``F.conv2d``
    or ``F.conv_transpose2d`` with the module's stride and padding), to ``tol`` relative to the largest."""
    ours, plain = conv(x), plain_fn(x, conv.weight, conv.bias, conv.stride, conv.padding)
    assert ours.shape == plain.shape
    grad = torch.randn_like(plain)
    got = torch.autograd.grad(ours, (x, conv.weight, conv.bias), grad)
    want = torch.autograd.grad(plain, (x, conv.weight, conv.bias), grad)
    for a, b in zip((ours, *got), (plain, *want)):
        assert torch.allclose(a, b, rtol=tol, atol=tol * b.abs().max().item()), (a - b).abs().max()


@pytest.mark.parametrize("c_in, kernel, stride, padding, size", [
    (1, 4, 2, 1, (48, 48)),   # the encoders' first convolution
    (1, 4, 2, 1, (23, 21)),   # odd sizes: the far-edge padding and the cut
    (1, (6, 3), (3, 3), (2, 0), (17, 20)),
    (2, 4, 2, 0, (9, 10)),
    (1, 2, 2, 0, (7, 7)),
])
def test_space_to_depth_conv_equals_the_plain_convolution(c_in, kernel, stride, padding, size):
    """The shortcut's output and all three gradients equal F.conv2d's: exactly in float64 (the
    same products, summed in another order), to float32 rounding in float32 channels-last."""
    from torch.nn import functional as F

    from models.layers import SpaceToDepthConv2d

    torch.manual_seed(0)
    conv = SpaceToDepthConv2d(c_in, 5, kernel, stride, padding)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        conv = conv.to(dtype=dtype, memory_format=torch.channels_last)
        x = torch.randn(3, c_in, *size, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
        assert_same_conv(conv, F.conv2d, x, tol)


def test_conv_block_uses_space_to_depth_for_one_input_channel_only():
    from torch import nn

    from models.layers import SpaceToDepthConv2d, conv_block

    assert type(conv_block(1, 8)[0]) is SpaceToDepthConv2d
    assert type(conv_block(3, 8)[0]) is nn.Conv2d  # RGB: the plain kernel was as fast or faster
    assert type(conv_block(1, 8, (4, 4), (1, 1), (2, 2))[0]) is nn.Conv2d  # stride 1: nothing to fold
    assert type(conv_block(1, 8, 3, 2, 1)[0]) is nn.Conv2d  # stride does not divide the kernel
    # the same parameters under the same names as nn.Conv2d: checkpoints load either way
    plain = nn.Conv2d(1, 8, 4, 2, 1)
    ours = conv_block(1, 8)[0]
    ours.load_state_dict(plain.state_dict())
    assert list(ours.state_dict()) == list(plain.state_dict())
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(ours(x), plain(x), atol=1e-6)
    # another device runs the plain convolution (the meta device checks shapes only)
    assert ours.to("meta")(x.to("meta")).shape == plain(x).shape
    with pytest.raises(ValueError, match="strides"):
        SpaceToDepthConv2d(1, 8, 3, 2, 1)


def test_encoders_use_the_shortcut_for_grey_frames():
    from models.layers import SpaceToDepthConv2d

    model = Sound2Sight(tiny())
    first = [m for m in model.modules() if isinstance(m, SpaceToDepthConv2d)]
    assert len(first) == 2  # the frame encoder's and the discriminator's frame encoder's first convolutions


@pytest.mark.parametrize("transposed,size,kernel,stride", [
    (False, (6, 6), 6, 1), (False, (4, 3), (4, 3), 1), (False, (4, 4), 4, 2),
    (True, (1, 1), 6, 1), (True, (1, 1), (4, 3), 2),
])
def test_matmul_conv_equals_the_plain_convolution(transposed, size, kernel, stride):
    """MatmulConv2d (a kernel spanning its input) and MatmulConvTranspose2d (a 1x1 input): the
    output and all three gradients equal the plain convolution's, exactly in float64 and to
    float32 rounding, for channels-last and contiguous inputs and weights."""
    from torch import nn
    from torch.nn import functional as F

    from models.layers import MatmulConv2d, MatmulConvTranspose2d

    torch.manual_seed(0)
    cls, plain_fn = ((MatmulConvTranspose2d, F.conv_transpose2d) if transposed else (MatmulConv2d, F.conv2d))
    conv = cls(7, 5, kernel, stride, 0)
    assert isinstance(conv, nn.ConvTranspose2d if transposed else nn.Conv2d)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        for fmt in (torch.channels_last, torch.contiguous_format):
            conv = conv.to(dtype=dtype, memory_format=fmt)
            x = torch.randn(3, 7, *size, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
            assert conv.spans(x)
            assert_same_conv(conv, plain_fn, x, tol)


def test_matmul_conv_runs_the_plain_convolution_on_other_inputs():
    from torch import nn

    from models.layers import MatmulConv2d, MatmulConvTranspose2d

    torch.manual_seed(0)
    conv, deconv = MatmulConv2d(3, 4, 3, 1, 0), MatmulConvTranspose2d(3, 4, 3, 2, 0)
    plain_conv, plain_deconv = nn.Conv2d(3, 4, 3, 1, 0), nn.ConvTranspose2d(3, 4, 3, 2, 0)
    plain_conv.load_state_dict(conv.state_dict())  # the same state_dict: checkpoints load either way
    plain_deconv.load_state_dict(deconv.state_dict())
    x = torch.randn(2, 3, 5, 5)  # larger than the kernel / than one pixel
    assert not conv.spans(x) and not deconv.spans(x)
    assert torch.equal(conv(x), plain_conv(x)) and torch.equal(deconv(x), plain_deconv(x))
    padded = MatmulConv2d(3, 4, 3, 1, 1)
    assert not padded.spans(torch.randn(2, 3, 3, 3))
    # another device runs the plain convolution (the meta device checks shapes only)
    assert not conv.spans(torch.randn(2, 3, 3, 3, device="meta"))
    assert not deconv.spans(torch.randn(2, 3, 1, 1, device="meta"))
    assert conv.to("meta")(torch.randn(2, 3, 3, 3, device="meta")).shape == (2, 4, 1, 1)


def test_encoders_and_decoders_use_the_matmul_convolutions():
    """The encoders' last convolution (frame, audio, the discriminator's) and the decoder's first
    transposed convolution, for both frame families."""
    from models.layers import MatmulConv2d, MatmulConvTranspose2d

    for kind, width in (("dcgan", 48), ("vgg", 64)):
        cfg = tiny(model=kind, image_width=width)
        model = Sound2Sight(cfg)
        frames, audio = batch(cfg, steps=2, size=2)
        spans = []
        for m in model.modules():
            if isinstance(m, (MatmulConv2d, MatmulConvTranspose2d)):
                m.register_forward_pre_hook(lambda mod, args: spans.append((type(mod).__name__, mod.spans(args[0]))))
        with torch.no_grad():
            model(frames, audio, adv_weight=1e-2)
        assert spans and all(fits for _, fits in spans), (kind, spans)
        assert {name for name, _ in spans} == {"MatmulConv2d", "MatmulConvTranspose2d"}


def test_model_with_shortcut_convolutions_equals_plain_convolutions():
    """The whole training loss and every gradient, with the shortcut convolutions (the model as
    built: SpaceToDepthConv2d, MatmulConv2d, MatmulConvTranspose2d) and with plain ones."""
    from models.layers import SHORTCUT_CONVS, plain_convolutions

    cfg = tiny()
    frames, audio = batch(cfg)
    runs = []
    for plain in (False, True):
        model = model_of(cfg)
        if plain:
            plain_convolutions(model)
        assert {type(m) for m in model.modules() if type(m) in SHORTCUT_CONVS} == (set() if plain else set(SHORTCUT_CONVS))
        torch.manual_seed(1)
        out = model(frames, audio, adv_weight=1e-2)
        out["loss"].backward()
        runs.append((out["loss"].detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = runs
    assert torch.allclose(loss_a, loss_b, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    # against the largest gradient anywhere: a conv bias before BatchNorm has a true gradient of
    # 0, so its float32 values are rounding noise on both sides
    scale = max(g.abs().max().item() for g in grads_b.values())
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-3, atol=1e-5 * scale), name


@pytest.mark.parametrize("c, o, h, w", [(16, 1, 24, 24), (32, 1, 6, 5), (5, 3, 7, 9), (2, 2, 1, 1)])
def test_transposed_convolution_by_phases_equals_the_plain_one(c, o, h, w):
    """One stride-1 convolution to 4 phases, interleaved, equals F.conv_transpose2d(stride 2,
    padding 1) with a 4x4 kernel: exactly in float64, to rounding in float32 channels-last."""
    from torch.nn import functional as F

    from models.layers import conv_transpose2d_by_phases

    torch.manual_seed(0)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        x = torch.randn(3, c, h, w, dtype=dtype).contiguous(memory_format=torch.channels_last)
        weight, bias = torch.randn(c, o, 4, 4, dtype=dtype), torch.randn(o, dtype=dtype)
        ours, plain = conv_transpose2d_by_phases(x, weight, bias), F.conv_transpose2d(x, weight, bias, 2, 1)
        assert ours.shape == plain.shape == (3, o, 2 * h, 2 * w)
        assert torch.allclose(ours, plain, rtol=tol, atol=tol * plain.abs().max().item())
        assert torch.equal(conv_transpose2d_by_phases(x, weight, None) + bias.view(1, o, 1, 1), ours)


def test_decoder_uses_the_phases_only_to_one_channel_on_the_cpu_without_gradients(monkeypatch):
    """PhasedConvTranspose2d (the dcgan decoder's last layer) takes the phases while sampling
    grey frames; not with gradients (training), not to several channels, not on another device.
    Sampling through the split-skip path gives the same frames with it and with plain convolutions."""
    from torch import nn

    import models.layers as layers
    from models.layers import PhasedConvTranspose2d, plain_convolutions

    last, rgb = PhasedConvTranspose2d(16, 1, 4, 2, 1), PhasedConvTranspose2d(16, 3, 4, 2, 1)
    plain = nn.ConvTranspose2d(16, 1, 4, 2, 1)
    plain.load_state_dict(last.state_dict())  # the same state_dict: checkpoints load either way
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        assert last.uses_phases(x) and not rgb.uses_phases(x) and not last.uses_phases(x.to("meta"))
        assert not PhasedConvTranspose2d(64, 1, 4, 2, 1).uses_phases(torch.randn(2, 64, 6, 6))  # wide: no gain
        assert torch.allclose(last(x), plain(x), atol=1e-6)
    assert not last.uses_phases(x)  # gradients on: the plain kernel
    cfg = tiny(nf=16)  # the demo's width: the last layer reads 16 + 16 channels
    frames, audio = batch(cfg)
    model = calibrated(cfg, frames, audio)
    assert isinstance(model.decoder.output_conv, PhasedConvTranspose2d)
    n_future = frames.shape[0] - cfg.n_past
    eps = torch.randn(frames.shape[0] - 1, frames.shape[1] * 2, model.noise_dim,
                      generator=torch.Generator().manual_seed(3))
    calls = []
    by_phases = layers.conv_transpose2d_by_phases
    monkeypatch.setattr(layers, "conv_transpose2d_by_phases", lambda *a: calls.append(1) or by_phases(*a))
    with torch.no_grad():
        ours = model.sample(frames[:cfg.n_past], audio, 2, n_future, eps)
        assert calls  # the decoder's last layer took the phases
        plain_convolutions(model)
        plain_frames = model.sample(frames[:cfg.n_past], audio, 2, n_future, eps)
    assert ours[cfg.n_past:].std() > 1e-3  # the generated frames are not a constant
    assert torch.allclose(ours, plain_frames, atol=1e-5)
