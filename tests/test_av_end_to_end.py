"""End to end through the CLIs: real videos with sound -> prepare_av -> train one epoch -> evaluate,
and every audio feature kind of the registry on M3SO and on prepared videos."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import generate_sound2sight
import train_sound2sight
from data.features import DEFAULT_FEATURE, FEATURES
from data.prepare_av import prepare
from test_prepare_av import write_video
from errors import InputError

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
    gifs = Path(m["log_dir"]) / "gifs"
    assert Path(m["log_dir"]).parent == log / "eval" and gifs.is_dir() and any(gifs.iterdir())


# stft is the default of both tools, trained and evaluated end to end above and in test_train.py
OTHER_KINDS = [k for k in FEATURES if k != DEFAULT_FEATURE]


def _train_and_evaluate(data, log, expect_shape, *dataset) -> None:
    """Train 1 epoch of 2 iterations and evaluate, through both CLIs; the model reads ``expect_shape`` features."""
    log = train_sound2sight.main([*dataset, "--data_root", str(data), "--log_dir", str(log), *TINY])
    cfg = json.loads((log / "config.json").read_text())["model_config"]
    assert cfg["audio_shape"] == list(expect_shape)  # taken from the dataset, no flag given
    m = generate_sound2sight.main(["--model_path", str(log), "--data_root", str(data), *dataset,
                                   "--n_past", "3", "--n_future", "3", "--nsample", "2", "--batch_size", "2",
                                   "--num_gifs", "1", "--device", "cpu"])
    assert m["num_clips"] >= 1 and len(m["paper"]["ssim_per_frame"]) == 3
    assert np.isfinite(m["paper"]["psnr"]) and 0 < m["paper"]["ssim"] <= 1


@pytest.mark.parametrize("features", OTHER_KINDS)
def test_m3so_feature_kind_end_to_end(tmp_path, features):
    """``generate_m3so.py --features K`` at toy size, then train and evaluate on what it wrote."""
    from M3SO_Gen_Code.generate_m3so import FRAME_SETTINGS
    from M3SO_Gen_Code.generate_m3so import main as generate_main

    data = generate_main(["--dest", str(tmp_path / "m3so"), "--num_train", "4", "--num_test", "2",
                          "--num_frames", "8", "--no_block", "--features", features, "--quiet"])
    meta = json.loads((data / "dataset.json").read_text())
    shape = FEATURES[features].shape(FRAME_SETTINGS)
    assert meta["features"] == features and meta[features]["shape"] == list(shape)
    assert (data / "train" / FEATURES[features].file).is_file() and (data / "train" / "stft.npy").is_file()
    _train_and_evaluate(data, tmp_path / "run", shape)


@pytest.mark.parametrize("features", OTHER_KINDS)
def test_prepared_video_feature_kind_end_to_end(tmp_path, av_data, features):
    """``data.prepare_av --features K`` at its defaults (mfcc: [32, 17]), then train and evaluate (--dataset av)."""
    data = prepare(av_data.parent / "videos", tmp_path / "ds", seq_len=6, stride=3, test_fraction=0.34, seed=0,
                   features=features, progress=False)
    meta = json.loads((data / "dataset.json").read_text())
    assert meta["features"] == features
    shape = tuple(meta[features]["shape"])
    if features == "mfcc":
        assert shape == (32, 17)
    _train_and_evaluate(data, tmp_path / "run", shape, "--dataset", "av")


def test_drums_preset_refuses_a_grey_checkpoint(tmp_path, tiny_data):
    """An M3SO (1x48x48) checkpoint is not a drums model: the preset says so by name."""
    data = tiny_data
    log = train_sound2sight.main(["--data_root", str(data), "--log_dir", str(tmp_path / "run"), *TINY])
    with pytest.raises(InputError, match="--dataset drums takes 3x64x64"):
        generate_sound2sight.main(["--model_path", str(log), "--data_root", str(data), "--dataset", "drums",
                                   "--n_past", "3", "--n_future", "3", "--nsample", "2", "--device", "cpu"])


def test_training_takes_shapes_from_the_data_and_presets_check_them(tmp_path, av_data, tiny_data):
    """--image_width/--channels default to the folder's (whatever --dataset); drums/painting only check them."""
    args = train_sound2sight.parse_args(["--data_root", str(av_data)])  # default --dataset smmnist
    assert (args.image_width, args.channels) == (64, 3)
    assert train_sound2sight.parse_args(["--data_root", str(av_data), "--image_width", "32"]).image_width == 32
    m3so = tiny_data
    with pytest.raises(InputError, match=r"--dataset painting expects 3x64x64 frames .* has 1x48x48 and \[23, 21\]"):
        train_sound2sight.parse_args(["--data_root", str(m3so), "--dataset", "painting"])
    # a folder not made yet: the preset's shapes are the defaults
    args = train_sound2sight.parse_args(["--data_root", str(tmp_path / "later"), "--dataset", "drums"])
    assert (args.image_width, args.channels) == (64, 3)
