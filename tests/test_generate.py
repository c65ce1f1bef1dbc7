"""generate_sound2sight.py end to end on a tiny checkpoint and a tiny hand-made dataset."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import generate_sound2sight as gen
import metrics
from models.sound2sight import Sound2Sight, Sound2SightConfig
from utils import InputError, run_cli

ROOT = Path(__file__).resolve().parents[1]
N_CLIPS, T, N_PAST, N_FUTURE, NSAMPLE = 5, 6, 2, 4, 3
MAIN_FLAGS = ["--batch_size", "2", "--chunk_size", "4", "--num_gifs", "2"]
TINY_CFG = dict(g_dim=16, rnn_size=32, z_dim=4, dim_ff=32, nhead=2, disc_rnn_size=16, n_past=N_PAST)


def make_dataset(root: Path, n: int = N_CLIPS, t: int = T, channels: int = 1) -> Path:
    """The on-disk layout (dataset.json + test/frames.npy + test/stft.npy): moving textured squares."""
    rng = np.random.default_rng(0)
    (root / "test").mkdir(parents=True)
    shape = (n, t, 48, 48) if channels == 1 else (n, t, 48, 48, channels)
    frames = np.zeros(shape, np.uint8)
    for i in range(n):  # fixture construction only
        for k in range(t):
            y, x = 4 + 3 * k, 3 + 2 * k + 2 * i
            frames[i, k, y:y + 18, x:x + 18] = rng.integers(80, 256, frames[i, k, y:y + 18, x:x + 18].shape)
    np.save(root / "test" / "frames.npy", frames)
    np.save(root / "test" / "stft.npy", rng.random((n, t, 23, 21), dtype=np.float32))
    meta = {"name": "tiny", "format_version": 1, "image_size": 48, "channels": channels, "num_frames": t,
            "fps": 10, "sample_rate": 4400, "samples_per_frame": 440,
            "stft": {"n_fft": 44, "hop_length": 22, "center": True, "window": "hann", "shape": [23, 21]},
            "splits": {"test": n}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_checkpoint(path: Path, data_root: Path | None = None, **overrides) -> Path:
    """A tiny untrained model, its prior made wide, its z and decoder made to matter so samples differ
    (freshly initialised, every sample decodes to ~0.5 grey)."""
    cfg = Sound2SightConfig(**{**TINY_CFG, **overrides})
    torch.manual_seed(0)
    model = Sound2Sight(cfg)
    with torch.no_grad():
        model.prior.logvar.bias.fill_(3.0)
        model.predictor.embed.weight[:, cfg.g_dim:] *= 40.0
        for p in model.decoder.parameters():
            if p.dim() > 1:
                p.mul_(25.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": dataclasses.asdict(cfg), "model": model.state_dict(),
                "args": {"data_root": str(data_root) if data_root else "nowhere"}, "epoch": 7}, path)
    return path


def base_args(run: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model_path", str(run), "--data_root", str(data), "--log_dir", str(out), "--n_past", str(N_PAST),
            "--n_future", str(N_FUTURE), "--nsample", str(NSAMPLE), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    data = make_dataset(tmp / "data")
    ckpt = make_checkpoint(tmp / "run" / "checkpoints" / "best.pt", data)
    out = tmp / "eval_main"
    # batch 2 (3 batches, the last short); chunk 4 -> 2 samples per model call: samples split over calls.
    # One thread, as each torchrun process below has: same kernels, so bit-identical numbers.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = gen.main(base_args(tmp / "run", data, out, *MAIN_FLAGS, "--save_samples",
                                    "--log_path", str(tmp / "log.txt")))
    finally:
        torch.set_num_threads(threads)
    return {"tmp": tmp, "data": data, "ckpt": ckpt, "out": out, "result": result}


def test_metrics_json(setup):
    m = json.loads((setup["out"] / "metrics.json").read_text())
    for key in ("paper", "best", "copy_last_frame", "posterior", "diversity", "num_clips", "nsample", "n_past",
                "n_future", "checkpoint", "data_root", "data_range", "psnr_cap_db", "seed"):
        assert key in m, key
    assert (m["num_clips"], m["nsample"], m["n_past"], m["n_future"]) == (N_CLIPS, NSAMPLE, N_PAST, N_FUTURE)
    assert m["checkpoint"] == str(setup["ckpt"]) and m["data_range"] == 2.0
    assert m["psnr_cap_db"] == metrics.PSNR_CAP_DB and m["seed"] == 1 and m["model_epoch"] == 7
    for block in (m["paper"], m["best"], m["copy_last_frame"]["paper"], m["copy_last_frame"]["best"], m["posterior"]):
        assert len(block["ssim_per_frame"]) == N_FUTURE == len(block["psnr_per_frame"])
        assert -1 <= block["ssim"] <= 1 and 0 < block["psnr"] < metrics.PSNR_CAP_DB
        assert block["ssim"] == pytest.approx(np.mean(block["ssim_per_frame"]))
    # per-frame max over samples can only beat one whole sample per clip
    assert all(p >= b - 1e-12 for p, b in zip(m["paper"]["ssim_per_frame"], m["best"]["ssim_per_frame"]))
    assert m["paper"]["ssim"] > m["best"]["ssim"]  # the samples really differ here
    assert m["diversity"] > 1e-4
    assert {k: v for k, v in m.items() if k != "timing"} == {  # main() returns what it wrote
        k: v for k, v in setup["result"].items() if k in m and k != "timing"}
    assert set(m["timing"]) >= {"sampling", "scoring", "total"}


def test_csv_png_gifs_log(setup):
    out = setup["out"]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == N_FUTURE
    assert [int(r["frame"]) for r in rows] == list(range(N_PAST, N_PAST + N_FUTURE))
    m = json.loads((out / "metrics.json").read_text())
    assert [float(r["model_best_psnr"]) for r in rows] == pytest.approx(m["best"]["psnr_per_frame"], abs=1e-5)
    assert [float(r["copy_last_frame_paper_ssim"]) for r in rows] == pytest.approx(
        m["copy_last_frame"]["paper"]["ssim_per_frame"], abs=1e-5)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gifs = sorted((out / "gifs").glob("*.gif"))
    assert [g.name for g in gifs] == ["clip_00000.gif", "clip_00001.gif"]
    g = iio.imread(gifs[0])
    assert g.shape == (T, 48 + 4, 6 * (48 + 4), 3)  # gt | posterior | best | 3 random, 2-px frames
    assert g[N_PAST, 0, 52 * 2 + 10, 0] > 150 and g[N_PAST, 0, 52 * 2 + 10, 1] < 100  # generated: red frame
    assert g[0, 0, 52 * 2 + 10, 1] > 150 and g[0, 0, 52 * 2 + 10, 0] < 100  # context: green frame
    lines = (setup["tmp"] / "log.txt").read_text().splitlines()
    assert len(lines) == 1 and "paper: SSIM" in lines[0] and str(setup["ckpt"]) in lines[0]


def test_samples_npz_rescored_gives_metrics_json(setup):
    out = setup["out"]
    with np.load(out / "samples.npz", allow_pickle=False) as z:
        gt, samples, clips = z["gt"], z["samples"], z["clip_index"]
    assert gt.shape == (N_CLIPS, T, 1, 48, 48) and samples.shape == (N_CLIPS, NSAMPLE, T, 1, 48, 48)
    assert gt.dtype == samples.dtype == np.float32 and clips.tolist() == list(range(N_CLIPS))
    assert samples.min() >= 0 and samples.max() <= 1
    np.testing.assert_array_equal(samples[:, :, :N_PAST], np.repeat(gt[:, None, :N_PAST], NSAMPLE, 1))
    raw = np.load(setup["data"] / "test" / "frames.npy")
    np.testing.assert_allclose(gt[:, :, 0], raw / 255.0, atol=1e-7)
    fut = samples[:, :, N_PAST:]
    s, p = metrics.score_pairs(np.broadcast_to(gt[:, None, N_PAST:], fut.shape), fut)
    m = json.loads((out / "metrics.json").read_text())
    for name, proto in (("paper", metrics.paper_protocol), ("best", metrics.best_protocol)):
        again = proto(s, p)
        assert again["ssim_per_frame"] == pytest.approx(m[name]["ssim_per_frame"], abs=1e-9)
        assert again["psnr_per_frame"] == pytest.approx(m[name]["psnr_per_frame"], abs=1e-9)
    assert float(metrics.pairwise_diversity(fut).mean()) == pytest.approx(m["diversity"], rel=1e-6)


def test_copy_last_frame_against_direct_skimage(setup):
    frames = np.load(setup["data"] / "test" / "frames.npy").astype(np.float32) / 255.0  # [N, T, H, W]
    last = frames[:, N_PAST - 1]
    ss = [[structural_similarity(frames[i, t], last[i], data_range=2.0) for t in range(N_PAST, T)]
          for i in range(N_CLIPS)]
    ps = [[peak_signal_noise_ratio(frames[i, t], last[i], data_range=1.0) for t in range(N_PAST, T)]
          for i in range(N_CLIPS)]
    m = json.loads((setup["out"] / "metrics.json").read_text())["copy_last_frame"]
    assert m["paper"]["ssim_per_frame"] == pytest.approx(np.mean(ss, 0).tolist(), abs=1e-5)
    assert m["best"]["psnr_per_frame"] == pytest.approx(np.mean(ps, 0).tolist(), abs=1e-5)


def test_batching_does_not_change_numbers_and_protocol_flag(setup, tmp_path):
    """Per-clip noise: one batch of 5, all samples in one call, gives the same numbers."""
    out = tmp_path / "one_batch"
    r = gen.main(base_args(setup["tmp"] / "run", setup["data"], out, "--batch_size", "5", "--protocol", "paper",
                           "--num_gifs", "0"))
    ref = setup["result"]
    assert "best" not in r and "best" not in r["copy_last_frame"]
    assert r["paper"]["ssim_per_frame"] == pytest.approx(ref["paper"]["ssim_per_frame"], abs=1e-6)
    assert r["paper"]["psnr_per_frame"] == pytest.approx(ref["paper"]["psnr_per_frame"], abs=1e-4)
    assert r["posterior"]["ssim"] == pytest.approx(ref["posterior"]["ssim"], abs=1e-6)
    header = next(csv.reader(open(out / "metrics.csv")))
    assert not any("best" in h for h in header) and not (out / "gifs").exists()


def test_no_audio_model_one_sample_capped_clips_worker(setup, tmp_path):
    """The SVG-LP ablation checkpoint, nsample 1 (no diversity), --N below the split, a loader worker."""
    ckpt = make_checkpoint(tmp_path / "noaudio" / "checkpoints" / "last.pt", use_audio=False, use_disc=False)
    r = gen.main(["--model_path", str(tmp_path / "noaudio"), "--data_root", str(setup["data"]), "--n_past", "2",
                  "--n_future", "3", "--nsample", "1", "--N", "2", "--num_threads", "1", "--protocol", "best",
                  "--num_gifs", "1", "--device", "cpu"])
    out = tmp_path / "noaudio" / "eval"  # default --log_dir: <run folder>/eval
    m = json.loads((out / "metrics.json").read_text())
    assert m["checkpoint"] == str(ckpt) and m["use_audio"] is False
    assert m["num_clips"] == 2 and m["diversity"] is None and "paper" not in m and r["best"] == m["best"]
    assert len(list(csv.DictReader(open(out / "metrics.csv")))) == 3
    # gt | posterior | best | min(3, nsample) random samples
    assert iio.imread(out / "gifs" / "clip_00000.gif").shape == (5, 52, 4 * 52, 3)


def test_noise_is_per_clip_and_seed():
    a = gen.batch_noise(1, [3, 4], 0, (2, 5))
    assert a.shape == (2, 2, 5)
    torch.testing.assert_close(a[1:], gen.batch_noise(1, [4], 0, (2, 5)), rtol=0, atol=0)  # batch-independent
    assert not torch.equal(a, gen.batch_noise(2, [3, 4], 0, (2, 5)))  # other seed
    assert not torch.equal(a, gen.batch_noise(1, [3, 4], 1, (2, 5)))  # other stream
    assert not torch.equal(a[0], a[1])  # other clip


def test_torchrun_two_processes_equal_one(setup, tmp_path):
    """2 processes (gloo, one thread each) give bit-identical numbers and GIFs to the 1-process run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    argv = base_args(setup["tmp"] / "run", setup["data"], tmp_path / "ddp", *MAIN_FLAGS)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(ROOT / "generate_sound2sight.py"), *argv],
                         env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert two.returncode == 0, two.stderr[-3000:]
    m1 = json.loads((setup["out"] / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    for key in ("paper", "best", "copy_last_frame", "posterior", "diversity", "num_clips"):
        assert m2[key] == m1[key], key
    gifs1 = sorted(p.name for p in (setup["out"] / "gifs").iterdir())
    assert gifs1 == sorted(p.name for p in (tmp_path / "ddp" / "gifs").iterdir()) and len(gifs1) == 2
    for name in gifs1:
        np.testing.assert_array_equal(iio.imread(setup["out"] / "gifs" / name),
                                      iio.imread(tmp_path / "ddp" / "gifs" / name))


def test_checkpoint_and_data_resolution(tmp_path, setup):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(InputError, match="no best.pt or last.pt"):
        gen.resolve_checkpoint(str(run), None)
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    assert gen.resolve_checkpoint(str(run), None) == run / "checkpoints" / "last.pt"
    (run / "checkpoints" / "best.pt").write_bytes(b"x")
    assert gen.resolve_checkpoint(str(run), None) == run / "checkpoints" / "best.pt"
    assert gen.resolve_checkpoint(str(run / "checkpoints"), None) == run / "checkpoints" / "best.pt"
    with pytest.raises(InputError, match="epoch_3.pt"):
        gen.resolve_checkpoint(str(run), 3)
    (run / "checkpoints" / "epoch_3.pt").write_bytes(b"x")
    assert gen.resolve_checkpoint(str(run), 3) == run / "checkpoints" / "epoch_3.pt"
    with pytest.raises(InputError, match="--model_epoch"):
        gen.resolve_checkpoint(str(run / "checkpoints" / "best.pt"), 3)
    assert gen.default_log_dir(run / "checkpoints" / "best.pt") == run / "eval"
    assert gen.default_log_dir(tmp_path / "model.pt") == tmp_path / "eval"
    # --data_root left at its default and missing: the checkpoint's training data_root
    cwd = os.getcwd()
    os.chdir(tmp_path)  # no ./data here
    try:
        assert gen.resolve_data_root("data", {"data_root": str(setup["data"])}, "data") == str(setup["data"])
        assert gen.resolve_data_root("data", {"data_root": str(tmp_path / "gone")}, "data") == "data"
        assert gen.resolve_data_root("elsewhere", {"data_root": str(setup["data"])}, "data") == "elsewhere"
    finally:
        os.chdir(cwd)


def test_bad_inputs(setup, tmp_path):
    run, data = setup["tmp"] / "run", setup["data"]

    def fails(match: str, *argv: str, base=None):
        with pytest.raises(InputError, match=match):
            gen.main(base or base_args(run, data, tmp_path / "o", *argv))

    fails("--model_path", base=["--data_root", str(data)])
    fails("does not exist", base=base_args(tmp_path / "missing.pt", data, tmp_path / "o"))
    fails("--nsample must be >= 1", "--nsample", "0")
    fails("--n_past \\+ --n_future = 9 .* 6 frames", "--n_future", "7")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fails("cannot be written", base=base_args(run, data, blocker / "sub"))
    rgb = make_checkpoint(tmp_path / "rgb.pt", channels=3)
    fails("3x48x48 frames, the data holds 1x48x48", base=base_args(rgb, data, tmp_path / "o"))
    with pytest.raises(SystemExit) as err:  # the CLI turns it into one line and exit status 2
        run_cli(gen.main, base_args(run, data, tmp_path / "o", "--nsample", "0"))
    assert err.value.code == 2
    assert not (tmp_path / "o" / "metrics.json").exists()
