"""What the per-epoch prior monitor costs: ``prior_monitor.prior_stats`` against an epoch of training.

At the demo's size (``train_sound2sight.py --demo``: batch 16, 5 + 10 training frames, conv
width 16, a validation batch of 64 clips x 15 frames, 50 iterations per epoch), times one
training iteration and one call of the monitor, interleaved so that load from other
processes hits both alike, and prints ONE JSON line with the medians and the monitor's
share of an epoch of ``--epoch_size`` iterations (the issue's target: at most 5%).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import prior_monitor  # noqa: E402
from cli import ArgumentParser, HelpFormatter, plain_text  # noqa: E402
import training  # noqa: E402
from models.sound2sight import Sound2Sight, Sound2SightConfig  # noqa: E402
from errors import InputError, run_cli  # noqa: E402
from runtime import cpu_name, seed_everything  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=plain_text(__doc__), formatter_class=HelpFormatter)
    p.add_argument("--iters", type=int, default=10, help="timed repetitions of each (median reported)")
    p.add_argument("--epoch_size", type=int, default=50, help="iterations per epoch (the demo's 50)")
    p.add_argument("--val_clips", type=int, default=64, help="clips in the validation batch (the demo's 64)")
    p.add_argument("--nf", type=int, default=16)
    args = p.parse_args(argv)
    if args.iters < 1 or args.epoch_size < 1 or args.val_clips < 2:
        raise InputError("--iters and --epoch_size must be >= 1, --val_clips >= 2")
    seed_everything(0)
    model = Sound2Sight(Sound2SightConfig(nf=args.nf, n_past=5))
    opt = model.configure_optimizer(0.002, 0.0025, 0.9)
    frames, audio = torch.rand(15, 16, 1, 48, 48), torch.rand(15, 16, 1, 23, 21)
    val_frames, val_audio = torch.rand(15, args.val_clips, 1, 48, 48), torch.rand(15, args.val_clips, 1, 23, 21)
    step_s, monitor_s = [], []
    for i in range(args.iters + 1):  # the first round warms up
        t0 = time.perf_counter()
        training.train_step(model, opt, frames, audio, 1e-4)
        t1 = time.perf_counter()
        prior_monitor.prior_stats(model, val_frames, val_audio)
        t2 = time.perf_counter()
        if i:
            step_s.append(t1 - t0)
            monitor_s.append(t2 - t1)
    step, monitor = statistics.median(step_s), statistics.median(monitor_s)
    out = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "train_step_s": round(step, 4),
           "monitor_s": round(monitor, 4), "epoch_size": args.epoch_size,
           "monitor_share_of_epoch": round(monitor / (monitor + args.epoch_size * step), 4)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    run_cli(main)
