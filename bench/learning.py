"""Time to quality: how long the demo configuration trains before it beats copy-last-frame.

Runs ``python train_sound2sight.py --demo`` (its data, its model, its budget; any extra
flags after ``--`` override them) in a fresh log folder, then reads the run's
``metrics.csv`` and prints ONE JSON line:

* ``first_win``: the first validated epoch (the demo validates every 3rd, ``--val_every``)
  whose validation SSIM *and* PSNR (paper protocol: per
  clip and frame the max over ``--val_nsample`` prior samples) both beat copy-last-frame
  on the same validation clips, with the iterations and the wall-clock training seconds
  (training + validation, cumulated over epochs) it took; ``null`` if no epoch did;
* ``curve``: per validated epoch the iterations, cumulative seconds and the four validation figures;
* ``final``: the demo's closing evaluation (test clips x ``--eval_nsample`` samples);
* ``wall_s``: the whole command, data generation and evaluation included.

    python bench/learning.py                               # the demo as shipped
    python bench/learning.py -- --batch_size 32 --lr 0.001  # a variant

Timings are only comparable between runs on one machine with nothing else running.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cli import ArgumentParser, plain_text  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    p = ArgumentParser(description=plain_text(__doc__.splitlines()[0]))
    p.add_argument("--log_dir", default="", help="run folder (default: a fresh temporary folder, removed after)")
    p.add_argument("--python", default=sys.executable)
    return p.parse_args(argv), extra


def first_win(rows: list[dict[str, float]]) -> dict[str, float] | None:
    """The first row whose validation SSIM and PSNR both exceed copy-last-frame's, else None."""
    for r in rows:
        if r["val_ssim"] > r["val_copy_last_ssim"] and r["val_psnr"] > r["val_copy_last_psnr"]:
            return r
    return None


def read_curve(metrics_csv: Path, iters_per_epoch: int) -> list[dict[str, float]]:
    """metrics.csv -> one row per validated epoch (``--val_every``) with cumulative iterations and
    seconds (the epochs between validations counted too)."""
    rows, seconds = [], 0.0
    with open(metrics_csv, newline="") as f:
        for r in csv.DictReader(f):
            seconds += float(r["seconds"])
            if not r.get("val_ssim"):  # an epoch without validation
                continue
            epoch = int(r["epoch"])
            rows.append({"epoch": epoch, "iterations": (epoch + 1) * iters_per_epoch, "seconds": round(seconds, 1),
                         **{k: round(float(r[k]), 5) for k in ("val_ssim", "val_copy_last_ssim", "val_psnr",
                                                              "val_copy_last_psnr", "val_min_mse", "train_mse_loss")}})
    return rows


def run(log_dir: Path, extra: list[str], python: str) -> dict:
    cmd = [python, str(ROOT / "train_sound2sight.py"), "--demo", "--log_dir", str(log_dir), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"training failed ({proc.returncode}): " + " | ".join(tail))
    cfg = json.loads((log_dir / "config.json").read_text())
    args = cfg["args"]
    clips = cfg["data"]["splits"]["train"]
    per_epoch = clips // args["batch_size"]
    if args["epoch_size"] > 0:
        per_epoch = min(per_epoch, args["epoch_size"])
    curve = read_curve(log_dir / "metrics.csv", per_epoch)
    win = first_win(curve)
    final = None
    # the demo's closing evaluation: the one folder under eval/ (one per checkpoint and settings)
    found = sorted((log_dir / "eval").glob("*/metrics.json"), key=lambda f: f.stat().st_mtime)
    metrics_json = found[-1] if found else log_dir / "eval" / "metrics.json"
    if metrics_json.is_file():
        m = json.loads(metrics_json.read_text())
        final = {"clips": m["num_clips"], "nsample": m["nsample"],
                 "ssim": round(m["paper"]["ssim"], 4), "psnr": round(m["paper"]["psnr"], 3),
                 "copy_ssim": round(m["copy_last_frame"]["paper"]["ssim"], 4),
                 "copy_psnr": round(m["copy_last_frame"]["paper"]["psnr"], 3),
                 "diversity": m.get("diversity")}
    return {"bench": "learning", "command": " ".join(cmd[1:]), "extra": extra,
            "first_win": None if win is None else {k: win[k] for k in ("epoch", "iterations", "seconds")},
            "final": final, "wall_s": round(wall, 1), "iterations_per_epoch": per_epoch,
            "batch_size": args["batch_size"], "nf": args["nf"], "train_clips": clips,
            "cpu": platform.processor() or platform.machine(), "threads": os.cpu_count(), "curve": curve}


def main(argv: list[str] | None = None) -> dict:
    args, extra = parse_args(argv)
    if args.log_dir:
        result = run(Path(args.log_dir), extra, args.python)
    else:
        with tempfile.TemporaryDirectory(prefix="s2s_learning_") as tmp:
            result = run(Path(tmp) / "run", extra, args.python)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
