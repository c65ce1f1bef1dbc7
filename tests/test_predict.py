"""predict_sound2sight.py: one clip's futures as a video with its sound, the frames as an array, the
scores as JSON; bad input is one line and writes nothing."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.signal import resample_poly

import predict_sound2sight
import train_sound2sight
from errors import InputError
from media import read_video

TINY = ["--g_dim", "16", "--rnn_size", "32", "--z_dim", "4", "--dim_ff", "32", "--disc_rnn_size", "16",
        "--nhead", "2", "--nf", "8", "--n_past", "3", "--n_future", "3", "--n_eval", "6", "--batch_size", "4",
        "--data_threads", "0", "--val_nsample", "1", "--device", "cpu", "--save_every", "0", "--niter", "1",
        "--epoch_size", "2", "--bn_recalibrate", "1"]
CLICK_FRAME = 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    """A tiny trained run, and a copy of the data whose clip 0 has a click at the start of frame 4."""
    root = tmp_path_factory.mktemp("predict")
    data = root / "data"
    shutil.copytree(tiny_data, data)
    audio = np.load(data / "test" / "audio.npy")
    per_frame = json.loads((data / "dataset.json").read_text())["samples_per_frame"]
    audio[0] *= 0.05
    audio[0, CLICK_FRAME * per_frame:CLICK_FRAME * per_frame + 8] = 0.95
    np.save(data / "test" / "audio.npy", audio)
    run = train_sound2sight.main(["--data_root", str(data), "--log_dir", str(root / "run"), *TINY])
    return run, data, per_frame


def test_the_video_gives_back_the_predicted_frames_and_the_sound_in_sync(trained, tmp_path):
    run, data, per_frame = trained
    out = tmp_path / "p"
    r = predict_sound2sight.main(["--model_path", str(run), "--data_root", str(data), "--clip", "0", "--nsample", "2",
                                  "--audio_clip", "1", "--scale", "1", "--device", "cpu", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == sorted(r["files"])
    predicted = np.load(out / "predicted.npy", allow_pickle=False)  # [K, T, C, H, W]
    assert predicted.shape == (2, 6, 1, 48, 48) and r["n_past"] == 3 and r["n_future"] == 3
    frames, sound, rate = read_video(out / "prediction.mp4")
    assert frames.shape[0] == 6
    for k in range(2):  # panel k + 1 (after the real clip): 48 px inside a 2-px frame, under a 14-px header
        x0 = (k + 1) * 52 + 2
        panel = frames[:, 14 + 2:14 + 50, x0:x0 + 48].astype(float).mean(-1) / 255  # [T, H, W]
        assert np.abs(panel - predicted[k, :, 0]).mean() < 0.02  # within the codec's error
    # the sound: the clip's own, as long as the frames, the click in its frame
    want = np.load(data / "test" / "audio.npy")[0, :6 * per_frame]
    rate_in = json.loads((data / "dataset.json").read_text())["sample_rate"]
    g = np.gcd(rate, rate_in)
    back = resample_poly(sound.astype(np.float64), rate_in // g, rate // g)[:len(want)]
    assert len(back) == len(want) and np.corrcoef(back, want)[0, 1] > 0.99
    assert int(np.argmax(np.abs(back))) // per_frame == CLICK_FRAME
    scores = json.loads((out / "prediction.json").read_text())["scores"]
    assert len(scores["model"]["ssim"]["best"]) == 3 and len(scores["constant_velocity"]["psnr"]) == 3
    assert (out / "what_if_audio_1.mp4").stat().st_size > 0


@pytest.mark.parametrize("extra,message", [
    (["--clip", "99"], "--clip 99: the test split"),
    (["--audio_clip", "-1"], "--audio_clip -1"),
    (["--nsample", "0"], "--nsample must be >= 1"),
])
def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, extra, message):
    run, data, _ = trained
    with pytest.raises(InputError, match=message):
        predict_sound2sight.main(["--model_path", str(run), "--data_root", str(data), "--device", "cpu",
                                  "--out", str(tmp_path / "p"), *extra])
    assert not (tmp_path / "p").exists()


def test_an_out_that_is_a_file_or_holds_a_prediction_is_refused(trained, tmp_path):
    run, data, _ = trained
    (tmp_path / "file").write_text("x")
    base = ["--model_path", str(run), "--data_root", str(data), "--device", "cpu", "--nsample", "1"]
    with pytest.raises(InputError, match="is a file"):
        predict_sound2sight.main([*base, "--out", str(tmp_path / "file")])
    predict_sound2sight.main([*base, "--out", str(tmp_path / "p")])
    before = (tmp_path / "p" / "prediction.json").read_bytes()
    with pytest.raises(InputError, match="already holds a prediction"):
        predict_sound2sight.main([*base, "--out", str(tmp_path / "p"), "--clip", "1"])
    assert (tmp_path / "p" / "prediction.json").read_bytes() == before
    with pytest.raises(InputError, match="pass one clip source"):
        predict_sound2sight.main(["--model_path", str(run)])


def test_a_video_file_becomes_the_input_the_dataset_tools_make(trained, tmp_path):
    """--video decodes through the preparer's own code with the training data's settings: its
    prediction equals the one of the same clip prepared into a dataset by data/prepare_av.py."""
    from data.prepare_av import config_for_data, prepare
    from test_prepare_av import write_video as write_test_video

    run, data, _ = trained
    video = write_test_video(tmp_path / "mine.mp4", seconds=1.5)  # 25 fps RGB 96x64, AAC at 16 kHz
    r = predict_sound2sight.main(["--model_path", str(run), "--video", str(video), "--nsample", "2", "--scale", "1",
                                  "--device", "cpu", "--out", str(tmp_path / "v")])
    assert r["n_past"] == 3 and r["n_future"] == 3 and r["sound"]
    cfg = config_for_data(json.loads((run / "config.json").read_text())["data"])
    assert (cfg.image_width, cfg.channels, cfg.fps, cfg.samples_per_frame) == (48, 1, 10, 440)
    prepared = prepare(video, tmp_path / "ds", progress=False, image_width=48, channels=1, fps=10, seq_len=6,
                       n_fft=cfg.n_fft, hop_length=cfg.hop_length, frame_samples=440, test_fraction=0.0,
                       previews=False)
    predict_sound2sight.main(["--model_path", str(run), "--data_root", str(prepared), "--split", "train",
                              "--clip", "0", "--nsample", "2", "--device", "cpu", "--out", str(tmp_path / "d")])
    np.testing.assert_array_equal(np.load(tmp_path / "v" / "predicted.npy"), np.load(tmp_path / "d" / "predicted.npy"))
    frames, sound, rate = read_video(tmp_path / "v" / "prediction.mp4")
    assert frames.shape[0] == 6 and sound is not None and rate == 48000


@pytest.mark.parametrize("kind,message", [
    ("silent", "no audio stream"),
    ("short", "the model needs 3 context frames"),
    ("garbage", "cannot open as a video"),
    ("missing", "does not exist"),
])
def test_a_bad_video_is_one_line_and_writes_nothing(trained, tmp_path, kind, message):
    from test_prepare_av import write_video as write_test_video

    run, _, _ = trained
    path = tmp_path / "in.mp4"
    if kind == "silent":
        write_test_video(path, seconds=1.5, audio=False)
    elif kind == "short":
        write_test_video(path, seconds=0.3)
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(InputError, match=message):
        predict_sound2sight.main(["--model_path", str(run), "--video", str(path), "--device", "cpu",
                                  "--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()
