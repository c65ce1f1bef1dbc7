"""A small model's losses, samples and training steps, pinned before the model's restructure.

``tests/data/pinned_tiny.pt`` was written by the code of commit b97e527 (module names
``prior_transformer``, ``prior`` = the Gaussian LSTM, ...), with BatchNorm statistics
re-estimated on the inputs below; the numbers are what that code computed. Loading the
file exercises the state-dict migration of checkpoints written before the restructure, and
every number must still come out the same (1e-5 relative), in eval and in train mode.

The one exception is the KL: a sum of terms of order 1 that cancel to ~6e-6 (its condition
number, sum |terms| / |KL|, is ~3e5 here), so float32 kernels of another instruction set
(AVX2 against AVX-512, ``ATEN_CPU_CAPABILITY=avx2``) move the float32 value by ~1e-3
relative. The test therefore pins the KL evaluated in float64 from the model's float32
``mu``/``logvar`` (stable to ~1e-7 on every CPU kind), and checks the model's float32 ``kld``
against it within the tolerance the condition number implies (``cond * eps_float32``).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import training
from checkpoints import load_model
from models.lstm import gaussian_kl

PINNED = Path(__file__).parent / "data" / "pinned_tiny.pt"
EXPECT = {"loss": 4.564224720001221, "mse": 0.08401106297969818, "kld_f64": 6.444091868e-06,
          "g_adv": 2.0762085914611816, "d_loss": 3.106065034866333, "pred_sum": 11493.296875,
          "pred_px": 0.4928131401538849, "sample_sum": 41405.5546875,
          "sample_px": [0.5188209414482117, 0.4671900272369385], "sample_std": 0.019539879634976387,
          "recon_sum": 13758.4912109375, "train_losses": [4.574588775634766, 4.556480407714844]}


def approx(v):
    return pytest.approx(v, rel=1e-5, abs=1e-9)


def inputs():
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(6, 2, 1, 48, 48, generator=g)
    audio = torch.rand(6, 2, 1, 23, 21, generator=g)
    return frames, audio, g


def test_pinned_model_numbers_are_unchanged():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = load_model(PINNED)
        frames, audio, g = inputs()
        g.manual_seed(1)
        torch.rand(6, 2, 1, 48, 48, generator=g), torch.rand(6, 2, 1, 23, 21, generator=g)  # same stream position
        eps = torch.randn(5, 2, 2, generator=g)
        eps_s = torch.randn(5, 6, 2, generator=g)
        out = model(frames, audio, adv_weight=0.5, eps=eps)
        for k in ("loss", "mse", "g_adv", "d_loss"):
            assert float(out[k].detach()) == approx(EXPECT[k]), k
        with torch.no_grad():
            tf = model.teacher_forced(frames, audio, eps, "prior", with_prior=True)
        mq, lq, mp, lp = (tf[k].double() for k in ("mu_q", "logvar_q", "mu_p", "logvar_p"))
        steps, batch = mq.shape[:2]
        kl64 = gaussian_kl(mq, lq, mp, lp)                                   # [steps, B, z]
        assert float(kl64.sum()) / batch / steps == pytest.approx(EXPECT["kld_f64"], rel=1e-5)
        terms = (0.5 * lp, 0.5 * lq, lq.exp() / (2 * lp.exp()), (mq - mp) ** 2 / (2 * lp.exp()), 0.5 + 0 * lp)
        cond = float(sum(t.abs() for t in terms).sum() / kl64.sum().abs())    # ~3e5
        assert cond > 1e3  # the reason for the looser check below; if it fails, pin kld at 1e-5 again
        rel32 = cond * torch.finfo(torch.float32).eps
        assert float(out["kld"]) == pytest.approx(EXPECT["kld_f64"], rel=rel32), (float(out["kld"]), rel32)
        assert float(out["pred"].sum()) == approx(EXPECT["pred_sum"])
        assert float(out["pred"][2, 1, 0, 20, 30]) == approx(EXPECT["pred_px"])
        s = model.sample(frames[:3], audio, 3, 3, eps=eps_s)
        assert float(s.sum()) == approx(EXPECT["sample_sum"])
        assert [float(s[4, 1, 2, 0, 24, 24]), float(s[5, 0, 1, 0, 10, 40])] == approx(EXPECT["sample_px"])
        assert float(s[3:].std()) == approx(EXPECT["sample_std"])
        assert float(model.reconstruct(frames, audio, eps=eps).sum()) == approx(EXPECT["recon_sum"])
        model.train()
        opt = model.configure_optimizer(0.002, 0.0025, 0.9)
        torch.manual_seed(3)
        losses = [training.train_step(model, opt, frames, audio, 0.5)["loss"] for _ in range(2)]
        assert losses == approx(EXPECT["train_losses"])
    finally:
        torch.set_num_threads(threads)
