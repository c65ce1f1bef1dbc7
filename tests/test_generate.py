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

import baselines
import evaluation
import generate_sound2sight as gen
import metrics
from models.sound2sight import Sound2Sight, Sound2SightConfig
from errors import InputError, run_cli

ROOT = Path(__file__).resolve().parents[1]
N_CLIPS, T, N_PAST, N_FUTURE, NSAMPLE = 5, 6, 2, 4, 3
MAIN_FLAGS = ["--batch_size", "2", "--chunk_size", "4", "--num_gifs", "2", "--shuffle_audio", "--event_window", "2"]
# M3SO event arrays of the hand-made clips: wall bounces at frames 1 and 3 of clip 0 and 2 of
# clip 1, a block bounce at frame 2 of clip 2; a block from frame 4 in clips 0 and 2
BOUNCES = {(0, 1): 1, (0, 3): 1, (1, 2): 1, (2, 2): 2}
BLOCK_FIRST = {0: 4, 2: 4}
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
    bounces = np.zeros((n, t, 1), np.int8)
    for (clip, frame), code in BOUNCES.items():
        bounces[clip, frame, 0] = code
    blocks = np.full((n, 3), -1, np.int32)
    for clip, first in BLOCK_FIRST.items():
        blocks[clip] = (10, 10, first)
    np.save(root / "test" / "bounces.npy", bounces)
    np.save(root / "test" / "blocks.npy", blocks)
    meta = {"name": "tiny", "format_version": 1, "image_size": 48, "channels": channels, "num_frames": t,
            "fps": 10, "sample_rate": 4400, "samples_per_frame": 440,
            "stft": {"n_fft": 44, "hop_length": 22, "center": True, "window": "hann", "shape": [23, 21]},
            "splits": {"test": n}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_checkpoint(path: Path, data_root: Path | None = None, **overrides) -> Path:
    """A tiny untrained model, its prior made wide, its z and decoder made to matter so samples differ
    (freshly initialised, every sample decodes to ~0.5 grey), and its prior's mean made to follow the audio."""
    cfg = Sound2SightConfig(**{**TINY_CFG, **overrides})
    torch.manual_seed(0)
    model = Sound2Sight(cfg)
    with torch.no_grad():
        model.prior.lstm.logvar.bias.fill_(3.0)
        model.predictor.embed.weight[:, cfg.g_dim:] *= 40.0
        if cfg.use_audio:
            model.audio_transformer.out.weight.mul_(50.0)
            model.prior.lstm.embed.weight[:, cfg.g_dim:] *= 40.0
            model.prior.lstm.mu.weight.mul_(40.0)
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
    for key in ("paper", "best", "copy_last_frame", "events", "audio_shuffled", "diversity", "num_clips", "nsample", "n_past",
                "n_future", "checkpoint", "data_root", "data_range", "psnr_cap_db", "seed"):
        assert key in m, key
    assert (m["num_clips"], m["nsample"], m["n_past"], m["n_future"]) == (N_CLIPS, NSAMPLE, N_PAST, N_FUTURE)
    assert m["checkpoint"] == str(setup["ckpt"]) and m["data_range"] == 2.0
    assert m["psnr_cap_db"] == metrics.PSNR_CAP_DB and m["seed"] == 1 and m["model_epoch"] == 7
    assert "posterior" not in m  # shown in the GIFs only: it is not a bound on anything
    for block in (m["paper"], m["best"], m["copy_last_frame"]["paper"], m["copy_last_frame"]["best"]):
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
    assert g.shape == (T, 14 + 48 + 4 + 12, 6 * (48 + 4), 3)  # label strip; gt | posterior | best | 3 random, 2-px
    # frames; the key strip below
    assert all(g[0, :14, 52 * i:52 * (i + 1)].max() > 200 for i in range(6))  # every panel named
    top = 14  # the panels' first row: their frame
    for col in (1, 2):  # the posterior and the best sample, drawn as the release drew them
        assert g[N_PAST, top, 52 * col + 10, 0] > 150 and g[N_PAST, top, 52 * col + 10, 1] < 100  # generated: red
        assert g[0, top, 52 * col + 10, 1] > 150 and g[0, top, 52 * col + 10, 0] < 100  # context: green
    # the posterior row shows the given frames during the context, as the ground-truth row does
    np.testing.assert_array_equal(g[:N_PAST, top + 2:top + 50, 54:102], g[:N_PAST, top + 2:top + 50, 2:50])
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
    for name in ("paper", "best"):
        again = metrics.summarise(metrics.PROTOCOLS[name]({"ssim": s, "psnr": p}))
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


def test_constant_velocity_reaches_every_output(setup):
    """The constant-velocity baseline beside copy-last-frame: metrics.json (each protocol, events), the
    CSV, the headline, its numbers those of its prediction scored directly with scikit-image."""
    out = setup["out"]
    frames = np.load(setup["data"] / "test" / "frames.npy").astype(np.float32) / 255.0  # [N, T, H, W]
    context = torch.from_numpy(frames[:, :N_PAST]).transpose(0, 1)[:, :, None]  # [n_past, N, 1, H, W]
    pred = baselines.constant_velocity(context, N_FUTURE)[:, :, 0].numpy()  # [F, N, H, W]
    ss = np.array([[structural_similarity(frames[i, N_PAST + k], pred[k, i], data_range=2.0) for k in range(N_FUTURE)]
                   for i in range(N_CLIPS)])
    ps = np.array([[peak_signal_noise_ratio(frames[i, N_PAST + k], pred[k, i], data_range=1.0)
                    for k in range(N_FUTURE)] for i in range(N_CLIPS)])
    m = json.loads((out / "metrics.json").read_text())
    assert m["baselines"] == {"copy_last_frame": "copy last frame", "constant_velocity": "constant velocity"}
    cv = m["constant_velocity"]
    assert cv["paper"]["ssim_per_frame"] == pytest.approx(ss.mean(0).tolist(), abs=1e-5)
    assert cv["best"]["psnr_per_frame"] == pytest.approx(ps.mean(0).tolist(), abs=1e-4)
    assert cv["paper"]["psnr"] > m["copy_last_frame"]["paper"]["psnr"]  # the squares move at a constant velocity
    masks = metrics.event_masks(np.load(setup["data"] / "test" / "bounces.npy"),
                                np.load(setup["data"] / "test" / "blocks.npy"), N_PAST, N_FUTURE, 2)
    want = metrics.masked_means({"ssim": ss, "psnr": ps}, masks)
    for group in metrics.EVENT_GROUPS:
        assert m["events"]["constant_velocity"][group]["frames"] == want[group]["frames"]
        assert m["events"]["constant_velocity"][group]["ssim"] == pytest.approx(want[group]["ssim"], abs=1e-5)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [float(r["constant_velocity_paper_ssim"]) for r in rows] == pytest.approx(cv["paper"]["ssim_per_frame"],
                                                                                     abs=1e-5)
    assert "constant_velocity_best_psnr" in rows[0]
    line = (setup["tmp"] / "log.txt").read_text()
    assert f"constant velocity {cv['paper']['ssim']:.4f} / {cv['paper']['psnr']:.2f}" in line


def test_batching_does_not_change_numbers_and_protocol_flag(setup, tmp_path):
    """Per-clip noise: one batch of 5, all samples in one call, gives the same numbers."""
    out = tmp_path / "one_batch"
    r = gen.main(base_args(setup["tmp"] / "run", setup["data"], out, "--batch_size", "5", "--protocol", "paper",
                           "--num_gifs", "0"))
    ref = setup["result"]
    assert "best" not in r and "best" not in r["copy_last_frame"]
    assert r["paper"]["ssim_per_frame"] == pytest.approx(ref["paper"]["ssim_per_frame"], abs=1e-6)
    assert r["paper"]["psnr_per_frame"] == pytest.approx(ref["paper"]["psnr_per_frame"], abs=1e-4)
    header = next(csv.reader(open(out / "metrics.csv")))
    assert not any("best" in h for h in header) and not (out / "gifs").exists()


def test_no_audio_model_one_sample_capped_clips_worker(setup, tmp_path):
    """The SVG-LP ablation checkpoint, nsample 1 (no diversity), --N below the split, a loader worker."""
    ckpt = make_checkpoint(tmp_path / "noaudio" / "checkpoints" / "last.pt", use_audio=False, use_disc=False)
    r = gen.main(["--model_path", str(tmp_path / "noaudio"), "--data_root", str(setup["data"]), "--n_past", "2",
                  "--n_future", "3", "--nsample", "1", "--N", "2", "--num_threads", "1", "--protocol", "best",
                  "--num_gifs", "1", "--device", "cpu"])
    out = Path(r["log_dir"])  # default --log_dir: one folder per checkpoint and settings under <run folder>/eval
    assert out.parent == tmp_path / "noaudio" / "eval" and out.name.startswith("last_")
    m = json.loads((out / "metrics.json").read_text())
    assert m["checkpoint"] == str(ckpt) and m["use_audio"] is False
    assert m["num_clips"] == 2 and m["diversity"] is None and "paper" not in m and r["best"] == m["best"]
    assert len(list(csv.DictReader(open(out / "metrics.csv")))) == 3
    assert "audio_shuffled" not in m  # not asked for
    # gt | posterior | best | min(3, nsample) random samples
    assert iio.imread(out / "gifs" / "clip_00000.gif").shape == (5, 14 + 52 + 12, 4 * 52, 3)


def test_noise_is_per_clip_and_seed():
    a = evaluation.batch_noise(1, [3, 4], 0, (2, 5))
    assert a.shape == (2, 2, 5)
    torch.testing.assert_close(a[1:], evaluation.batch_noise(1, [4], 0, (2, 5)), rtol=0, atol=0)  # batch-independent
    assert not torch.equal(a, evaluation.batch_noise(2, [3, 4], 0, (2, 5)))  # other seed
    assert not torch.equal(a, evaluation.batch_noise(1, [3, 4], 1, (2, 5)))  # other stream
    assert not torch.equal(a[0], a[1])  # other clip



def _batch_result(clips: list[int], seed: int, best: bool = True) -> evaluation.BatchResult:
    """A hand-made BatchResult of ``clips`` (values from ``seed``): two frames, three samples."""
    rng = np.random.default_rng(seed)
    n = len(clips)
    base = {"ssim": rng.random((n, 2)), "psnr": rng.random((n, 2))}
    return evaluation.BatchResult(
        clips=np.asarray(clips, dtype=np.int64),
        predictors={evaluation.MODEL: evaluation.PredictorScores({"paper": {"ssim": rng.random((n, 2))}}),
                    "copy_last_frame": evaluation.PredictorScores.deterministic(base, ["paper"])},
        sample_scores={"ssim": rng.random((n, 3))}, set_metrics={"diversity": rng.random(n)},
        gifs={c: rng.integers(0, 255, (2, 4, 4, 3), dtype=np.uint8) for c in clips if c < 2},
        best_index=rng.integers(0, 3, n) if best else None)


def _assert_results_equal(a: evaluation.BatchResult, b: evaluation.BatchResult) -> None:
    flat_a, flat_b = a.to_arrays(), b.to_arrays()
    assert sorted(flat_a) == sorted(flat_b)
    for k in flat_a:
        np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=k)


def test_batch_result_round_trips_through_npz_and_merges_in_clip_order(tmp_path):
    import io

    part = _batch_result([3, 0, 1], seed=0)
    buf = io.BytesIO()
    np.savez(buf, **part.to_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:  # numbers and GIF frames only: no pickles
        back = evaluation.BatchResult.from_arrays({k: z[k] for k in z.files})
    _assert_results_equal(part, back)
    assert back.gt is None and back.samples is None and set(back.gifs) == {0, 1}
    with pytest.raises(ValueError, match="not a field"):
        evaluation.BatchResult.from_arrays({**part.to_arrays(), "paper_ssim": np.zeros(3)})

    other = _batch_result([2, 4], seed=1)
    merged = evaluation.BatchResult.concat([part, other])
    assert merged.clips.tolist() == [0, 1, 2, 3, 4] and set(merged.gifs) == {0, 1}
    whole = np.concatenate([part.model.under("paper")["ssim"], other.model.under("paper")["ssim"]])
    np.testing.assert_array_equal(merged.model.under("paper")["ssim"], whole[[1, 2, 3, 0, 4]])
    np.testing.assert_array_equal(merged.best_index, np.concatenate([part.best_index, other.best_index])[[1, 2, 3, 0, 4]])
    _assert_results_equal(evaluation.BatchResult.concat([other, part]), merged)  # any order of parts


def test_a_partial_folder_of_another_store_format_is_discarded(tmp_path, capsys):
    fp = {"checkpoint": "x", "seed": 1}
    store = evaluation.BatchStore(tmp_path / ".partial", fp)
    store.save("main", [0, 1, 3], _batch_result([0, 1, 3], seed=0))
    _assert_results_equal(evaluation.BatchStore(tmp_path / ".partial", fp).load("main", [0, 1, 3]),
                          _batch_result([0, 1, 3], seed=0))
    assert "continuing after 1 finished batches" in capsys.readouterr().out
    stored = json.loads((tmp_path / ".partial" / "fingerprint.json").read_text())
    (tmp_path / ".partial" / "fingerprint.json").write_text(json.dumps({**stored, "store_format": 1}))
    again = evaluation.BatchStore(tmp_path / ".partial", fp)
    assert "starting afresh" in capsys.readouterr().out and again.load("main", [0, 1, 3]) is None


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
    for key in ("paper", "best", "copy_last_frame", "events", "audio_shuffled", "diversity", "num_clips"):
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
    # a file with --model_epoch: the epoch is a label only, as in the release
    assert gen.resolve_checkpoint(str(run / "checkpoints" / "best.pt"), 3) == run / "checkpoints" / "best.pt"
    # each checkpoint and each set of settings gets a folder of its own: no evaluation replaces another
    import evaluation

    s1 = evaluation.EvalSettings(n_past=5, n_future=10, nsample=20, num_clips=256)
    d1 = evaluation.eval_dir(run / "checkpoints" / "best.pt", {"epoch": 30}, s1)
    assert d1.parent == run / "eval" and d1.name.startswith("best_ep30_5+10_k20_N256_")
    assert evaluation.eval_dir(tmp_path / "model.pt", {}, s1).parent == tmp_path / "eval"
    others = [evaluation.eval_dir(run / "checkpoints" / "best.pt", {"epoch": 31}, s1),
              evaluation.eval_dir(run / "checkpoints" / "last.pt", {"epoch": 30}, s1),
              evaluation.eval_dir(run / "checkpoints" / "best.pt", {"epoch": 30},
                                  evaluation.EvalSettings(n_past=5, n_future=10, nsample=20, num_clips=256, seed=2))]
    assert len({d1, *others}) == 4
    assert d1 == evaluation.eval_dir(run / "checkpoints" / "best.pt", {"epoch": 30},
                                     evaluation.EvalSettings(n_past=5, n_future=10, nsample=20, num_clips=256,
                                                             num_workers=3))  # how it runs is not what it is
    # --data_root left out: the checkpoint's training data_root, whatever folders the current one holds
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        (tmp_path / "data").mkdir()  # as the repository root's data/ package
        assert gen.resolve_data_root(None, {"data_root": str(setup["data"])}) == (str(setup["data"]), True)
        with pytest.raises(InputError, match="not a folder here"):
            gen.resolve_data_root(None, {"data_root": str(tmp_path / "gone")})
        assert gen.resolve_data_root("elsewhere", {"data_root": str(setup["data"])}) == ("elsewhere", False)
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


def test_event_masks_by_hand():
    bounces = np.zeros((2, 8, 2), np.int8)
    bounces[0, 3, 1] = 1  # wall bounce of digit 1 at frame 3 -> frames 4, 5 (window 2)
    bounces[0, 6, 0] = 2  # block bounce at frame 6 -> frame 7 (8 is past the clip)
    bounces[1, 2, 0] = 1  # frames 3, 4: only 4 is scored
    blocks = np.array([[5, 5, 6], [-1, -1, -1]])
    m = metrics.event_masks(bounces, blocks, n_past=4, n_future=4, window=2)  # scored frames 4..7
    assert m["after_wall_bounce"].tolist() == [[True, True, False, False], [True, False, False, False]]
    assert m["after_block_bounce"].tolist() == [[False, False, False, True], [False] * 4]
    assert m["before_block"].tolist() == [[True, True, False, False], [False] * 4]
    assert m["after_block"].tolist() == [[False, False, True, True], [False] * 4]
    s = np.arange(8.0).reshape(2, 4)
    means = metrics.masked_means({"ssim": s, "psnr": 10 * s}, m)
    assert means["after_wall_bounce"] == {"ssim": (0 + 1 + 4) / 3, "psnr": 10 * (0 + 1 + 4) / 3, "frames": 3}
    assert metrics.masked_means({"ssim": s, "psnr": s}, {"none": np.zeros((2, 4), bool)})["none"] == {
        "ssim": None, "psnr": None, "frames": 0}
    with pytest.raises(ValueError, match="window"):
        metrics.event_masks(bounces, blocks, 4, 4, 0)


def test_derangement_has_no_fixed_point_and_is_fixed():
    for n in (2, 3, 7, 100):
        p = metrics.derangement(n, seed=1)
        assert sorted(p.tolist()) == list(range(n)) and not (p == np.arange(n)).any()
    assert metrics.derangement(50, 1).tolist() == metrics.derangement(50, 1).tolist()
    assert metrics.derangement(50, 1).tolist() != metrics.derangement(50, 2).tolist()


def test_event_metrics_equal_the_masked_per_clip_numbers(setup):
    """metrics.json's events = masked means of the per-clip scores re-computed from samples.npz."""
    out = setup["out"]
    with np.load(out / "samples.npz", allow_pickle=False) as z:
        gt, samples = z["gt"], z["samples"]
    fut = samples[:, :, N_PAST:]
    s, p = metrics.score_pairs(np.broadcast_to(gt[:, None, N_PAST:], fut.shape), fut)
    m = json.loads((out / "metrics.json").read_text())
    masks = metrics.event_masks(np.load(setup["data"] / "test" / "bounces.npy"),
                                np.load(setup["data"] / "test" / "blocks.npy"), N_PAST, N_FUTURE, 2)
    # scored frames 2..5; window 2: clip 0 walls at 1, 3 -> frames 2, 3, 4, 5; clip 1 at 2 -> 3, 4
    assert masks["after_wall_bounce"].sum() == 6 and masks["after_block_bounce"].sum() == 2
    want = metrics.masked_means(metrics.per_clip_paper({"ssim": s, "psnr": p}), masks)
    for group in metrics.EVENT_GROUPS:
        got = m["events"]["model"]["paper"][group]
        assert got["frames"] == want[group]["frames"]
        assert got["ssim"] == pytest.approx(want[group]["ssim"], abs=1e-9)
    assert m["events"]["window"] == 2 and m["events"]["copy_last_frame"]["after_block"]["frames"] == 4
    assert (out / "events.png").read_bytes()[:4] == b"\x89PNG"


def test_shuffled_audio_equals_evaluating_swapped_data(setup, tmp_path):
    """--shuffle_audio's numbers are those of a dataset whose audio was permuted by the derangement."""
    data = tmp_path / "swapped"
    import shutil

    shutil.copytree(setup["data"], data)
    stft = np.load(data / "test" / "stft.npy")
    np.save(data / "test" / "stft.npy", stft[metrics.derangement(N_CLIPS, 1)])
    r = gen.main(base_args(setup["tmp"] / "run", data, tmp_path / "o", *MAIN_FLAGS[:-3]))
    m = setup["result"]
    assert m["audio_shuffled"]["by_construction"] is False
    assert m["audio_shuffled"]["paper"]["ssim"] == pytest.approx(r["paper"]["ssim"], abs=1e-6)  # 1 vs 2 threads
    assert m["audio_shuffled"]["best"]["psnr"] == pytest.approx(r["best"]["psnr"], abs=1e-5)
    drop = m["audio_shuffled"]["drop"]["paper"]
    assert drop["ssim"] == pytest.approx(m["paper"]["ssim"] - r["paper"]["ssim"], abs=1e-6)
    assert abs(drop["ssim"]) > 1e-6  # this model reads its audio


def test_shuffled_audio_of_a_no_audio_model_is_zero(setup, tmp_path):
    make_checkpoint(tmp_path / "na" / "checkpoints" / "best.pt", use_audio=False, use_disc=False)
    r = gen.main(base_args(tmp_path / "na", setup["data"], tmp_path / "o", "--shuffle_audio", "--num_gifs", "0"))
    assert r["audio_shuffled"]["by_construction"] is True
    assert r["audio_shuffled"]["drop"]["paper"] == {"ssim": 0.0, "psnr": 0.0}
    # and it really ignores its audio: swapped audio gives bit-identical samples
    from checkpoints import load_model

    model, _ = load_model(tmp_path / "na" / "checkpoints" / "best.pt")
    frames = torch.rand(4, 2, 1, 48, 48)
    eps = torch.randn(3, 4, model.cfg.z_dim)
    a = model.sample(frames[:2], torch.rand(4, 2, 1, 23, 21), 2, 2, eps=eps)
    assert torch.equal(a, model.sample(frames[:2], torch.rand(4, 2, 1, 23, 21), 2, 2, eps=eps))


def test_the_release_evaluation_command_form(setup, tmp_path):
    """--model_path FILE --model_epoch N --log_path DIR, as the release's README wrote it."""
    logs = tmp_path / "log_directory"
    logs.mkdir()
    ckpt = setup["tmp"] / "run" / "checkpoints" / "best.pt"
    r = gen.main(["--model_path", str(ckpt), "--model_epoch", "1000", "--log_path", str(logs),
                  "--data_root", str(setup["data"]), "--log_dir", str(tmp_path / "out"), "--n_past", str(N_PAST),
                  "--n_future", str(N_FUTURE), "--nsample", "2", "--device", "cpu", "--num_gifs", "0"])
    saved = json.loads((logs / "results_epoch_1000.json").read_text())
    assert saved["paper"] == r["paper"] and saved["checkpoint"] == str(ckpt)
    assert "paper: SSIM" in (logs / "results_epoch_1000.txt").read_text()
    # a file path still gets one line appended
    gen.main(["--model_path", str(ckpt), "--log_path", str(tmp_path / "lines.txt"), "--data_root", str(setup["data"]),
              "--log_dir", str(tmp_path / "out2"), "--n_past", str(N_PAST), "--n_future", str(N_FUTURE),
              "--nsample", "2", "--device", "cpu", "--num_gifs", "0"])
    assert len((tmp_path / "lines.txt").read_text().splitlines()) == 1
    # an impossible --log_path is refused before any work
    with pytest.raises(InputError, match="--log_path .* does not exist"):
        gen.main(["--model_path", str(ckpt), "--log_path", str(tmp_path / "nowhere" / "x.txt"),
                  "--data_root", str(setup["data"]), "--log_dir", str(tmp_path / "out3"), "--nsample", "2",
                  "--n_past", str(N_PAST), "--n_future", str(N_FUTURE), "--device", "cpu"])
    assert not (tmp_path / "out3" / "metrics.json").exists()


def test_a_second_evaluation_into_one_folder_is_refused(setup, tmp_path, lock_holder):
    out = tmp_path / "busy"
    out.mkdir()
    holder = lock_holder(out, "evaluation")
    with pytest.raises(InputError, match=f"in use by another evaluation \\(process {holder.pid}\\)"):
        gen.main(base_args(setup["tmp"] / "run", setup["data"], out, "--num_gifs", "0"))
    assert not (out / "metrics.json").exists()


def _slow_eval_cmd(setup, out: Path) -> list[str]:
    # one clip per batch and many samples: several seconds, so a signal lands between batches
    return [sys.executable, str(ROOT / "generate_sound2sight.py"),
            *base_args(setup["tmp"] / "run", setup["data"], out, "--batch_size", "1", "--nsample", "40",
                       "--chunk_size", "8", "--num_gifs", "2", "--shuffle_audio")]


def _wait_for_batches(out: Path, proc, n: int) -> None:
    import time

    deadline = time.time() + 240
    while len(list((out / ".partial").glob("*.npz"))) < n and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)


def test_killed_evaluation_continues_and_matches_an_uninterrupted_one(setup, tmp_path):
    import signal

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    straight = subprocess.run(_slow_eval_cmd(setup, tmp_path / "a"), env=env, capture_output=True, text=True,
                              timeout=300, cwd=ROOT)
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "b"
    proc = subprocess.Popen(_slow_eval_cmd(setup, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    _wait_for_batches(out, proc, 2)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: what is on disk must be whole
    proc.wait(timeout=60)
    kept = len(list((out / ".partial").glob("*.npz")))
    assert kept >= 2 and not (out / "metrics.json").exists()
    again = subprocess.run(_slow_eval_cmd(setup, out), env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"continuing after {kept} finished batches" in again.stdout
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    for key in ("paper", "best", "copy_last_frame", "events", "audio_shuffled", "diversity"):
        assert a[key] == b[key], key
    assert not (out / ".partial").exists()
    for gif in ("clip_00000.gif", "clip_00001.gif"):
        np.testing.assert_array_equal(iio.imread(tmp_path / "a" / "gifs" / gif), iio.imread(out / "gifs" / gif))


def test_sigterm_stops_an_evaluation_between_batches(setup, tmp_path):
    import signal

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "t"
    proc = subprocess.Popen(_slow_eval_cmd(setup, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    _wait_for_batches(out, proc, 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Run the same command again to continue" in err and "Traceback" not in err
    assert not (out / ".lock").exists() and (out / ".partial" / "fingerprint.json").is_file()


def test_evaluation_tensorboard(setup):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(setup["out"] / "tensorboard" / "eval"), size_guidance={"scalars": 0})
    acc.Reload()
    m = json.loads((setup["out"] / "metrics.json").read_text())
    assert acc.Scalars("eval/paper/model_ssim")[0].value == pytest.approx(m["paper"]["ssim"], rel=1e-6)
    curve = acc.Scalars("eval_per_frame/paper/copy_last_frame_psnr")
    assert [e.step for e in curve] == list(range(N_PAST, N_PAST + N_FUTURE))
    assert acc.Scalars("eval/paper/constant_velocity_ssim")[0].value == pytest.approx(
        m["constant_velocity"]["paper"]["ssim"], rel=1e-6)
    assert "eval/audio_shuffle_drop_ssim" in acc.Tags()["scalars"]


def test_a_registered_metric_reaches_every_output(setup, tmp_path, monkeypatch):
    """Adding a metric is one registry entry: a toy one (mean absolute error, lower is better)
    shows up in every protocol, the baseline, the CSV, the events, the audio-shuffle drop and
    the headline, with values equal to the per-clip numbers recomputed from samples.npz."""
    def mae(gt, pred, settings):
        g, p = torch.as_tensor(np.asarray(gt), dtype=torch.float64), torch.as_tensor(np.asarray(pred), dtype=torch.float64)
        return (g - p).abs().mean(dim=(-3, -2, -1))

    monkeypatch.setitem(metrics.PAIR_METRICS, "mae", metrics.PairMetric("mae", False, "", "mean absolute error", mae))
    out = tmp_path / "o"
    m = gen.main(base_args(setup["tmp"] / "run", setup["data"], out, *MAIN_FLAGS, "--save_samples",
                           "--metrics", "ssim,psnr,mae", "--no_tensorboard"))
    assert m["metrics"] == ["ssim", "psnr", "mae"]
    with np.load(out / "samples.npz", allow_pickle=False) as z:
        gt, samples = z["gt"].astype(np.float64), z["samples"].astype(np.float64)
    err = np.abs(samples[:, :, N_PAST:] - gt[:, None, N_PAST:]).mean(axis=(3, 4, 5))  # [N, S, F]
    assert m["paper"]["mae_per_frame"] == pytest.approx(err.min(axis=1).mean(axis=0).tolist(), abs=1e-9)
    copy = np.abs(gt[:, N_PAST:] - gt[:, N_PAST - 1:N_PAST]).mean(axis=(2, 3, 4))
    assert m["copy_last_frame"]["paper"]["mae"] == pytest.approx(copy.mean(), abs=1e-9)
    assert "mae" in m["best"] and "mae" in m["events"]["model"]["paper"]["after_wall_bounce"]
    assert "mae" in m["audio_shuffled"]["drop"]["paper"]
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"model_paper_mae", "copy_last_frame_best_mae"} <= set(header)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="unknown metrics"):
        gen.main(base_args(setup["tmp"] / "run", setup["data"], tmp_path / "p", "--metrics", "ssim,lpips"))
