"""Real video end to end: encode videos with sound -> prepare_av -> train one epoch -> evaluate."""
from __future__ import annotations

import json

import numpy as np
import pytest

import generate_sound2sight
import train_sound2sight
from data.prepare_av import prepare
from test_prepare_av import write_video
from utils import InputError

TINY = ["--g_dim", "16", "--rnn_size", "32", "--z_dim", "4", "--dim_ff", "32", "--disc_rnn_size", "16",
        "--nhead", "2", "--n_past", "3", "--n_future", "3", "--n_eval", "6", "--batch_size", "2",
        "--data_threads", "0", "--val_nsample", "2", "--device", "cpu", "--niter", "1", "--epoch_size", "2"]


@pytest.fixture(scope="module")
def av_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("av")
    src = tmp / "videos"
    src.mkdir()
    for i in range(3):
        write_video(src / f"clip{i}.mp4", fps=25, seconds=2.0 + 0.5 * i)
    return prepare(src, tmp / "ds", seq_len=6, stride=3, test_fraction=0.34, seed=0, progress=False)


@pytest.mark.parametrize("dataset", ["av", "drums"])
def test_prepare_train_evaluate(tmp_path, av_data, dataset):
    meta = json.loads((av_data / "dataset.json").read_text())
    assert (meta["image_size"], meta["channels"], meta["stft"]["shape"]) == (64, 3, [45, 17])
    log = train_sound2sight.main(["--dataset", dataset, "--data_root", str(av_data),
                                  "--log_dir", str(tmp_path / "run"), *TINY])
    cfg = json.loads((log / "config.json").read_text())["model_config"]
    # the preset / the folder's dataset.json chose the shapes: no --image_width/--channels given
    assert (cfg["image_width"], cfg["channels"], cfg["audio_shape"]) == (64, 3, [45, 17])
    m = generate_sound2sight.main(["--model_path", str(log), "--data_root", str(av_data), "--dataset", dataset,
                                   "--n_past", "3", "--n_future", "3", "--nsample", "2", "--batch_size", "2",
                                   "--num_gifs", "1", "--device", "cpu"])
    assert m["num_clips"] >= 1 and len(m["paper"]["ssim_per_frame"]) == 3
    assert np.isfinite(m["paper"]["psnr"]) and 0 < m["paper"]["ssim"] <= 1
    assert (log / "eval" / "gifs").is_dir() and any((log / "eval" / "gifs").iterdir())


def test_drums_preset_refuses_a_grey_checkpoint(tmp_path):
    """An M3SO (1x48x48) checkpoint is not a drums model: the preset says so by name."""
    from M3SO_Gen_Code.generate_m3so import generate

    data = generate(tmp_path / "m3so", num_train=4, num_test=2, num_frames=8, no_block=True, progress=False)
    log = train_sound2sight.main(["--data_root", str(data), "--log_dir", str(tmp_path / "run"), *TINY])
    with pytest.raises(InputError, match="--dataset drums takes 3x64x64"):
        generate_sound2sight.main(["--model_path", str(log), "--data_root", str(data), "--dataset", "drums",
                                   "--n_past", "3", "--n_future", "3", "--nsample", "2", "--device", "cpu"])
