"""Every script over degenerate settings: one training clip, one test clip, a batch larger than a
split, one sample, one predicted frame. Each works, or says what is wrong in one line at the
start; none prints a traceback. Real processes, so what a user sees is what is checked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--g_dim", "16", "--rnn_size", "32", "--z_dim", "4", "--dim_ff", "32", "--disc_rnn_size", "16",
        "--nhead", "2", "--nf", "8", "--data_threads", "0", "--device", "cpu", "--save_every", "0",
        "--bn_recalibrate", "1"]


def script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def one_clip_data(tmp_path_factory) -> Path:
    """An M3SO-NB of one training and one test clip of 6 frames, made by the generator's own CLI."""
    dest = tmp_path_factory.mktemp("one") / "data"
    proc = script("M3SO_Gen_Code/generate_m3so.py", "--dest", str(dest), "--num_train", "1", "--num_test", "1",
                  "--num_frames", "6", "--no_block", "--seed", "2")
    assert proc.returncode == 0 and (dest / "dataset.json").is_file(), proc.stderr[-2000:]
    return dest


def test_a_batch_larger_than_the_training_split_is_one_line_before_any_work(one_clip_data, tmp_path):
    proc = script("train_sound2sight.py", "--data_root", str(one_clip_data), "--log_dir", str(tmp_path / "r"),
                  *TINY, "--n_past", "2", "--n_future", "1", "--batch_size", "4", "--niter", "1")
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "--batch_size" in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_one_clip_one_sample_one_future_frame_trains_and_evaluates(one_clip_data, tmp_path):
    run = tmp_path / "run"
    proc = script("train_sound2sight.py", "--data_root", str(one_clip_data), "--log_dir", str(run), *TINY,
                  "--n_past", "2", "--n_future", "1", "--n_eval", "3", "--batch_size", "1", "--val_nsample", "1",
                  "--niter", "2", "--epoch_size", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "checkpoints" / "last.pt").is_file()
    for extra in (["--nsample", "1", "--N", "5", "--batch_size", "8", "--n_future", "1"],  # more than the split
                  ["--nsample", "1", "--n_future", "1", "--shuffle_audio", "--protocol", "both"]):
        proc = script("generate_sound2sight.py", "--model_path", str(run), "--data_root", str(one_clip_data),
                      "--n_past", "2", "--device", "cpu", "--num_gifs", "1", *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
    evals = sorted((run / "eval").iterdir())
    assert len(evals) == 2  # two settings, two folders: the first is kept
    assert all(json.loads((d / "metrics.json").read_text())["num_clips"] == 1 for d in evals)
    # each GIF's twin video carries the clip's sound, as long as its 3 frames at 10 fps
    from media import read_video

    page = (evals[0] / "report.html").read_text()  # one self-contained page: the video inside it
    assert page.count("data:video/mp4;base64,") == 1 and "copy last frame" in page and "http" not in page
    frames, sound, rate = read_video(evals[0] / "gifs" / "clip_00000.mp4")
    assert frames.shape[0] == 3 and sound is not None and abs(len(sound) / rate - 0.3) < 0.03
