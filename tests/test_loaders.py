"""Tests for data/: the memory-mapped layout, the legacy GIF+pickle layout, and the converter.

Every dataset here is built by hand in tmp_path (tiny), independent of the generator.
"""
from __future__ import annotations

import json
import os
import pickle
import wave
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data import dataset_info, open_dataset
from data.convert_legacy import main as convert_main
from data.legacy import load_array_pickle
from errors import InputError

F, S = 23, 21


# ------------------------------------------------------------------------ builders
def make_new(root: Path, *, n=(4, 3), t=8, size=12, channels=1, seed=0, write_json=True) -> dict:
    """A dataset.json layout; returns the arrays written, per split."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "test"), n):
        d = root / split
        d.mkdir(parents=True)
        shape = (count, t, size, size) if channels == 1 else (count, t, size, size, channels)
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        stft = rng.random((count, t, F, S), dtype=np.float32) * 5
        np.save(d / "frames.npy", frames)
        np.save(d / "stft.npy", stft)
        arrays[split] = (frames, stft)
    meta = {"name": "M3SO", "format_version": 1, "image_size": size, "channels": channels, "num_frames": t,
            "fps": 10, "sample_rate": 4400, "samples_per_frame": 440,
            "stft": {"n_fft": 44, "hop_length": 22, "center": True, "window": "hann", "shape": [F, S]},
            "splits": {"train": n[0], "test": n[1]}}
    if write_json:
        (root / "dataset.json").write_text(json.dumps(meta))
    return arrays


def write_pickle(path: Path, obj, protocol: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def make_legacy(root: Path, *, n=(3, 2), t=6, size=16, seed=0, wav=True) -> dict:
    """The original layout: real GIFs (imageio) + pickled feature arrays (protocols 2 and 5, float32/64)."""
    rng = np.random.default_rng(seed)
    clips = {}
    for split, count in zip(("train", "test"), n):
        (root / split / "gif").mkdir(parents=True)
        clips[split] = {}
        for i in range(count):
            frames = rng.integers(0, 256, (t, size, size), dtype=np.uint8)  # [T, H, W]
            frames[1] = 0  # an all-zero frame must stay zero
            frames[2] //= 4  # a dim frame is brightened to its own maximum
            spec = (rng.random((t, F, S)) * 3).astype(np.float32 if i % 2 else np.float64)
            audio = (rng.random(t * 440) * 1.6 - 0.8).astype(np.float32)
            clip_id = str(i * 5)  # numeric ids, "10" must sort after "5"
            iio.imwrite(root / split / "gif" / f"{clip_id}.gif", frames, extension=".gif", duration=100, loop=0)
            write_pickle(root / split / "stft_wav_pickle" / f"{clip_id}.pickle", spec, protocol=2 if i % 2 else 5)
            if wav:
                (root / split / "wav").mkdir(exist_ok=True)
                write_wav16(root / split / "wav" / f"{clip_id}.wav", audio, 4400)
            clips[split][clip_id] = (frames, spec, audio)
    return clips


def write_wav16(path: Path, audio: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes())


def expected_scaled(frames: np.ndarray) -> np.ndarray:
    """Per-frame max scaling computed directly, frame by frame (zero frame -> zero)."""
    out = np.zeros(frames.shape, dtype=np.float64)
    for k, fr in enumerate(frames):
        if fr.max() > 0:
            out[k] = fr / fr.max()
    return out


# ------------------------------------------------------------------ new layout
def test_new_layout_grey_items(tmp_path):
    arrays = make_new(tmp_path)
    ds = open_dataset(tmp_path, "train", 5)
    assert len(ds) == 4
    frames, stft = arrays["train"]
    for i in range(len(ds)):
        video, audio = ds[i]
        assert video.shape == (5, 1, 12, 12) and video.dtype == torch.float32
        assert audio.shape == (5, 1, F, S) and audio.dtype == torch.float32
        assert 0.0 <= video.min() and video.max() <= 1.0
        np.testing.assert_allclose(video[:, 0].numpy() * 255.0, frames[i, :5], atol=1e-4)
        # scale_features (log1p) applied to the raw |STFT|, not the raw values themselves
        np.testing.assert_allclose(audio[:, 0].numpy(), np.log1p(stft[i, :5]), rtol=1e-6)
        assert not np.allclose(audio[:, 0].numpy(), stft[i, :5])
    info = dataset_info(tmp_path)
    assert info["layout"] == "m3so" and info["audio_shape"] == (F, S)
    assert info["splits"] == {"train": 4, "test": 3} and info["channels"] == 1 and info["image_size"] == 12
    assert info["num_frames"] == 8 and info["fps"] == 10  # dataset.json keys passed through


def test_new_layout_colour_channels_first(tmp_path):
    arrays = make_new(tmp_path, channels=3)
    ds = open_dataset(tmp_path, "test", 8, image_width=12, channels=3)
    video, _ = ds[2]
    assert video.shape == (8, 3, 12, 12)
    frames = arrays["test"][0]  # [N, T, H, W, C]
    # channel c of pixel (y, x) must be the stored [..., y, x, c]
    assert torch.allclose(video[3, 2, 5, 7], torch.tensor(frames[2, 3, 5, 7, 2] / 255.0, dtype=torch.float32))
    np.testing.assert_allclose(video.permute(0, 2, 3, 1).numpy() * 255.0, frames[2], atol=1e-4)


def test_random_windows_are_contiguous_and_cover_all_starts(tmp_path):
    make_new(tmp_path, n=(2, 1), t=8)
    # Encode the frame index into the pixels and the features so a window reveals its start.
    frames = np.broadcast_to(np.arange(8, dtype=np.uint8)[None, :, None, None] * 20, (2, 8, 12, 12)).copy()
    stft = np.broadcast_to(np.arange(8, dtype=np.float32)[None, :, None, None], (2, 8, F, S)).copy()
    np.save(tmp_path / "train" / "frames.npy", frames)
    np.save(tmp_path / "train" / "stft.npy", stft)
    ds = open_dataset(tmp_path, "train", 5, start="random")
    torch.manual_seed(0)
    starts = set()
    for _ in range(60):
        video, audio = ds[1]
        t_video = (video[:, 0, 0, 0] * 255 / 20).round().long()
        t_audio = torch.expm1(audio[:, 0, 0, 0]).round().long()
        assert torch.equal(t_video, t_audio)  # audio window aligned with the frames
        assert torch.equal(t_video, t_video[0] + torch.arange(5))
        starts.add(int(t_video[0]))
    assert starts == {0, 1, 2, 3}
    first = open_dataset(tmp_path, "train", 5)
    assert (first[0][0][:, 0, 0, 0] * 255 / 20).round().long().tolist() == [0, 1, 2, 3, 4]
    # torch RNG drives the window: the same seed gives the same windows
    torch.manual_seed(7)
    a = [ds[0][0][0, 0, 0, 0].item() for _ in range(10)]
    torch.manual_seed(7)
    b = [ds[0][0][0, 0, 0, 0].item() for _ in range(10)]
    assert a == b


def test_mmap_pickles_small_and_dataloader_workers(tmp_path):
    make_new(tmp_path, n=(8, 2), t=10, size=24)
    ds = open_dataset(tmp_path, "train", 6)
    assert isinstance(ds._frames, np.memmap) or isinstance(getattr(ds._frames, "base", None), np.memmap)
    array_bytes = (tmp_path / "train" / "frames.npy").stat().st_size
    blob = pickle.dumps(ds)
    assert len(blob) < 4096 < array_bytes  # paths travel, not the arrays
    clone = pickle.loads(blob)
    assert clone._frames is None  # re-mapped lazily on first use
    assert torch.equal(clone[3][0], ds[3][0])
    ref = [b for b in DataLoader(ds, batch_size=3, num_workers=0)]
    par = [b for b in DataLoader(ds, batch_size=3, num_workers=2)]
    assert len(ref) == len(par) == 3
    for (v0, a0), (v1, a1) in zip(ref, par):
        assert v0.shape[1:] == (6, 1, 24, 24) and torch.equal(v0, v1) and torch.equal(a0, a1)


# ------------------------------------------------------------------ legacy layout
def test_legacy_items_per_frame_max_and_zero_frame(tmp_path):
    clips = make_legacy(tmp_path)
    ds = open_dataset(tmp_path, "train", 6)
    assert ds.ids == ["0", "5", "10"]  # numeric order
    for i, clip_id in enumerate(ds.ids):
        frames, spec, _ = clips["train"][clip_id]
        video, audio = ds[i]
        assert video.shape == (6, 1, 16, 16) and audio.shape == (6, 1, F, S)
        assert video.dtype == torch.float32 and audio.dtype == torch.float32
        np.testing.assert_allclose(video[:, 0].numpy(), expected_scaled(frames), atol=1e-6)
        assert torch.all(video[1] == 0) and not torch.isnan(video).any()
        assert video[2].max() == 1.0  # the dim frame reaches 1 after its own max scaling
        np.testing.assert_allclose(audio[:, 0].numpy(), np.log1p(spec), rtol=1e-5)
    info = dataset_info(tmp_path)
    assert info["layout"] == "legacy" and info["splits"] == {"train": 3, "test": 2}
    assert info["audio_shape"] == (F, S) and info["image_size"] == 16 and info["channels"] == 1


def test_legacy_resize_and_rgb(tmp_path):
    make_legacy(tmp_path, n=(2, 1), wav=False)
    ds = open_dataset(tmp_path, "train", 4, image_width=8, channels=3)
    video, _ = ds[0]
    assert video.shape == (4, 3, 8, 8)
    assert torch.equal(video[:, 0], video[:, 1]) and torch.equal(video[:, 1], video[:, 2])  # grey GIF as RGB
    peaks = video.amax(dim=(1, 2, 3))
    assert torch.allclose(peaks[[0, 2, 3]], torch.ones(3)) and peaks[1] == 0
    r = open_dataset(tmp_path, "train", 4, start="random")
    assert r[1][0].shape == (4, 1, 16, 16)


def test_legacy_equals_converted(tmp_path):
    clips = make_legacy(tmp_path / "legacy")
    dest = tmp_path / "new"
    meta = convert_main(["--src", str(tmp_path / "legacy"), "--dest", str(dest)])
    on_disk = json.loads((dest / "dataset.json").read_text())
    assert on_disk == json.loads(json.dumps(meta))
    assert on_disk["name"] == "M3SO (legacy import)" and on_disk["format_version"] == 1
    assert on_disk["num_frames"] == 6 and on_disk["stft"]["shape"] == [F, S]
    assert on_disk["ids"] == {"train": ["0", "5", "10"], "test": ["0", "5"]}
    assert on_disk["source"]["layout"] == "legacy" and on_disk["splits"] == {"train": 3, "test": 2}
    assert dataset_info(dest)["layout"] == "m3so"
    for split in ("train", "test"):
        old, new = open_dataset(tmp_path / "legacy", split, 6), open_dataset(dest, split, 6)
        assert len(old) == len(new)
        for i in range(len(old)):
            (v_old, a_old), (v_new, a_new) = old[i], new[i]
            assert (v_old - v_new).abs().max() <= 0.5 / 255 + 1e-6
            assert torch.allclose(a_old, a_new, rtol=1e-6, atol=1e-7)
        audio = np.load(dest / split / "audio.npy", allow_pickle=False)
        src_audio = np.stack([clips[split][k][2] for k in old.ids])
        assert audio.shape == (len(old), 6 * 440) and audio.dtype == np.float32
        assert np.abs(audio - src_audio).max() < 1.0 / 32767 + 1e-6
    # existing dest is refused without --overwrite, replaced with it
    with pytest.raises(InputError, match="already exists"):
        convert_main(["--src", str(tmp_path / "legacy"), "--dest", str(dest)])
    convert_main(["--src", str(tmp_path / "legacy"), "--dest", str(dest), "--overwrite", "--image_width", "8"])
    assert np.load(dest / "train" / "frames.npy").shape == (3, 6, 8, 8)


def test_convert_leaves_audio_out_when_wav_unusable(tmp_path, capsys):
    clips = make_legacy(tmp_path / "legacy", n=(2, 1))
    write_wav16(tmp_path / "legacy" / "train" / "wav" / "5.wav", clips["train"]["5"][2], 8000)  # wrong rate
    (tmp_path / "legacy" / "test" / "wav" / "0.wav").unlink()
    convert_main(["--src", str(tmp_path / "legacy"), "--dest", str(tmp_path / "new")])
    out = capsys.readouterr().out
    assert "5.wav" in out and "8000" in out and "0.wav is missing" in out
    assert not (tmp_path / "new" / "train" / "audio.npy").exists()
    assert not (tmp_path / "new" / "test" / "audio.npy").exists()
    assert (tmp_path / "new" / "train" / "stft.npy").exists()


# ------------------------------------------------------------------ unsafe pickles
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickle_refused_and_not_run(tmp_path, protocol):
    make_legacy(tmp_path / "root", n=(2, 1), wav=False)
    marker = tmp_path / "pwned"
    evil = tmp_path / "root" / "train" / "stft_wav_pickle" / "5.pickle"
    write_pickle(evil, _Evil(marker), protocol)
    ds = open_dataset(tmp_path / "root", "train", 4)  # clip 0 is clean
    with pytest.raises(InputError, match=r"5\.pickle.*(posix|os|nt)\.system"):
        ds[1]
    with pytest.raises(InputError, match="refusing"):
        load_array_pickle(evil)
    assert not marker.exists()
    # the trusted part of the allow-list is no back door either
    write_pickle(evil, [1.0, 2.0], protocol)
    with pytest.raises(InputError, match=r"5\.pickle holds list"):
        load_array_pickle(evil)
    write_pickle(evil, np.zeros((4, F), dtype=np.float32), protocol)
    with pytest.raises(InputError, match=r"expected a float array \[T, F, S\]"):
        load_array_pickle(evil)
    evil.write_bytes(b"\x80\x05not a pickle")
    with pytest.raises(InputError, match=r"5\.pickle is not a readable array pickle"):
        load_array_pickle(evil)


# ------------------------------------------------------------------ bad inputs
def test_bad_roots_and_args(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path / 'nope'} does not exist"):
        open_dataset(tmp_path / "nope", "train", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is neither a Sound2Sight dataset .*generate_m3so.py --dest"):
        dataset_info(tmp_path / "empty")
    make_new(tmp_path / "ok")
    with pytest.raises(InputError, match="split 'valid' is not valid"):
        open_dataset(tmp_path / "ok", "valid", 4)
    with pytest.raises(InputError, match="start='middle'"):
        open_dataset(tmp_path / "ok", "train", 4, start="middle")
    with pytest.raises(InputError, match="seq_len 0"):
        open_dataset(tmp_path / "ok", "train", 0)
    with pytest.raises(InputError, match=r"frames.npy: clips have 8 frames, fewer than seq_len=9"):
        open_dataset(tmp_path / "ok", "train", 9)
    with pytest.raises(InputError, match=r"holds 12x12 frames.*pass --image_width 12"):
        open_dataset(tmp_path / "ok", "train", 4, image_width=48)
    with pytest.raises(InputError, match=r"holds 1-channel frames.*pass --channels 1"):
        open_dataset(tmp_path / "ok", "train", 4, channels=3)


def _fresh(tmp_path: Path, name: str, **kw) -> Path:
    root = tmp_path / name
    make_new(root, **kw)
    return root


def test_new_layout_bad_files(tmp_path):
    root = _fresh(tmp_path, "nosplit")
    import shutil
    shutil.rmtree(root / "test")
    with pytest.raises(InputError, match=f"{root / 'test'} is missing"):
        open_dataset(root, "test", 4)

    root = _fresh(tmp_path, "nostft")
    (root / "train" / "stft.npy").unlink()
    with pytest.raises(InputError, match=r"train/stft.npy is missing"):
        open_dataset(root, "train", 4)

    root = _fresh(tmp_path, "empty", n=(0, 2))
    with pytest.raises(InputError, match="train split has no clips"):
        open_dataset(root, "train", 4)

    root = _fresh(tmp_path, "dtype")
    np.save(root / "train" / "frames.npy", np.zeros((4, 8, 12, 12), dtype=np.float32))
    with pytest.raises(InputError, match=r"frames.npy has dtype float32, expected uint8"):
        open_dataset(root, "train", 4)

    root = _fresh(tmp_path, "stftdtype")
    np.save(root / "train" / "stft.npy", np.zeros((4, 8, F, S), dtype=np.float64))
    with pytest.raises(InputError, match=r"stft.npy has dtype float64, expected float32"):
        open_dataset(root, "train", 4)

    root = _fresh(tmp_path, "shape")
    np.save(root / "train" / "stft.npy", np.zeros((4, 8, F - 1, S), dtype=np.float32))
    with pytest.raises(InputError, match=r"disagree with dataset.json: F=22 \(dataset.json says 23\)"):
        open_dataset(root, "train", 4)

    root = _fresh(tmp_path, "count")
    np.save(root / "train" / "stft.npy", np.zeros((3, 8, F, S), dtype=np.float32))
    with pytest.raises(InputError, match=r"train/stft.npy has \(3, 8\) clips x frames"):
        open_dataset(root, "train", 4)

    root = _fresh(tmp_path, "json")
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match=r"dataset.json is not readable JSON"):
        open_dataset(root, "train", 4)
    (root / "dataset.json").write_text(json.dumps({"name": "x", "format_version": 1}))
    with pytest.raises(InputError, match=r"dataset.json lacks key\(s\) image_size"):
        open_dataset(root, "train", 4)

    root = _fresh(tmp_path, "pickled")
    np.save(root / "train" / "frames.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"frames.npy holds Python objects \(a pickle\), which are never loaded"):
        open_dataset(root, "train", 4)


def test_new_layout_nan_at_open_and_per_item(tmp_path):
    root = _fresh(tmp_path, "nan0", n=(10, 1))
    stft = np.load(root / "train" / "stft.npy")
    stft[0, 3, 1, 1] = np.nan
    np.save(root / "train" / "stft.npy", stft)
    with pytest.raises(InputError, match=r"stft.npy: clip 0 has NaN/inf"):
        open_dataset(root, "train", 4)
    # Whatever clip goes bad after open (the open-time check only samples), reading it is refused.
    root = _fresh(tmp_path, "nan_late", n=(10, 1))
    stft = np.load(root / "train" / "stft.npy")
    ds = open_dataset(root, "train", 4)
    for bad in range(10):
        stft_bad = stft.copy()
        stft_bad[bad, 2, 0, 0] = np.inf
        np.save(root / "train" / "stft.npy", stft_bad)
        ds._frames = ds._stft = None  # re-map the new file
        with pytest.raises(InputError, match=rf"stft.npy: clip {bad} has NaN/inf"):
            ds[bad]
        assert ds[(bad + 1) % 10][1].isfinite().all()


def test_legacy_bad_files(tmp_path):
    root = tmp_path / "leg"
    make_legacy(root, n=(3, 2), wav=False)
    with pytest.raises(InputError, match="split 'val' is not valid"):
        open_dataset(root, "val", 4)
    # gif without pickle, pickle without gif
    (root / "train" / "stft_wav_pickle" / "5.pickle").rename(tmp_path / "moved.pickle")
    with pytest.raises(InputError, match=r"stft_wav_pickle lacks 1 file\(s\).*5\.pickle"):
        open_dataset(root, "train", 4)
    (tmp_path / "moved.pickle").rename(root / "train" / "stft_wav_pickle" / "5.pickle")
    (root / "train" / "gif" / "10.gif").rename(tmp_path / "moved.gif")
    with pytest.raises(InputError, match=r"train/gif lacks 1 file\(s\).*10\.gif"):
        open_dataset(root, "train", 4)
    (tmp_path / "moved.gif").rename(root / "train" / "gif" / "10.gif")
    # clip shorter than seq_len: clip 0 at open, a later clip when read
    with pytest.raises(InputError, match=r"0\.pickle has 6 frames, fewer than seq_len=7"):
        open_dataset(root, "train", 7)
    iio.imwrite(root / "train" / "gif" / "10.gif", np.random.default_rng(1).integers(0, 256, (3, 16, 16), dtype=np.uint8),
                extension=".gif", duration=100, loop=0)
    ds = open_dataset(root, "train", 4)
    with pytest.raises(InputError, match=r"10\.gif has 3 frames, fewer than seq_len=4"):
        ds[2]
    # truncated / corrupt GIF
    data = (root / "train" / "gif" / "5.gif").read_bytes()
    (root / "train" / "gif" / "5.gif").write_bytes(data[:40])
    with pytest.raises(InputError, match=r"5\.gif is truncated or not a GIF.*re-download or re-generate"):
        ds[1]
    # wrong pickle shape for one clip
    write_pickle(root / "test" / "stft_wav_pickle" / "5.pickle", np.zeros((6, F, S + 1)), 4)
    with pytest.raises(InputError, match=r"5\.pickle holds features of shape \(23, 22\)"):
        open_dataset(root, "test", 4)[1]
    # NaN features
    write_pickle(root / "test" / "stft_wav_pickle" / "5.pickle", np.full((6, F, S), np.nan), 4)
    with pytest.raises(InputError, match=r"5\.pickle \(clip 1\) has NaN/inf"):
        open_dataset(root, "test", 4)[1]
    # missing and empty split
    import shutil
    shutil.rmtree(root / "test")
    with pytest.raises(InputError, match=r"test/gif is missing"):
        open_dataset(root, "test", 4)
    (root / "test" / "gif").mkdir(parents=True)
    (root / "test" / "stft_wav_pickle").mkdir()
    with pytest.raises(InputError, match=r"test/gif has no .gif files"):
        open_dataset(root, "test", 4)
    shutil.rmtree(root / "test" / "stft_wav_pickle")
    with pytest.raises(InputError, match=r"test/stft_wav_pickle is missing"):
        open_dataset(root, "test", 4)


def test_numpy1_pickles_load_and_converter_rejects_bad_src(tmp_path):
    # numpy 1.x wrote "numpy.core.multiarray"; numpy 2 writes "numpy._core.multiarray": both must load.
    spec = np.arange(2 * F * S, dtype=np.float64).reshape(2, F, S)
    blob = pickle.dumps(spec, protocol=2)
    assert b"numpy._core.multiarray" in blob
    path = tmp_path / "old.pickle"
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    np.testing.assert_array_equal(load_array_pickle(path), spec)
    (tmp_path / "src").mkdir()
    with pytest.raises(InputError, match=r"src is not the legacy M3SO layout"):
        convert_main(["--src", str(tmp_path / "src"), "--dest", str(tmp_path / "dest")])
    assert not (tmp_path / "dest").exists()


def test_mfcc_features_read_unscaled(tmp_path):
    make_new(tmp_path, n=(3, 2))
    meta = json.loads((tmp_path / "dataset.json").read_text())
    mfcc = np.random.default_rng(3).normal(size=(3, 8, 32, S)).astype(np.float32)  # log-scaled: negatives too
    np.save(tmp_path / "train" / "mfcc.npy", mfcc)
    meta.update(features="mfcc", mfcc={"n_mfcc": 32, "shape": [32, S], "file": "mfcc.npy"})
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    assert dataset_info(tmp_path)["audio_shape"] == (32, S)
    _, audio = open_dataset(tmp_path, "train", 4)[1]
    assert audio.shape == (4, 1, 32, S)
    np.testing.assert_array_equal(audio[:, 0].numpy(), mfcc[1, :4])  # no scale_features on MFCCs
    with pytest.raises(InputError, match=r"test/mfcc.npy is missing"):
        open_dataset(tmp_path, "test", 4)
    meta["mfcc"] = {"file": "../../etc/passwd", "shape": [32, S]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"dataset.json says features 'mfcc' but lacks a valid"):
        open_dataset(tmp_path, "train", 4)
    meta["features"] = "wavelets"
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"dataset.json has features 'wavelets'"):
        open_dataset(tmp_path, "train", 4)


def test_dataset_shapes_and_presets(tmp_path):
    from data import DataShapes, check_preset, dataset_shapes

    make_new(tmp_path / "new", size=12, channels=3)
    make_legacy(tmp_path / "leg", size=16, wav=False)
    assert dataset_shapes(tmp_path / "new") == DataShapes(12, 3, (F, S))
    assert dataset_shapes(tmp_path / "leg") == DataShapes(16, 1, (F, S))  # the GIFs' own size
    assert dataset_shapes(tmp_path / "not_yet", missing_ok=True) is None
    (tmp_path / "plain").mkdir()
    assert dataset_shapes(tmp_path / "plain", missing_ok=True) is None  # e.g. the code's own data/ package
    with pytest.raises(InputError, match="neither a Sound2Sight dataset"):
        dataset_shapes(tmp_path / "plain")
    (tmp_path / "new" / "dataset.json").write_text("{broken")
    with pytest.raises(InputError, match="is not readable JSON"):
        dataset_shapes(tmp_path / "new", missing_ok=True)  # a broken dataset is not a missing one
    check_preset("drums", DataShapes(64, 3, (45, 17)), "d")
    check_preset("painting", DataShapes(64, 3, (48, 17)), "d")
    check_preset("smmnist", DataShapes(12, 1, (32, 21)), "d")  # no preset shape: nothing to check
    with pytest.raises(InputError, match=r"--dataset drums expects 3x64x64 frames and \[45, 17\] or \[48, 17\] "
                                         r"audio features; d has 1x48x48 and \[23, 21\]; use --dataset av"):
        check_preset("drums", DataShapes(48, 1, (23, 21)), "d")
    with pytest.raises(InputError, match=r"has 3x64x64 and \[32, 17\]"):
        check_preset("painting", DataShapes(64, 3, (32, 17)), "d")
