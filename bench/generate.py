"""Benchmark: M3SO generation speed, 1 and 2 workers, against the original's loop structure.

Prints one JSON line::

    {"clips_per_s_1w", "clips_per_s_2w", "baseline_clips_per_s", "speedup_vs_original",
     "seconds_for_11000", ...}

* ``clips_per_s_{1,2}w``: :func:`generate_m3so.generate` of M3SO (frames, audio, STFT,
  all files written to a temporary folder, no previews), wall time including process
  start-up, with 1 and 2 workers.
* ``baseline_clips_per_s``: a minimal re-creation of the ORIGINAL generator's loop
  structure, timed in the same run: per clip, a Python loop over frames for motion and
  pasting and a Python loop over audio samples for the tones (frames and audio only: no
  STFT, no writing, so it flatters the original).
* ``speedup_vs_original`` = 2-worker rate / baseline rate.
* ``seconds_for_11000``: measured with ``--full`` (10,000 train + 1,000 test, the target:
  under a minute on 2 cores), else extrapolated from the 2-worker rate.
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from cli import ArgumentParser
from M3SO_Gen_Code.generate_m3so import generate
from M3SO_Gen_Code.mnist import load_digits
from errors import InputError, run_cli


def original_style_clips(n: int, images: np.ndarray, labels: np.ndarray, seed: int = 0,
                         frame_size: int = 48, num_frames: int = 30, digit_size: int = 28,
                         sample_rate: int = 4400, samples_per_frame: int = 440) -> list[tuple[np.ndarray, np.ndarray]]:
    """The original's loop structure, re-created minimally (frames and audio only).

    Per clip and frame: a fresh PIL canvas, the digit pasted at its integer position and
    read back as a float array, the wall test per axis in Python; per audio sample: one
    Python iteration computing two numpy sines and storing one element (as the original's
    per-frame tone routine did). Deliberately unvectorised: it is the baseline.
    Returns [(frames uint8 [T, H, W], audio float32 [T*L])].
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    low, high = (300.0, 500.0, 700.0, 900.0), (1300.0, 1500.0, 1700.0, 1900.0)
    lim = frame_size - digit_size
    out = []
    for _ in range(n):
        k = int(rng.integers(len(images)))
        digit, label = Image.fromarray(images[k]), int(labels[k])
        theta = rng.uniform(-np.pi, np.pi)
        speed = int(rng.integers(2, 7))
        vel = [speed * math.cos(theta), speed * math.sin(theta)]
        pos = [rng.uniform(0, lim), rng.uniform(0, lim)]
        frames = np.zeros((num_frames, frame_size, frame_size), dtype=np.uint8)
        audio = np.zeros((num_frames, samples_per_frame), dtype=np.float32)
        for t in range(num_frames):
            canvas = Image.new("L", (frame_size, frame_size))
            canvas.paste(digit, (int(round(pos[0])), int(round(pos[1]))))
            flat = canvas.get_flattened_data() if hasattr(canvas, "get_flattened_data") else canvas.getdata()
            pixels = np.asarray(flat, dtype=np.float32).reshape(frame_size, frame_size) / 255.0
            frames[t] = (pixels * 255).clip(0, 255).astype(np.uint8)
            bounce = False
            for axis in range(2):
                if not -2 <= pos[axis] + vel[axis] <= lim + 2:
                    vel[axis] = -vel[axis]
                    bounce = True
            pos = [pos[0] + vel[0], pos[1] + vel[1]]
            sym = 11 if bounce else label
            f_low, f_high = low[sym // 4], high[sym % 4]
            level = 0.3 + 0.7 * math.hypot(max(pos[0], 0), max(pos[1], 0)) / (math.sqrt(2) * (lim + 2))
            start = t * samples_per_frame
            for i in range(samples_per_frame):           # one Python iteration per audio sample
                p = (start + i + 1) / sample_rate
                audio[t, i] = level * (np.sin(2 * np.pi * f_low * p) + np.sin(2 * np.pi * f_high * p)) / 2
        out.append((frames, audio.reshape(-1)))
    return out


def time_generate(num_train: int, num_test: int, workers: int) -> float:
    """Wall seconds of one M3SO generation into a temporary folder (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="bench_gen_") as tmp:
        start = time.perf_counter()
        generate(Path(tmp) / "m3so", num_train=num_train, num_test=num_test, seed=0, workers=workers,
                 progress=False)
        return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict:
    p = ArgumentParser(description="Clips per second of the M3SO generator vs the original's loops.")
    p.add_argument("--num_clips", type=int, default=2000, help="clips per timed generation (train split)")
    p.add_argument("--baseline_clips", type=int, default=100, help="clips for the original-style baseline")
    p.add_argument("--full", action="store_true", help="time the full 10,000 + 1,000 clips instead")
    args = p.parse_args(argv)
    if args.num_clips < 1 or args.baseline_clips < 1:
        raise InputError("--num_clips and --baseline_clips must be >= 1")
    num_train, num_test = (10000, 1000) if args.full else (args.num_clips, 0)
    total = num_train + num_test

    sec_1w = time_generate(num_train, num_test, workers=1)
    sec_2w = time_generate(num_train, num_test, workers=2)

    images, labels, _ = load_digits("train", None)
    start = time.perf_counter()
    original_style_clips(args.baseline_clips, images, labels)
    sec_base = time.perf_counter() - start

    rate_1w, rate_2w, rate_base = total / sec_1w, total / sec_2w, args.baseline_clips / sec_base
    result = {
        "clips_per_s_1w": round(rate_1w, 1),
        "clips_per_s_2w": round(rate_2w, 1),
        "baseline_clips_per_s": round(rate_base, 1),
        "speedup_vs_original": round(rate_2w / rate_base, 1),
        "seconds_for_11000": round(sec_2w if args.full else 11000 / rate_2w, 1),
        "seconds_for_11000_measured": bool(args.full),
        "clips_timed": total,
        "baseline_clips": args.baseline_clips,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run_cli(main)
