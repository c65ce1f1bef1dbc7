"""Throughput of ``data.prepare_av`` with 1 and 2 worker processes, side by side.

Generates ``--videos`` synthetic videos (mpeg4 + aac in mp4; a moving textured square on
a drifting gradient, a chirp for sound) and prepares them twice into temporary folders.
Prints one JSON line: output frames per second (at the output fps) and source frames
decoded per second for each worker count, and the 2-vs-1 speed ratio.

    python bench/prepare_av.py [--videos 6 --seconds 10 --fps 25 --width 320 --height 240]
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cli import ArgumentParser, plain_text  # noqa: E402
from data.prepare_av import prepare  # noqa: E402
from errors import run_cli  # noqa: E402


def make_video(path: Path, seconds: float, fps: int, width: int, height: int, seed: int) -> None:
    """Write one synthetic mp4 (mpeg4 video, aac mono 16 kHz audio)."""
    import av

    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    ys, xs = np.mgrid[:height, :width]
    container = av.open(str(path), "w")
    vs = container.add_stream("mpeg4", rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    aus = container.add_stream("aac", rate=16000)
    aus.layout = "mono"
    n = int(seconds * fps)
    for i in range(n):
        img = np.empty((height, width, 3), np.uint8)  # [H, W, 3]
        img[..., 0] = (xs + 3 * i) % 256
        img[..., 1] = (ys + 2 * i) % 256
        img[..., 2] = 128
        x, y = (7 * i) % (width - 48), (5 * i) % (height - 48)
        img[y:y + 48, x:x + 48] = texture
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        for packet in vs.encode(frame):
            container.mux(packet)
    for packet in vs.encode():
        container.mux(packet)
    t = np.arange(int(seconds * 16000)) / 16000
    wave = (0.4 * np.sin(2 * np.pi * (200 + 150 * t) * t)).astype(np.float32)
    step = aus.codec_context.frame_size or 1024
    for s in range(0, len(wave), step):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[None, s:s + step]), format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, s, Fraction(1, 16000)
        for packet in aus.encode(frame):
            container.mux(packet)
    for packet in aus.encode():
        container.mux(packet)
    container.close()


def main(argv=None) -> dict:
    p = ArgumentParser(description=plain_text(__doc__.split("\n\n")[0]))
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for v in range(args.videos):
            make_video(src / f"v{v}.mp4", args.seconds, args.fps, args.width, args.height, seed=v)
        result = {"bench": "prepare_av", "videos": args.videos, "seconds_each": args.seconds,
                  "source": f"{args.width}x{args.height}@{args.fps}", "output": "64x64 RGB @10 fps"}
        for workers in (1, 2):
            start = time.perf_counter()
            dest = prepare(src, Path(tmp) / f"ds{workers}", workers=workers, test_fraction=0.0, progress=False,
                           previews=False)
            elapsed = time.perf_counter() - start
            meta = json.loads((dest / "dataset.json").read_text())
            out_frames = meta["splits"]["train"] * meta["num_frames"]
            result[f"w{workers}_seconds"] = round(elapsed, 3)
            result[f"w{workers}_output_frames_per_s"] = round(out_frames / elapsed, 1)
            result[f"w{workers}_source_frames_per_s"] = round(args.videos * args.seconds * args.fps / elapsed, 1)
        result["speedup_2_vs_1"] = round(result["w1_seconds"] / result["w2_seconds"], 3)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run_cli(main)
