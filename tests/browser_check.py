"""The browser check: an evaluation's report.html opened in a real headless Chromium.

    python tests/browser_check.py                 # what .ci/run runs (needs Debian's chromium package)
    python tests/browser_check.py --report PATH   # check an existing report.html

Without ``--report`` it makes a tiny M3SO-NB, trains a tiny model for one epoch and evaluates it
(about a minute on 2 cores), then opens the evaluation's ``report.html?check`` from disk: every
video must load with the clip's duration and its sound must decode to that length (not silent),
every image must load, and a screenshot of the page must not be blank. Prints one line per
finding and exits non-zero on any failure. Not a pytest test: the suite itself needs no browser.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def make_report(tmp: Path) -> Path:
    """A tiny evaluation's report.html."""
    import generate_sound2sight
    import train_sound2sight
    from M3SO_Gen_Code.generate_m3so import generate

    data = generate(tmp / "data", num_train=16, num_test=4, num_frames=10, no_block=True, seed=3, progress=False)
    run = train_sound2sight.main(["--data_root", str(data), "--log_dir", str(tmp / "run"), "--g_dim", "16",
                                  "--rnn_size", "32", "--z_dim", "4", "--dim_ff", "32", "--disc_rnn_size", "16",
                                  "--nhead", "2", "--nf", "8", "--n_past", "3", "--n_future", "3", "--n_eval", "8",
                                  "--batch_size", "4", "--data_threads", "0", "--val_nsample", "1", "--device", "cpu",
                                  "--save_every", "0", "--niter", "1", "--epoch_size", "2", "--bn_recalibrate", "1"])
    result = generate_sound2sight.main(["--model_path", str(run), "--n_future", "3", "--nsample", "2", "--N", "4", "--num_gifs", "2",
                                        "--shuffle_audio", "--device", "cpu", "--no_tensorboard"])
    return Path(result["log_dir"]) / "report.html"


def chromium(*args: str, profile: Path) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("browser check: no chromium on PATH; install Debian's package: apt-get install -y chromium")
    proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)
    return proc.stdout


def check(report: Path, seconds: float | None) -> list[str]:
    """Failures found in ``report`` (empty: it passed); ``seconds``: each video's expected duration."""
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        dom = chromium("--virtual-time-budget=15000", "--dump-dom", report.resolve().as_uri() + "?check",
                       profile=Path(tmp) / "a")
        found = re.search(r'<pre id="check">(.*?)</pre>', dom, flags=re.S)
        if not found or not found.group(1).strip():
            return [f"{report}: the page's check did not run (no JSON in <pre id=check>)"]
        res = json.loads(found.group(1))
        if not res["videos"]:
            failures.append("no video on the page")
        for v in res["videos"]:
            line = (f"video {v['name']}: duration {v['duration']} s, width {v['width']} px, sound {v['audio_s']} s "
                    f"(peak {v['peak']})")
            print(line)
            ok = v.get("duration") and v["width"] > 0 and v.get("audio_s") and (v.get("peak") or 0) > 0
            if ok and seconds is not None:
                ok = abs(v["duration"] - seconds) < 0.05 and abs(v["audio_s"] - seconds) < 0.1
            if not ok:
                failures.append("FAILED " + line + (f" {v.get('error') or v.get('audio_error') or ''}"))
        for img in res["images"]:
            print(f"image {img['src']}: {img['width']} px wide")
            if not img["width"]:
                failures.append(f"FAILED image {img['src']} did not load")
        shot = Path(tmp) / "shot.png"
        chromium(f"--screenshot={shot}", "--window-size=1280,1600", "--virtual-time-budget=5000",
                 report.resolve().as_uri(), profile=Path(tmp) / "b")
        if not shot.is_file():
            failures.append("FAILED no screenshot")
        else:
            import numpy as np
            from PIL import Image

            pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
            print(f"screenshot: {pixels.shape[1]}x{pixels.shape[0]}, pixel spread {pixels.std():.1f}")
            if pixels.std() < 5:
                failures.append("FAILED the screenshot is blank")
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report", default="", help="an existing report.html (default: make a tiny evaluation's)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.report:
            report, seconds = Path(args.report), None
        else:
            report, seconds = make_report(Path(tmp)), 6 / 10  # 3 + 3 frames at 10 fps
        failures = check(report, seconds)
    for f in failures:
        print(f, file=sys.stderr)
    print("browser check: " + ("passed" if not failures else f"{len(failures)} failure(s)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
