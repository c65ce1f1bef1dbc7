"""Seconds and FLOPs per Sound2Sight training iteration: original loop structure vs vectorised.

One iteration = the full loss with the discriminator and the generator's adversarial term,
forward + backward + optimiser step, on random data of the training shape (batch 16,
n_past 5, n_future 15, 48x48, default dimensions). Three variants are timed side by side,
interleaved iteration by iteration so that load from other processes hits them alike:

- ``original``: ``tests/stepwise.py``'s ``train_step`` (per-step encoder calls, a transformer
  re-run over every prefix, per-step LSTM cells, the discriminator window by window, two
  backward passes) with NCHW weights as the original had;
- ``fp32``: ``Sound2Sight.forward`` + one ``loss.backward()``;
- ``bf16``: the same under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

The fp32 variant's iteration is also split into forward, backward and optimiser step
(``ms_forward``, ``ms_backward``, ``ms_optimizer``: Adam's fused kernel), and the for-loop
Adam is timed on the same gradients (``ms_optimizer_for_loop``).

Prints ONE JSON line. FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` over one
forward + backward. By default both sides compute the released maths (the discriminator's
own encoders stay at their initial weights); the reference also computes, as the original
did, the gradients its generator loss leaves in those encoders before discarding them,
so it counts the original's ~528 GFLOP. ``--disc_train_encoders`` times the variant that
trains them instead (both sides then train them). On a CPU without bf16 instructions
(``cpu_bf16_native`` false) bf16 is emulated and very slow: ``--bf16_iters`` bounds its cost.
Other processes on the machine change absolute times a lot; compare the ratios.

``--plain_convs`` times a fourth variant in the same interleaving: the fp32 step of the same
model with every shortcut convolution of ``models.layers`` (the encoders' single-channel
first convolution as ``SpaceToDepthConv2d``; the encoders' last and the decoder's first
layers as matrix products, ``MatmulConv2d`` / ``MatmulConvTranspose2d``) replaced by the plain
``nn.Conv2d`` / ``nn.ConvTranspose2d`` (the same values; the reference always runs those, as
the release did): ``s_per_iter_plain`` and ``shortcut_speedup``, what the shortcuts buy. (The
decoder's last layer, ``PhasedConvTranspose2d``, takes its shortcut only without gradients:
it changes sampling, not a training step.)

``--demo`` times the demo's shape instead, read from ``demo.DEFAULTS`` (``train_sound2sight.py
--demo``: batch 16, 5 + 10 frames, conv width 16, 128-wide LSTMs and transformers); any
explicit flag still overrides it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the step-by-step reference lives there

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import stepwise  # noqa: E402
from cli import ArgumentParser, plain_text  # noqa: E402
import demo  # noqa: E402
from models.layers import SHORTCUT_CONVS, plain_convolutions  # noqa: E402
from models.sound2sight import Sound2Sight, Sound2SightConfig  # noqa: E402
from runtime import get_device  # noqa: E402
from errors import run_cli  # noqa: E402
from runtime import cpu_name, match_param_layout, native_bf16, seed_everything  # noqa: E402

SHAPE_FLAGS = ("batch_size", "nf", "rnn_size", "disc_rnn_size", "n_past", "n_future")
ADV_WEIGHT = 1e-4  # beta_gen_loss: the generator's adversarial term is on, as after epoch 0


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=plain_text(__doc__.splitlines()[0]))
    p.add_argument("--demo", action="store_true",
                   help="the demo's shape (demo.DEFAULTS: 5 + 10 frames, batch 16, --nf 16, 128-wide LSTMs)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--nf", type=int, default=64, help="base conv width (the demo: 16)")
    p.add_argument("--rnn_size", type=int, default=256, help="width of the LSTMs and transformers (the demo: 128)")
    p.add_argument("--disc_rnn_size", type=int, default=256, help="discriminator LSTM width (the demo: 128)")
    p.add_argument("--n_past", type=int, default=5)
    p.add_argument("--n_future", type=int, default=15)
    p.add_argument("--image_width", type=int, default=48)
    p.add_argument("--iters", type=int, default=5, help="timed iterations per variant (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations per variant first")
    p.add_argument("--bf16_iters", type=int, default=None,
                   help="timed bf16 iterations (default --iters, or 1 on a CPU without native bf16, which "
                        "emulates it at over a minute per iteration; 0 skips bf16)")
    p.add_argument("--disc_train_encoders", action="store_true",
                   help="time the variant whose discriminator encoders train (not the released maths)")
    p.add_argument("--plain_convs", action="store_true",
                   help="also time the fp32 step with every shortcut convolution of models.layers (space-to-depth, "
                        "matrix products) as the plain nn.Conv2d / nn.ConvTranspose2d (same values), interleaved")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    first, _ = p.parse_known_args(argv)
    if first.demo:  # every shape flag above that the demo sets, from the demo's own defaults
        p.set_defaults(**{k: v for k, v in demo.DEFAULTS.items() if k in SHAPE_FLAGS})
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from errors import InputError

    args = parse_args(argv)
    for name in ("batch_size", "iters", "n_past", "n_future"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be >= 1, got {getattr(args, name)}")
    try:
        cfg = Sound2SightConfig(image_width=args.image_width, n_past=args.n_past, nf=args.nf, rnn_size=args.rnn_size,
                                disc_rnn_size=args.disc_rnn_size, disc_train_encoders=args.disc_train_encoders)
    except ValueError as err:
        raise InputError(f"--image_width: {err}") from None
    device = get_device(args.device)
    seed_everything(args.seed)
    steps = args.n_past + args.n_future
    frames = torch.rand(steps, args.batch_size, cfg.channels, cfg.image_width, cfg.image_width, device=device)
    audio = torch.rand(steps, args.batch_size, 1, *cfg.audio_shape, device=device)

    def fresh() -> tuple[Sound2Sight, torch.optim.Optimizer]:
        torch.manual_seed(args.seed)
        model = Sound2Sight(cfg).to(device).train()
        return model, model.configure_optimizer(0.002, 0.0025, 0.9)

    models = {name: fresh() for name in ("original", "fp32", "bf16") + (("plain",) if args.plain_convs else ())}
    for name, (model, _) in models.items():
        if name in ("original", "plain"):  # the release had plain convolutions
            plain_convolutions(model)
    ref = models["original"][0]
    ref.to(memory_format=torch.contiguous_format)  # the original's NCHW layout
    # The original's frozen discriminator encoders still required grad (they sat in an
    # optimiser and got zeroed gradients), so its generator backward computed their weight
    # gradients; so does the reference (they are still not optimised: not in its optimiser).
    ref.disc.requires_grad_(True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    parts: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": [], "optimizer_for_loop": []}
    _, fp32_opt = models["fp32"]
    # the release's optimiser without the fused kernel, timed on the fp32 variant's gradients
    # (it updates the same weights once more: harmless for timing)
    for_loop = torch.optim.Adam([{"params": g["params"], "lr": g["lr"]} for g in fp32_opt.param_groups],
                                betas=(0.9, 0.999), foreach=False, fused=False)

    def vectorised(model, opt, bf16: bool, timed: bool = True):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(frames, audio, adv_weight=ADV_WEIGHT)
        sync()
        t1 = time.perf_counter()
        out["loss"].backward()
        sync()
        t2 = time.perf_counter()
        match_param_layout(opt)
        opt.step()
        sync()
        if timed:
            parts["forward"].append(t1 - t0)
            parts["backward"].append(t2 - t1)
            parts["optimizer"].append(time.perf_counter() - t2)

    steps_fn = {
        "original": lambda: stepwise.train_step(*models["original"], frames, audio, adv_weight=ADV_WEIGHT),
        "fp32": lambda: vectorised(*models["fp32"], bf16=False),
        "bf16": lambda: vectorised(*models["bf16"], bf16=True, timed=False),
    }
    if args.plain_convs:
        steps_fn["plain"] = lambda: vectorised(*models["plain"], bf16=False, timed=False)
    if args.bf16_iters is None:  # emulated bf16 takes over a minute per iteration: time it once
        bf16_iters = args.iters if device.type != "cpu" or native_bf16() else 1
    else:
        bf16_iters = args.bf16_iters

    for name, fn in steps_fn.items():
        for _ in range(args.warmup if name != "bf16" or bf16_iters else 0):
            fn()
    times = {name: [] for name in steps_fn}
    for i in range(args.iters):
        for name, fn in steps_fn.items():
            if name == "bf16" and i >= bf16_iters:
                continue
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    med = {name: (statistics.median(ts) if ts else None) for name, ts in times.items()}
    for _ in range(args.iters):  # the for-loop Adam on the fp32 variant's last gradients
        sync()
        start = time.perf_counter()
        for_loop.step()
        sync()
        parts["optimizer_for_loop"].append(time.perf_counter() - start)
    split = {f"ms_{k}": round(1000 * statistics.median(v), 2) for k, v in parts.items() if v}

    def flops(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e9

    model, _ = models["fp32"]
    gflop = flops(lambda: model(frames, audio, adv_weight=ADV_WEIGHT)["loss"].backward())
    model.zero_grad(set_to_none=True)
    ref_model, _ = models["original"]
    gflop_orig = flops(lambda: stepwise.classic_backward(
        ref_model, stepwise.forward(ref_model, frames, audio, adv_weight=ADV_WEIGHT)))
    ref_model.zero_grad(set_to_none=True)

    result = {
        "s_per_iter": round(med["fp32"], 4),
        "s_per_iter_bf16": None if med["bf16"] is None else round(med["bf16"], 4),
        "s_per_iter_original": round(med["original"], 4),
        "speedup": round(med["original"] / med["fp32"], 3),
        "speedup_bf16": None if med["bf16"] is None else round(med["original"] / med["bf16"], 3),
        "bf16_iters": bf16_iters, "cpu_bf16_native": native_bf16(),
        "gflop_per_iter": round(gflop, 2),
        "gflop_per_s": round(gflop / med["fp32"], 1),
        **split,
        "gflop_per_iter_original": round(gflop_orig, 2),
        "s_per_iter_plain": round(med["plain"], 4) if "plain" in med else None,
        "shortcut_speedup": round(med["plain"] / med["fp32"], 3) if "plain" in med else None,
        "shortcut_convs": sorted({type(m).__name__ for m in model.modules() if type(m) in SHORTCUT_CONVS}),
        "disc_train_encoders": args.disc_train_encoders,
        "batch_size": args.batch_size, "n_past": args.n_past, "n_future": args.n_future,
        "image_width": args.image_width, "nf": args.nf,
        "rnn_size": args.rnn_size, "disc_rnn_size": args.disc_rnn_size, "iters": args.iters, "device": str(device),
        "torch_threads": torch.get_num_threads(), "cpu": cpu_name(), "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run_cli(main)
