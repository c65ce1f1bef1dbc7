"""Checks that need an accelerator: the same computations on ``--device`` and on the CPU.

    python tests/device_check.py --device cuda      # prints ONE JSON line; exit status 1 if a check fails

CI has no GPU, so these run wherever one is lent (the numbers go into the notes); the test
suite runs this script on the CPU against itself (``tests/test_device_check.py``), so it
stays runnable. Float32 on both sides, TF32 off, so the differences are rounding only:

* ``shortcut_convs``: the training loss and every gradient of a small Sound2Sight on the
  device, built as usual (``models.layers``' shortcut convolutions) against the same model
  with plain convolutions (``plain_convolutions``); the shortcuts act on CPU tensors only, so
  on another device this checks that every one of them falls back to the plain computation;
* ``validation``: :func:`training.validate` (prior samples, the evaluation's metric path on
  that device, every baseline) on the device against the CPU, same weights and noise (the
  evaluation draws each clip's noise from its own CPU generator);
* ``metrics``: :func:`metrics.score_pairs` on the device (the torch path) against the CPU
  kernel, on random and on sparse (M3SO-like, mostly black) frame pairs;
* ``amp_step``: a few :func:`training.train_step` calls with and without ``--amp`` (float16
  autocast and a gradient scaler on CUDA, bfloat16 on CPU), from the same weights: every loss
  finite, the first ones close, and the weights moved (the scaler may skip its first steps).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import metrics  # noqa: E402
import training  # noqa: E402
from models.layers import plain_convolutions  # noqa: E402
from models.sound2sight import Sound2Sight, Sound2SightConfig  # noqa: E402
from runtime import get_device  # noqa: E402

#: A small model (the demo's widths halved again) and a batch: seconds on a CPU.
CONFIG = dict(nf=8, g_dim=32, rnn_size=32, z_dim=4, disc_rnn_size=16, dim_ff=32, nhead=2, n_past=3)
STEPS, BATCH = 7, 4
#: Pass marks (float32 on both sides, TF32 off): relative for losses and gradients, absolute for metrics.
TOL = {"loss": 1e-4, "grad": 1e-3, "ssim": 1e-3, "psnr_db": 0.02, "amp_loss": 5e-2}


def batch(cfg: Sound2SightConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """frames ``[T, B, C, W, W]`` in [0, 1] and audio ``[T, B, 1, F, S]`` on the CPU."""
    g = torch.Generator().manual_seed(seed)
    w = cfg.image_width
    return (torch.rand(STEPS, BATCH, cfg.channels, w, w, generator=g),
            torch.rand(STEPS, BATCH, 1, *cfg.audio_shape, generator=g))


def model(cfg: Sound2SightConfig, seed: int = 0) -> Sound2Sight:
    torch.manual_seed(seed)
    return Sound2Sight(cfg)


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def check_shortcut_convs(cfg: Sound2SightConfig, device: torch.device) -> dict:
    frames, audio = (t.to(device) for t in batch(cfg))
    runs = []
    for plain in (False, True):
        m = model(cfg).to(device)
        if plain:
            plain_convolutions(m)
        torch.manual_seed(1)
        out = m(frames, audio, adv_weight=1e-2)
        out["loss"].backward()
        runs.append((out["loss"].detach().cpu(), {n: p.grad.cpu() for n, p in m.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = runs
    scale = max(float(g.abs().max()) for g in grads_b.values())
    grad = max(float((grads_a[n] - grads_b[n]).abs().max()) for n in grads_b) / scale
    res = {"loss_rel": _max_rel(loss_a, loss_b), "grad_rel_to_largest": grad}
    res["ok"] = grads_a.keys() == grads_b.keys() and res["loss_rel"] < TOL["loss"] and grad < TOL["grad"]
    return res


def check_validation(cfg: Sound2SightConfig, device: torch.device) -> dict:
    frames, audio = batch(cfg)
    m = model(cfg)
    training.recalibrate_batchnorm(m, [(frames, audio)])  # O(1) outputs, so the comparison means something
    out = {}
    for dev in (torch.device("cpu"), device):
        md = copy.deepcopy(m).to(dev)
        out[dev.type] = training.validate(md, frames.to(dev), audio.to(dev), cfg.n_past, STEPS - cfg.n_past,
                                          nsample=3, seed=0)
    cpu, dev = out["cpu"], out[device.type]
    diff = {k: abs(dev[k] - cpu[k]) for k in cpu}
    worst_ssim = max(v for k, v in diff.items() if k.endswith("ssim"))
    worst_psnr = max(v for k, v in diff.items() if k.endswith("psnr"))
    return {"val_ssim": dev["val_ssim"], "val_ssim_cpu": cpu["val_ssim"], "val_psnr": dev["val_psnr"],
            "val_psnr_cpu": cpu["val_psnr"], "max_ssim_diff": worst_ssim, "max_psnr_diff_db": worst_psnr,
            "ok": dev.keys() == cpu.keys() and worst_ssim < TOL["ssim"] and worst_psnr < TOL["psnr_db"]}


def check_metrics(device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    dense = torch.rand(2, 64, 1, 48, 48, generator=g)                    # [gt|pred, N, C, H, W]
    sparse = dense * (torch.rand(2, 64, 1, 48, 48, generator=g) > 0.93)  # ~93% black, as M3SO
    res, ok = {}, True
    for name, (gt, pred) in (("dense", dense), ("sparse", sparse)):
        s_cpu, p_cpu = _score(gt, pred)
        s_dev, p_dev = _score(gt.to(device), pred.to(device))
        res[f"{name}_ssim_diff"] = float((s_dev.cpu() - s_cpu).abs().max())
        res[f"{name}_psnr_diff_db"] = float((p_dev.cpu() - p_cpu).abs().max())
        ok &= res[f"{name}_ssim_diff"] < TOL["ssim"] and res[f"{name}_psnr_diff_db"] < TOL["psnr_db"]
    res["ok"] = ok
    return res


def _score(gt: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and PSNR (float64 ``[N]`` on the CPU) of each frame pair."""
    ssim, psnr = metrics.score_pairs(gt, pred)
    return ssim.cpu(), psnr.cpu()


def check_amp_step(cfg: Sound2SightConfig, device: torch.device, steps: int = 4) -> dict:
    """``steps`` training steps with and without ``--amp`` from the same weights. On CUDA the
    gradient scaler starts at 2**16 and skips the steps whose scaled gradients overflow while it
    halves that scale, as it is meant to; so: every loss finite, the first losses close, and the
    weights moved by the last step."""
    frames, audio = (t.to(device) for t in batch(cfg))
    res = {}
    for amp in (False, True):
        m = model(cfg).to(device).train()
        opt = m.configure_optimizer(0.002, 0.0025, 0.9)
        before = [p.detach().clone() for p in m.parameters()]
        scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
        torch.manual_seed(1)
        losses = [training.train_step(m, opt, frames, audio, 1e-2, scaler=scaler, amp=amp)["loss"]
                  for _ in range(steps)]
        moved = sum(int(not torch.equal(a, p.detach())) for a, p in zip(before, m.parameters()))
        res["amp" if amp else "fp32"] = {"losses": losses, "params_moved": moved,
                                         "scale": scaler.get_scale() if scaler.is_enabled() else None}
    fp32, amp = res["fp32"]["losses"][0], res["amp"]["losses"][0]
    res["first_loss_rel"] = abs(amp - fp32) / abs(fp32)
    finite = all(math.isfinite(x) for r in (res["fp32"], res["amp"]) for x in r["losses"])
    res["ok"] = (finite and res["fp32"]["params_moved"] > 0 and res["amp"]["params_moved"] > 0
                 and res["first_loss_rel"] < TOL["amp_loss"])
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="the device to check against the CPU (auto: CUDA when present)")
    args = p.parse_args(argv)
    device = get_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 on both sides: differences are rounding only
    torch.backends.cudnn.allow_tf32 = False
    cfg = Sound2SightConfig(**CONFIG)
    result = {"device": str(device), "torch": torch.__version__,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "shortcut_convs": check_shortcut_convs(cfg, device), "validation": check_validation(cfg, device),
              "metrics": check_metrics(device), "amp_step": check_amp_step(cfg, device)}
    result["ok"] = all(v["ok"] for v in result.values() if isinstance(v, dict))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
