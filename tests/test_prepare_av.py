"""data.prepare_av on real encoded videos written here with PyAV.

Each test video shows a red square moving along a known path on a grey background
whose level encodes the SOURCE frame index (so frame resampling can be read back
exactly), and carries a tone whose pitch changes at known 0.1 s boundaries (one per
output frame at 10 fps), defined in the file's absolute time so stream offsets matter.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from data.prepare_av import AVConfig, decode_video, main, prepare, split_videos
from errors import InputError

SRC_W, SRC_H = 96, 64  # centre crop keeps columns 16..79
CROP_LEFT = (SRC_W - SRC_H) // 2
OUT_W = 32  # output frames 32 x 32: one output px = 2 source px
SQ = 8  # square side, source px
AUDIO_SR = 16000
# Tone per 0.1 s slot of absolute time; frequencies are bin centres of the default
# per-frame STFT (n_fft 88 at 7,040 Hz -> 80 Hz bins): bins 5, 12, 20, 30.
TONE_BINS = np.array([5, 12, 20, 30])
BIN_HZ = 7040 / 88
BG0 = 10  # background grey of source frame 0; +3 per frame


def square_xy(i: int) -> tuple[int, int]:
    """Top-left (x, y) in source px of the square in source frame i: a known zig-zag path."""
    return 20 + (2 * i) % 36, 10 + (3 * i) % 30  # stays clear of the bottom-right corner


def background(i: int) -> int:
    """Grey level encoding source frame index i (steps of 3 survive the codec)."""
    return BG0 + 3 * i


def tone_slot_bin(slot: np.ndarray) -> np.ndarray:
    """STFT bin of the tone played during absolute time slot [0.1 s * slot, 0.1 s * (slot + 1))."""
    return TONE_BINS[(slot * 7 + slot // 3) % len(TONE_BINS)]


def write_video(path: Path, fps: int = 25, seconds: float = 3.0, audio: bool = True, video_offset: float = 0.0,
                audio_offset: float = 0.0, vcodec: str = "mpeg4", acodec: str = "aac",
                audio_gap: tuple[float, float] | None = None, audio_nan: tuple[float, float] | None = None) -> Path:
    """Encode a test video with PyAV; streams start at the given offsets (seconds).

    ``audio_gap=(a, b)``: audio frames starting in [a, b) s are not written (a timestamp jump).
    ``audio_nan=(a, b)``: the samples in [a, b) s are NaN (needs a float PCM codec such as
    ``acodec="pcm_f32le"`` in an .mkv: a lossy codec would not carry them).
    """
    n = int(round(seconds * fps))
    assert background(n - 1) <= 255, "too many frames for the background code"
    container = av.open(str(path), "w")
    vs = container.add_stream(vcodec, rate=fps)
    vs.width, vs.height, vs.pix_fmt = SRC_W, SRC_H, "yuv420p"
    vs.codec_context.qmax = 4  # near-lossless so grey levels and edges survive
    if audio:
        aus = container.add_stream(acodec, rate=AUDIO_SR)
        aus.layout = "mono"
    v0 = int(round(video_offset * fps))
    for i in range(n):
        img = np.full((SRC_H, SRC_W, 3), background(i), np.uint8)
        x, y = square_xy(i)
        img[y:y + SQ, x:x + SQ] = (255, 0, 0)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = v0 + i
        for packet in vs.encode(frame):
            container.mux(packet)
    for packet in vs.encode():
        container.mux(packet)
    if audio:
        t = audio_offset + np.arange(int(seconds * AUDIO_SR)) / AUDIO_SR  # absolute time of each sample
        freq = tone_slot_bin(np.floor(t * 10 + 1e-9).astype(int)) * BIN_HZ
        wave = (0.5 * np.sin(2 * np.pi * np.cumsum(freq) / AUDIO_SR)).astype(np.float32)
        if audio_nan:
            wave[(t >= audio_nan[0]) & (t < audio_nan[1])] = np.nan
        step = aus.codec_context.frame_size or 1024
        a0 = int(round(audio_offset * AUDIO_SR))
        for s in range(0, len(wave), step):
            if audio_gap and audio_gap[0] <= audio_offset + s / AUDIO_SR < audio_gap[1]:
                continue
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[None, s:s + step]), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = AUDIO_SR, a0 + s, Fraction(1, AUDIO_SR)
            for packet in aus.encode(frame):
                container.mux(packet)
        for packet in aus.encode():
            container.mux(packet)
    container.close()
    return path


def decode_background(level: np.ndarray) -> np.ndarray:
    """Inverse of :func:`background`."""
    return np.round((level - BG0) / 3).astype(int)


SMALL = dict(image_width=OUT_W, seq_len=5, previews=False)


def red_centroid(frames: np.ndarray) -> np.ndarray:
    """(x, y) centroid of red pixels per frame: frames uint8 [T, H, W, 3] -> [T, 2]."""
    f = frames.astype(np.float32)
    w = np.clip(f[..., 0] - f[..., 1] - 60.0, 0.0, None)  # [T, H, W] redness
    ys, xs = np.mgrid[:frames.shape[1], :frames.shape[2]]
    total = w.sum(axis=(1, 2))
    assert (total > 0).all(), "square not visible"
    return np.stack([(w * xs).sum(axis=(1, 2)) / total, (w * ys).sum(axis=(1, 2)) / total], axis=1)


def expected_source_index(start_time: float, n: int, src_fps: int, video_offset: float) -> np.ndarray:
    """Source frame shown at output frames start_time + k/10: the last one with pts <= that time."""
    t = start_time + np.arange(n) / 10
    return np.floor((t - video_offset) * src_fps + 1e-6).astype(int)


def check_video(v, src_fps: int, video_offset: float) -> None:
    """Frames show the drawn square/background, audio carries the drawn tone in sync."""
    n = len(v.frames)
    idx = expected_source_index(v.start_time, n, src_fps, video_offset)
    # Background level (corner far from the square path) decodes the source frame index.
    level = v.frames[:, -3:, -3:, 1].astype(float).mean(axis=(1, 2))
    np.testing.assert_array_equal(decode_background(level), idx)
    # Square centroid where it was drawn, after crop (-16 px) and 2x downscale.
    xy = np.array([square_xy(i) for i in idx], dtype=float)
    want = (xy + (SQ - 1) / 2 - [CROP_LEFT, 0] + 0.5) / (SRC_H / OUT_W) - 0.5
    got = red_centroid(v.frames)
    assert np.abs(got - want).max() < 1.0, np.abs(got - want).max()
    # Audio: frame k's STFT must show the tone of its own 0.1 s slot, in every interior
    # time step (so the sync error is well under one frame: < 2 hops = 12.5 ms).
    from data.features import frame_stft

    spec = frame_stft(v.audio, 704, 88, 44)  # [n, 45, 17]
    slots = np.round(v.start_time * 10).astype(int) + np.arange(n)
    peak = spec[:, :, 2:-2].argmax(axis=1)  # [n, 13] peak bin per interior time step
    np.testing.assert_array_equal(peak, np.repeat(tone_slot_bin(slots)[:, None], peak.shape[1], axis=1))


@pytest.mark.parametrize("name,src_fps,video_offset,audio_offset,acodec", [
    ("a.mp4", 25, 0.0, 0.0, "aac"),      # 25 fps -> 10 fps, aac with encoder priming
    ("b.mkv", 10, 0.0, 0.3, "mp3"),      # audio starts 0.3 s after the video
    ("c.mp4", 20, 0.2, 0.0, "aac"),      # video starts 0.2 s after the audio
    ("d.mkv", 4, 0.0, 0.0, "mp3"),       # slower source: frames repeated
])
def test_decode_frames_square_and_tone_sync(tmp_path, name, src_fps, video_offset, audio_offset, acodec):
    path = write_video(tmp_path / name, fps=src_fps, seconds=3.0 if src_fps > 4 else 4.0,
                       video_offset=video_offset, audio_offset=audio_offset, acodec=acodec)
    v = decode_video(path, AVConfig(**SMALL))
    assert v.frames.dtype == np.uint8 and v.frames.shape[1:] == (OUT_W, OUT_W, 3)
    assert v.audio.dtype == np.float32 and v.audio.shape == (len(v.frames) * 704,)
    # The usable timeline starts where both streams exist, on the video's grid.
    assert v.start_time == pytest.approx(max(video_offset, audio_offset), abs=1e-6)
    assert len(v.frames) >= 20
    check_video(v, src_fps, video_offset)


@pytest.mark.parametrize("name,acodec", [("gap.mp4", "aac"), ("gap.mkv", "mp3")])
def test_audio_gap_is_filled_with_silence_and_keeps_sync(tmp_path, name, acodec):
    path = write_video(tmp_path / name, seconds=3.0, acodec=acodec, audio_gap=(1.0, 1.5))
    v = decode_video(path, AVConfig(**SMALL))
    assert len(v.frames) == 30 and v.start_time == 0.0
    from data.features import frame_stft

    spec = frame_stft(v.audio, 704, 88, 44)  # [30, 45, 17]
    energy = spec.sum(axis=(1, 2))
    # Audio frames are 1024 (aac) / 576 (mp3) samples at 16 kHz: the gap covers 1.1 .. 1.5 s.
    assert (energy[11:15] < 1e-3 * energy[:10].mean()).all()
    # After the gap the tone is still where it was drawn (no shift by the missing 0.5 s).
    after = np.arange(16, 30)
    np.testing.assert_array_equal(spec[after].sum(axis=-1).argmax(axis=-1), tone_slot_bin(after))
    np.testing.assert_array_equal(spec[:10].sum(axis=-1).argmax(axis=-1), tone_slot_bin(np.arange(10)))


def test_prepare_layout_split_and_sources(tmp_path):
    src = tmp_path / "videos"
    (src / "sub").mkdir(parents=True)
    names = ["v0.mp4", "v1.mkv", "sub/v2.mp4", "sub/v3.mkv"]
    for i, n in enumerate(names):
        write_video(src / n, fps=25, seconds=2.0 + 0.4 * i, acodec="aac" if n.endswith("mp4") else "mp3")
    dest = prepare(src, tmp_path / "ds", test_fraction=0.5, seed=3, stride=3, progress=False, **SMALL)
    meta = json.loads((dest / "dataset.json").read_text())
    assert meta["name"] == "av" and meta["format_version"] == 1
    assert (meta["image_size"], meta["channels"], meta["num_frames"], meta["fps"]) == (OUT_W, 3, 5, 10)
    assert (meta["sample_rate"], meta["samples_per_frame"]) == (7040, 704)
    assert meta["stft"] == {"n_fft": 88, "hop_length": 44, "center": True, "window": "hann", "shape": [45, 17]}
    assert meta["features"] == "stft" and meta["flags"]["stride"] == 3 and meta["flags"]["seed"] == 3
    sources = json.loads((dest / "sources.json").read_text())
    assert json.loads((dest / "skipped.json").read_text()) == []

    split_of = {}
    for clip in sources["clips"]:
        assert split_of.setdefault(clip["source"], clip["split"]) == clip["split"], "video in both splits"
    assert sorted(split_of) == sorted(names)
    assert sorted(split_of.values()) == ["test", "test", "train", "train"]
    for split in ("train", "test"):
        frames = np.load(dest / split / "frames.npy", allow_pickle=False)
        audio = np.load(dest / split / "audio.npy", allow_pickle=False)
        stft = np.load(dest / split / "stft.npy", allow_pickle=False)
        clips = [c for c in sources["clips"] if c["split"] == split]
        n = meta["splits"][split]
        assert n == len(clips) == len(frames) > 0
        assert frames.shape == (n, 5, OUT_W, OUT_W, 3) and frames.dtype == np.uint8
        assert audio.shape == (n, 5 * 704) and audio.dtype == np.float32
        assert stft.shape == (n, 5, 45, 17) and stft.dtype == np.float32
        assert [c["index"] for c in clips] == list(range(n))
        # Each clip is what its source says: its frames decode to the source frames at its
        # start time, and its audio to the tone of those 0.1 s slots.
        for c in clips:
            assert c["start_frame"] % 3 == 0
            idx = expected_source_index(c["start_time"], 5, 25, 0.0)
            level = frames[c["index"], :, -3:, -3:, 1].astype(float).mean(axis=(1, 2))
            np.testing.assert_array_equal(decode_background(level), idx)
            slots = round(c["start_time"] * 10) + np.arange(5)
            np.testing.assert_array_equal(stft[c["index"]].sum(axis=-1).argmax(axis=-1), tone_slot_bin(slots))
    # Clip count per video: windows of 5 every 3 over floor(10 * duration) frames.
    per_video = {v["source"]: v["clips"] for v in sources["videos"]}
    for i, n in enumerate(names):
        k = round(10 * (2.0 + 0.4 * i))
        assert per_video[n] == (k - 5) // 3 + 1


def test_bad_inputs_are_skipped_with_reasons(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "good.mp4", seconds=1.5)
    write_video(src / "silent.mp4", seconds=1.5, audio=False)
    (src / "notes.mp4").write_text("this is a text file, not a video\n" * 20)
    write_video(src / "short.mkv", seconds=0.3, acodec="mp3")
    data = write_video(tmp_path / "full.mp4", seconds=1.5).read_bytes()
    (src / "cut.mp4").write_bytes(data[: len(data) // 2])  # moov atom lost
    data = write_video(tmp_path / "full.mkv", seconds=3.0, acodec="mp3").read_bytes()
    (src / "cut.mkv").write_bytes(data[: len(data) // 2])  # still decodes, but half is missing
    (src / "readme.txt").write_text("ignored: not a video extension")

    with pytest.warns(UserWarning, match="test split is empty"):
        dest = prepare(src, tmp_path / "ds", progress=False, **{**SMALL, "previews": True})
    assert (dest / "train" / "previews" / "clip0.gif").stat().st_size > 0
    assert (dest / "train" / "previews" / "clip0.wav").stat().st_size > 0
    skipped = {s["source"]: s["reason"] for s in json.loads((dest / "skipped.json").read_text())}
    assert sorted(skipped) == ["cut.mkv", "cut.mp4", "notes.mp4", "short.mkv", "silent.mp4"]
    assert skipped["silent.mp4"] == "no audio stream"
    assert "cannot open" in skipped["notes.mp4"] and "cannot open" in skipped["cut.mp4"]
    assert skipped["cut.mkv"].startswith("truncated")
    assert skipped["short.mkv"].startswith("too short") and "--seq_len 5" in skipped["short.mkv"]
    meta = json.loads((dest / "dataset.json").read_text())
    assert meta["splits"] == {"train": 3, "test": 0} and meta["skipped"] == 5
    assert np.load(dest / "test" / "frames.npy").shape == (0, 5, OUT_W, OUT_W, 3)
    assert {c["source"] for c in json.loads((dest / "sources.json").read_text())["clips"]} == {"good.mp4"}

    # Nothing usable, empty folder, missing --src, existing --dest: clear InputErrors.
    (src / "good.mp4").unlink()
    with pytest.raises(InputError, match="no usable video"):
        prepare(src, tmp_path / "ds2", progress=False, **SMALL)
    assert not (tmp_path / "ds2").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no video files"):
        prepare(tmp_path / "empty", tmp_path / "ds3", progress=False)
    with pytest.raises(InputError, match="--src"):
        prepare(tmp_path / "missing", tmp_path / "ds4", progress=False)
    with pytest.raises(InputError, match="--overwrite"):
        prepare(src, dest, progress=False)
    with pytest.raises(InputError, match="--n_fft"):
        prepare(src, tmp_path / "ds5", n_fft=2000, progress=False)
    with pytest.raises(InputError, match=r"--n_mels 60 leaves mel bands with no FFT bin .*use n_mels <= 54"):
        prepare(src, tmp_path / "ds6", features="mfcc", n_mels=60, progress=False)
    with pytest.raises(InputError, match=r"--n_mfcc 41 must be between 1 and n_mels = 40"):
        prepare(src, tmp_path / "ds6", features="mfcc", n_mfcc=41, progress=False)


def test_cli_list_file_grey_mfcc_and_workers(tmp_path, capsys):
    vids = tmp_path / "vids"
    vids.mkdir()
    for i in range(3):
        write_video(vids / f"clip{i}.mp4", seconds=1.5)
    listing = tmp_path / "list.txt"
    listing.write_text("# my videos\nvids/clip0.mp4\n\nvids/clip2.mp4\n" + str(vids.resolve() / "clip1.mp4") + "\n")
    args = ["--src", str(listing), "--image_width", str(OUT_W), "--seq_len", "5", "--channels", "1",
            "--features", "mfcc", "--test_fraction", "0.3", "--no_previews"]
    dest = main(args + ["--dest", str(tmp_path / "ds1")])
    assert "train" in capsys.readouterr().out
    meta = json.loads((dest / "dataset.json").read_text())
    assert meta["channels"] == 1 and meta["features"] == "mfcc" and meta["mfcc"]["shape"] == [32, 17]
    assert meta["splits"] == {"train": 6, "test": 3} and meta["videos"] == {"train": 2, "test": 1}
    frames = np.load(dest / "train" / "frames.npy")
    assert frames.shape == (6, 5, OUT_W, OUT_W) and frames.dtype == np.uint8
    stft = np.load(dest / "train" / "stft.npy")
    mfcc = np.load(dest / "train" / "mfcc.npy")
    assert mfcc.shape == (6, 5, 32, 17) and np.isfinite(mfcc).all()
    # librosa's MFCCs of the same per-frame power spectrum (n_mels 40, n_mfcc 32, dB without top_db)
    import librosa

    mel = librosa.feature.melspectrogram(S=stft.astype(np.float64) ** 2, sr=7040, n_fft=88, n_mels=40)
    want = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=32)
    np.testing.assert_allclose(mfcc, want, rtol=1e-4, atol=2e-3)
    sources = json.loads((dest / "sources.json").read_text())
    assert {c["source"] for c in sources["clips"]} == {"vids/clip0.mp4", "vids/clip1.mp4", "vids/clip2.mp4"}

    # Two worker processes give the same dataset as one.
    dest2 = main(args + ["--dest", str(tmp_path / "ds2"), "--workers", "2"])
    for split in ("train", "test"):
        for f in ("frames.npy", "audio.npy", "stft.npy", "mfcc.npy"):
            np.testing.assert_array_equal(np.load(dest / split / f), np.load(dest2 / split / f))
    assert json.loads((dest2 / "sources.json").read_text()) == sources

    with pytest.raises(SystemExit):
        main(["--src", str(listing)])  # --dest missing: argparse error


def test_split_by_video_is_deterministic_and_keeps_train():
    names = [f"v{i}" for i in range(10)]
    a = split_videos(names, 0.3, seed=1)
    assert a == split_videos(list(reversed(names)), 0.3, seed=1)
    assert sum(s == "test" for s in a.values()) == 3
    assert any(split_videos(names, 0.3, seed=s) != a for s in range(2, 6))
    assert split_videos(["x", "y"], 0.9, seed=0) in ({"x": "train", "y": "test"}, {"x": "test", "y": "train"})
    assert sorted(split_videos(["x", "y"], 0.01, seed=0).values()) == ["test", "train"]
    assert split_videos(["x"], 0.5, seed=0) == {"x": "train"}
    assert set(split_videos(names, 0.0, seed=0).values()) == {"train"}
