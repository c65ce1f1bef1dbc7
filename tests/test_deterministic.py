"""The deterministic predictor (``--method deterministic``, models/deterministic.py): its sampling
continues its teacher-forced prediction, and it trains and is evaluated through the scripts."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import generate_sound2sight
import methods
import train_sound2sight
from errors import InputError
from models.deterministic import DeterministicConfig, DeterministicPredictor

TINY = ["--method", "deterministic", "--g_dim", "16", "--rnn_size", "32", "--nf", "8", "--n_past", "3",
        "--n_future", "3", "--n_eval", "8", "--batch_size", "4", "--data_threads", "0", "--val_nsample", "2",
        "--device", "cpu", "--save_every", "0", "--niter", "1", "--epoch_size", "2", "--bn_recalibrate", "1"]


@pytest.mark.parametrize("last_frame_skip", [False, True])
def test_sampling_continues_the_teacher_forced_prediction(last_frame_skip):
    torch.manual_seed(0)
    model = DeterministicPredictor(DeterministicConfig(g_dim=16, rnn_size=32, nf=8, n_past=3,
                                                       last_frame_skip=last_frame_skip))
    assert isinstance(model, methods.TrainedModel) and model.noise_dim == 0
    frames = torch.rand(4, 2, 1, 48, 48)
    model.train()
    model(frames, None)["loss"].backward()  # trains end to end
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    pred = model(frames, None)["pred"]                         # [3, 2, 1, 48, 48]
    gen = model.sample(frames[:3], None, nsample=2, n_future=1)  # [4, 2, 2, 1, 48, 48]
    assert torch.equal(gen[:3, :, 0], frames[:3]) and torch.equal(gen[:, :, 0], gen[:, :, 1])
    torch.testing.assert_close(gen[3, :, 0], pred[2], rtol=1e-5, atol=1e-6)


def test_it_trains_and_is_evaluated_through_the_scripts(tmp_path, tiny_data, capsys):
    with pytest.raises(InputError, match="--logvar_bias -4.0: method deterministic has no such bias"):
        train_sound2sight.main(["--data_root", str(tiny_data), "--log_dir", str(tmp_path / "no"), *TINY,
                                "--logvar_bias", "-4"])
    log = train_sound2sight.main(["--data_root", str(tiny_data), "--log_dir", str(tmp_path / "run"), *TINY,
                                  "--output_bias", "-6"])
    assert "training deterministic predictor on" in capsys.readouterr().out
    assert json.loads((log / "config.json").read_text())["method"] == "deterministic"
    row = next(csv.DictReader(open(log / "metrics.csv")))
    assert float(row["train_mse_loss"]) > 0 and float(row["val_ssim"]) > 0
    result = generate_sound2sight.main(["--model_path", str(log), "--log_dir", str(tmp_path / "eval"), "--nsample",
                                        "2", "--N", "4", "--batch_size", "4", "--num_gifs", "1", "--device", "cpu"])
    assert result["prior"] is None and result["diversity"] == pytest.approx(0.0, abs=1e-12)
    assert 0 < result["paper"]["ssim"] < 1 and (tmp_path / "eval" / "gifs" / "clip_00000.gif").is_file()
