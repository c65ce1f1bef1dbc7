"""Turn real videos with sound into the shared on-disk dataset layout (``name: "av"``).

``python -m data.prepare_av --src PATH --dest DIR`` decodes every video under ``--src``
(a folder searched recursively, a text file listing one video per line, or one video)
with PyAV, cuts fixed-length clips and writes ``DIR`` in the layout every loader reads
(see the data contract): ``dataset.json``, ``{train,test}/frames.npy``, ``audio.npy``,
``stft.npy`` (``mfcc.npy`` too with ``--features mfcc``), plus ``sources.json`` (where
every clip came from) and ``skipped.json`` (every file that gave nothing, with why).

How audio and video are kept in sync
------------------------------------
Everything is placed on one clock: presentation timestamps in seconds, as exact
fractions (``pts * time_base``), in the source file's own timeline.

* Video defines the grid. Let ``t0`` be the timestamp of the first decoded video frame.
  Output frame ``k`` shows the instant ``g_k = t0 + k / fps``: it is the last decoded frame
  whose timestamp is ``<= g_k`` (frames are repeated or dropped, never blended). A
  source at 25 fps therefore keeps frames 0, 2.5, 5, ... -> 0, 3, 5, 8, ... (floor).
* Audio is decoded, mixed to mono and resampled to ``sample_rate = fps * samples_per_frame``
  by ``av.AudioResampler``. Resampled sample ``i`` is at time ``a0 + i / sample_rate``,
  where ``a0`` is the timestamp of the first decoded audio frame (after the decoder has
  dropped codec priming such as AAC's). A gap between decoded audio frames (timestamp
  ahead of the samples received so far by more than ``_GAP_TOLERANCE_S``) is filled with
  silence before resampling, so later samples keep their time.
* Frame ``k`` owns the audio samples of ``[g_k, g_{k+1})``, i.e. the ``samples_per_frame``
  samples starting at index ``round((t0 - a0) * sample_rate) + k * samples_per_frame``.
  When the audio starts after the video the first frames (those whose interval is not
  fully covered by audio) are dropped; the usable length is where both streams exist.
* Clips are windows of ``seq_len`` such frames every ``stride`` frames; ``sources.json``
  records each clip's start time in the source's timeline.

Only the first video and first audio stream of each file are used; rotation metadata is
ignored. A file is skipped (and listed in ``skipped.json``) when it cannot be opened or
decoded (FFmpeg reports an error anywhere: a corrupt file is not trusted), ends more than
``max(0.25 s, 5 %)`` before the duration its header declares (a truncated file),
has no video or no audio stream, has NaN/inf audio samples, or is shorter than one clip.

Features
--------
Computed by the feature registry (:data:`data.features.FEATURES`) with
``samples_per_frame = 16 * hop_length`` (-> 17 time steps). ``stft.npy`` is always
written: the raw per-frame ``|STFT|`` (``[45, 17]`` by default; loaders scale it with
``log1p``). ``--features K`` additionally writes kind K's file, e.g. ``mfcc`` ->
``mfcc.npy`` ``[N, T, n_mfcc, S]`` (librosa MFCCs of the same frames, ``[32, 17]`` by
default; read as stored), and ``dataset.json`` says which one the model reads
(``"features"``).

Splits are by SOURCE VIDEO (no video has clips in both): the usable videos, sorted by
path, are shuffled with ``--seed`` and ``round(test_fraction * n)`` of them (at least one
when ``test_fraction > 0``, at most ``n - 1``) go to test. With a single usable video
the test split is empty and a warning says so; empty splits are still written (arrays
with N = 0) so loaders never meet a missing file.
"""
from __future__ import annotations

import argparse
import json
import math
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cli import ArgumentParser, plain_text
from data.dataset_format import SPLITS, DatasetMeta, check_dest, stoppable
from data.features import DEFAULT_FEATURE, FEATURES, FrameSettings, get_feature
from errors import InputError, run_cli
from files import atomic_dir, atomic_save_npy, atomic_write_json
from signals import StopSignals, pool_context, stop_pool, worker_signals

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
HOPS_PER_FRAME = 16  # samples_per_frame = 16 * hop_length -> 17 centred STFT time steps
_GAP_TOLERANCE_S = 0.02  # audio timestamp jumps beyond this are real gaps, filled with silence
_TRUNCATION_TOLERANCE_S = 0.25  # decoded end may fall this far (or 5 %) short of the declared duration


@dataclass(frozen=True)
class AVConfig:
    """Every flag of the preparer; :meth:`validate` checks them, derived rates are properties."""

    image_width: int = 64
    channels: int = 3
    fps: int = 10
    seq_len: int = 30
    stride: int | None = None  # None -> seq_len (non-overlapping clips)
    features: str = DEFAULT_FEATURE
    n_fft: int = 88
    hop_length: int = 44
    n_mfcc: int = 32
    n_mels: int = 40
    frame_samples: int | None = None  # sound samples per video frame; None: HOPS_PER_FRAME * hop_length
    test_fraction: float = 0.1
    seed: int = 0
    workers: int = 1
    previews: bool = True

    @property
    def samples_per_frame(self) -> int:
        return self.frame_samples or HOPS_PER_FRAME * self.hop_length

    @property
    def sample_rate(self) -> int:
        return self.fps * self.samples_per_frame

    @property
    def clip_stride(self) -> int:
        return self.seq_len if self.stride is None else self.stride

    @property
    def frame_settings(self) -> FrameSettings:
        """The audio analysis of every feature kind (:mod:`data.features`)."""
        return FrameSettings(sample_rate=self.sample_rate, samples_per_frame=self.samples_per_frame,
                             n_fft=self.n_fft, hop_length=self.hop_length, n_mfcc=self.n_mfcc, n_mels=self.n_mels)

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad flag."""
        checks = [
            (self.image_width >= 4, "--image_width must be >= 4"),
            (self.channels in (1, 3), "--channels must be 1 (grey) or 3 (RGB)"),
            (self.fps >= 1, "--fps must be a positive integer"),
            (self.seq_len >= 1, "--seq_len must be >= 1"),
            (self.clip_stride >= 1, "--stride must be >= 1"),
            (self.features in FEATURES, f"--features must be one of {', '.join(FEATURES)}"),
            (self.hop_length >= 1, "--hop_length must be >= 1"),
            (self.frame_samples is None or self.frame_samples >= 1, "--frame_samples must be >= 1"),
            (2 <= self.n_fft and self.n_fft // 2 < self.samples_per_frame,
             f"--n_fft must be >= 2 and n_fft // 2 < samples_per_frame = 16 * hop_length = {self.samples_per_frame}"),
            (0.0 <= self.test_fraction < 1.0, "--test_fraction must be in [0, 1)"),
            (self.workers >= 1, "--num_workers must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        try:  # the kind's own settings (e.g. mfcc: n_mfcc <= n_mels, no empty mel band)
            get_feature(self.features).check(self.frame_settings)
        except ValueError as err:
            raise InputError(f"--{err} (needed by --features {self.features})") from None  # message starts with the flag


class SkipVideo(Exception):
    """A file that yields no usable clip; the message is the reason recorded in skipped.json."""


class Cancelled(Exception):
    """Decoding gave up because a stop was asked for (``should_stop``)."""


@dataclass
class DecodedVideo:
    """One source video on the output grid, restricted to where both streams exist."""

    frames: np.ndarray  # uint8 [K, H, W, C]
    audio: np.ndarray  # float32 [K * L]
    start_time: float  # source-timeline seconds of frames[0]
    source_fps: float | None  # the video stream's average rate (informational)
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ inputs
def list_videos(src: str | Path) -> tuple[list[Path], Path]:
    """Videos named by ``--src`` and the folder their recorded names are relative to.

    A folder is searched recursively for ``VIDEO_EXTS`` (case-insensitive); a file with a
    video extension is that one video; any other file is a UTF-8 list, one path per line
    (relative to the list's folder or absolute; blank lines and ``#`` comments ignored).
    Duplicates are dropped; the order is sorted, so results do not depend on listing order.
    """
    src = Path(src)
    if not src.exists():
        raise InputError(f"--src {src}: no such file or folder; pass a folder of videos or a text file listing them")
    if src.is_dir():
        root = src
        paths = [p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS]
        if not paths:
            raise InputError(f"--src {src}: no video files ({', '.join(VIDEO_EXTS)}) found in this folder or below")
    elif src.suffix.lower() in VIDEO_EXTS:
        root, paths = src.parent, [src]
    else:
        root = src.parent
        try:
            lines = src.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise InputError(f"--src {src}: not a UTF-8 text list of videos; "
                             "pass a folder, a video or a list file") from None
        paths = []
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                paths.append(p if p.is_absolute() else root / p)
        if not paths:
            raise InputError(f"--src {src}: the list names no videos; put one video path per line")
    unique = {p.resolve(): p for p in paths}
    return sorted(unique.values(), key=lambda p: _display_name(p, root)), root


def _display_name(path: Path, root: Path) -> str:
    """Path as recorded in sources/skipped.json: relative to ``root`` when inside it."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


# ---------------------------------------------------------------------------- decoding
def _to_image(frame, width: int, channels: int) -> np.ndarray:
    """Centre square crop + anti-aliased (Lanczos) resize of a decoded frame -> uint8 [W, W, C]."""
    from PIL import Image

    img = frame.to_image()  # PIL RGB, colour conversion by libswscale
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    # box= crops and resizes in one pass; reducing_gap does a cheap integer pre-shrink first.
    img = img.resize((width, width), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side),
                     reducing_gap=3.0)
    if channels == 1:
        return np.asarray(img.convert("L"))[..., None]
    return np.asarray(img)


def _frame_time(frame, stream) -> Fraction | None:
    """Exact timestamp in seconds of a decoded frame, or None when it carries none."""
    if frame.pts is None:
        return None
    tb = frame.time_base if frame.time_base is not None else stream.time_base
    return Fraction(frame.pts) * Fraction(tb)


def decode_video(path: str | Path, cfg: AVConfig, should_stop: Callable[[], bool] | None = None) -> DecodedVideo:
    """Decode one file onto the output grid (see the module docstring for the sync rule).

    Raises :class:`SkipVideo` with a one-line reason when the file is not usable, and
    :class:`Cancelled` as soon as ``should_stop()`` says so (it is asked once per packet).
    """
    import av

    fps = cfg.fps
    sr, spf = cfg.sample_rate, cfg.samples_per_frame
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise SkipVideo(f"cannot open as a video ({_short(err)})") from None
    with container:
        if not container.streams.video:
            raise SkipVideo("no video stream")
        if not container.streams.audio:
            raise SkipVideo("no audio stream")
        vstream, astream = container.streams.video[0], container.streams.audio[0]
        vstream.thread_type = "AUTO"
        rate = vstream.average_rate or vstream.guessed_rate
        source_fps = float(rate) if rate else None
        nominal = 1 / Fraction(rate) if rate else Fraction(1, fps)  # frame duration when nothing better is known

        frames_out: list[np.ndarray] = []  # each uint8 [W, W, C], one per grid point
        t0: Fraction | None = None
        prev, prev_t, prev_img = None, None, None
        last_gap: Fraction | None = None

        def emit_until(limit: Fraction) -> None:
            # Grid points g_k with prev_t <= g_k < limit show `prev`.
            nonlocal prev_img
            while t0 + Fraction(len(frames_out), fps) < limit:
                if prev_img is None:
                    prev_img = _to_image(prev, cfg.image_width, cfg.channels)
                frames_out.append(prev_img)

        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        chunks: list[np.ndarray] = []  # float32 [n] pieces of the resampled stream
        a0: Fraction | None = None
        a_in_pos = Fraction(0)  # seconds of input audio handed to the resampler so far

        def push_audio(aframe) -> None:
            for out in resampler.resample(aframe):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))

        try:
            for packet in container.demux(vstream, astream):
                if should_stop is not None and should_stop():
                    raise Cancelled
                for frame in packet.decode():
                    if packet.stream.type == "video":
                        t = _frame_time(frame, vstream)
                        if t is None:  # no timestamp: assume the nominal rate after the previous frame
                            t = Fraction(0) if prev_t is None else prev_t + nominal
                        if prev is None:
                            t0 = t
                        elif t <= prev_t:
                            continue  # out-of-order or duplicate timestamp: keep the first
                        else:
                            emit_until(t)
                            last_gap = t - prev_t
                        prev, prev_t, prev_img = frame, t, None
                    else:
                        if frame.samples == 0:
                            continue
                        t = _frame_time(frame, astream)
                        if a0 is None:
                            a0 = t if t is not None else (t0 or Fraction(0))
                        elif t is not None and t - a0 - a_in_pos > _GAP_TOLERANCE_S:
                            gap = int(round((t - a0 - a_in_pos) * frame.sample_rate))
                            push_audio(_silence_like(frame, gap))
                            a_in_pos += Fraction(gap, frame.sample_rate)
                        push_audio(frame)
                        a_in_pos += Fraction(frame.samples, frame.sample_rate)
            push_audio(None)  # flush the resampler
        except av.error.FFmpegError as err:
            raise SkipVideo(f"corrupt or truncated stream ({_short(err)})") from None

        if prev is None:
            raise SkipVideo("video stream has no decodable frames")
        if a0 is None:
            raise SkipVideo("audio stream has no decodable samples")
        # The last frame lasts as long as the one before it (or the nominal frame time).
        last_dur = last_gap if last_gap is not None else nominal
        emit_until(prev_t + last_dur)
        declared = container.duration / 1e6 if container.duration else None  # AV_TIME_BASE is microseconds
        origin = container.start_time / 1e6 if container.start_time is not None else 0.0

    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    bad = np.flatnonzero(~np.isfinite(audio))
    if len(bad):  # a float PCM stream can carry them; its features would be NaN too
        raise SkipVideo(f"audio has {len(bad)} NaN/inf samples (the first at {float(a0) + bad[0] / sr:.2f} s)")
    # A file cut short still decodes (mkv, webm): trust its header's duration over what came out.
    decoded_end = max(float(prev_t + last_dur), float(a0) + len(audio) / sr) - origin
    if declared and declared - decoded_end > max(_TRUNCATION_TOLERANCE_S, 0.05 * declared):
        raise SkipVideo(f"truncated: decoded {decoded_end:.2f} s of the {declared:.2f} s the file declares")
    # Usable grid: frames whose whole audio interval [g_k, g_k+1) lies inside the audio.
    k_start = max(0, math.ceil((a0 - t0) * fps))
    a_end = a0 + Fraction(len(audio), sr)
    k_end = min(len(frames_out), math.floor((a_end - t0) * fps))
    offset = round((t0 + Fraction(k_start, fps) - a0) * sr)  # sample index of g_{k_start}
    offset = max(offset, 0)
    if k_end > k_start:
        k_end = min(k_end, k_start + (len(audio) - offset) // spf)
    n = max(0, k_end - k_start)
    info = {"decoded_video_frames": len(frames_out), "video_start": float(t0), "audio_start": float(a0),
            "audio_seconds": len(audio) / sr}
    if n < cfg.seq_len:
        raise SkipVideo(f"too short: {n} usable frames at {fps} fps (video and audio overlap), "
                        f"need --seq_len {cfg.seq_len}")
    frames = np.stack(frames_out[k_start:k_start + n])
    return DecodedVideo(frames=frames, audio=np.ascontiguousarray(audio[offset:offset + n * spf]),
                        start_time=float(t0 + Fraction(k_start, fps)), source_fps=source_fps, info=info)


_SILENCE = {"u8": (np.uint8, 128), "s16": (np.int16, 0), "s32": (np.int32, 0), "s64": (np.int64, 0),
            "flt": (np.float32, 0), "dbl": (np.float64, 0)}


def _silence_like(frame, samples: int):
    """A silent audio frame with ``frame``'s format, layout and rate (to fill a timestamp gap)."""
    import av

    fmt = frame.format
    n_ch = len(frame.layout.channels)
    dtype, zero = _SILENCE[fmt.name.rstrip("p")]
    shape = (n_ch, samples) if fmt.is_planar else (1, samples * n_ch)
    silent = av.AudioFrame.from_ndarray(np.full(shape, zero, dtype=dtype), format=fmt.name, layout=frame.layout.name)
    silent.sample_rate = frame.sample_rate
    return silent


def _short(err: BaseException) -> str:
    """One line of an exception, without the file path FFmpeg repeats."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    text = text.splitlines()[0]
    return text[:200]


_WORKER_STOP: list[Any] = []  # in a decoding process: the parent's stop event


def _init_decoder(event: Any) -> None:
    """Decoding-process initializer: signals as :func:`signals.worker_signals` says; ``event`` set = give up
    the current file."""
    worker_signals()
    _WORKER_STOP[:] = [event]


def _decode_job(args: tuple[str, AVConfig],
                should_stop: Callable[[], bool] | None = None) -> tuple[str, DecodedVideo | None, str | None]:
    """Process-pool entry point: (path, decoded or None, skip reason or None); :class:`Cancelled` on a stop."""
    path, cfg = args
    if should_stop is None and _WORKER_STOP:
        should_stop = _WORKER_STOP[0].is_set
    try:
        return path, decode_video(path, cfg, should_stop), None
    except SkipVideo as why:
        return path, None, str(why)


# ---------------------------------------------------------------------------- assembly
def split_videos(names: Sequence[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Map each video name to "train" or "test", deterministic in (sorted names, seed)."""
    names = sorted(names)
    n = len(names)
    n_test = 0
    if n >= 2 and test_fraction > 0:
        n_test = min(n - 1, max(1, round(test_fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    test = {names[i] for i in order[:n_test]}
    return {name: ("test" if name in test else "train") for name in names}


def prepare(src: str | Path, dest: str | Path, overwrite: bool = False, progress: bool = True,
            **flags: Any) -> Path:
    """Prepare ``src`` videos into the dataset folder ``dest`` and return its path.

    ``flags`` are the fields of :class:`AVConfig` (the CLI flags without dashes).
    Raises :class:`InputError` for bad flags or paths (``dest`` is checked before any
    decoding: :func:`data.dataset_format.check_dest`), when no file gives a clip, or for a
    full disk. A SIGTERM/SIGINT stops it between videos (and between the writing steps)
    with :class:`signals.StopRequested`; decoding processes are ended too, and nothing is
    left at ``dest`` (or the previous dataset is).
    """
    unknown = set(flags) - set(AVConfig.__dataclass_fields__)
    if unknown:
        raise InputError(f"prepare(): unknown option(s) {sorted(unknown)}; see python -m data.prepare_av --help")
    cfg = AVConfig(**flags)
    cfg.validate()
    dest = Path(dest)
    check_dest(dest, overwrite)
    paths, root = list_videos(src)
    with stoppable(dest) as stop:
        results = _decode_all([str(p) for p in paths], cfg, progress, stop)
        skipped = [{"source": _display_name(Path(p), root), "reason": why} for p, v, why in results if v is None]
        videos = {_display_name(Path(p), root): v for p, v, _ in results if v is not None}
        if not videos:
            reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in skipped[:3])
            raise InputError(f"--src {src}: no usable video (need video + audio, >= --seq_len {cfg.seq_len} frames "
                             f"at {cfg.fps} fps); {len(skipped)} skipped, e.g. {reasons}")
        assignment = split_videos(list(videos), cfg.test_fraction, cfg.seed)
        warn = []
        if cfg.test_fraction > 0 and len(videos) == 1:
            warn.append("only one usable video: every clip is in train and the test split is empty")
            warnings.warn(f"data.prepare_av: {warn[-1]}", UserWarning, stacklevel=2)
        stop.check()
        _write(dest, overwrite, cfg, src, videos, assignment, skipped, warn, stop)
    return dest


def _decode_all(paths: list[str], cfg: AVConfig, progress: bool,
                stop: StopSignals) -> list[tuple[str, DecodedVideo | None, str | None]]:
    """Decode every file, in order (``cfg.workers`` processes); ``stop.check()`` between files.

    A stop is seen within one packet: in one process, decoding asks ``stop`` itself; with
    worker processes (which leave SIGINT to the parent; SIGTERM ends them) the parent polls
    for each result every 0.1 s and on a stop or an error sets an event that makes the
    running decodes give up, then joins the workers (:func:`signals.stop_pool`)."""
    from tqdm import tqdm

    jobs = [(p, cfg) for p in paths]
    bar = dict(total=len(jobs), desc="videos", unit="file", disable=not progress)
    if cfg.workers == 1 or len(jobs) == 1:
        results = []
        for job in tqdm(jobs, **bar):
            stop.check()
            try:
                results.append(_decode_job(job, should_stop=lambda: bool(stop.requested)))
            except Cancelled:
                stop.check()
                raise
        return results
    ctx = pool_context()  # never fork: the caller may already have decoded (FFmpeg's threads)
    event = ctx.Event()
    with ProcessPoolExecutor(max_workers=min(cfg.workers, len(jobs)), mp_context=ctx, initializer=_init_decoder,
                             initargs=(event,)) as pool:
        futures = [pool.submit(_decode_job, job) for job in jobs]
        results = []
        try:
            with tqdm(**bar) as progress_bar:
                for future in futures:
                    while True:
                        stop.check()
                        try:
                            results.append(future.result(timeout=0.1))
                            break
                        except FutureTimeout:
                            pass
                    progress_bar.update(1)
        except BaseException as err:
            stop_pool(pool, event)
            if isinstance(err, BrokenProcessPool):
                raise InputError("a --num_workers decoding process died (killed by the system, e.g. out of "
                                 "memory); run again with fewer --num_workers") from None
            raise
    return results


def _clip_starts(n_frames: int, seq_len: int, stride: int) -> range:
    return range(0, n_frames - seq_len + 1, stride)


def _write(dest: Path, overwrite: bool, cfg: AVConfig, src, videos: dict[str, DecodedVideo],
           assignment: dict[str, str], skipped: list[dict], warn: list[str], stop: StopSignals) -> None:
    from media import save_gif, write_wav

    T, L = cfg.seq_len, cfg.samples_per_frame
    W, C = cfg.image_width, cfg.channels
    kinds = [get_feature(name) for name in dict.fromkeys((DEFAULT_FEATURE, cfg.features))]  # stft always
    clips_meta: list[dict] = []
    video_meta: list[dict] = []
    counts = {}
    with atomic_dir(dest, overwrite=overwrite) as tmp:
        for split in SPLITS:
            stop.check()
            names = [n for n in sorted(videos) if assignment[n] == split]
            per_video = [(n, _clip_starts(len(videos[n].frames), T, cfg.clip_stride)) for n in names]
            n_clips = sum(len(starts) for _, starts in per_video)
            frames = np.empty((n_clips, T, W, W, C), dtype=np.uint8)  # [N, T, H, W, C]
            audio = np.empty((n_clips, T * L), dtype=np.float32)  # [N, T * L]
            i = 0
            for name, starts in per_video:
                v = videos[name]
                for s in starts:
                    frames[i] = v.frames[s:s + T]
                    audio[i] = v.audio[s * L:(s + T) * L]
                    clips_meta.append({"split": split, "index": i, "source": name,
                                       "start_time": round(v.start_time + s / cfg.fps, 6), "start_frame": s})
                    i += 1
                video_meta.append({"source": name, "split": split, "clips": len(starts),
                                   "usable_frames": len(v.frames), "start_time": round(v.start_time, 6),
                                   "source_fps": v.source_fps, **v.info})
            out = tmp / split
            out.mkdir()
            atomic_save_npy(out / "frames.npy", frames[..., 0] if C == 1 else frames)
            atomic_save_npy(out / "audio.npy", audio)
            for kind in kinds:
                stop.check()
                atomic_save_npy(out / kind.file, kind.compute(audio, cfg.frame_settings))  # [N, T, F, S]
            if cfg.previews and n_clips:
                save_gif(out / "previews" / "clip0.gif", frames[0], fps=cfg.fps)
                write_wav(out / "previews" / "clip0.wav", audio[0], cfg.sample_rate)
            counts[split] = n_clips

        stop.check()
        flags = {k: v for k, v in asdict(cfg).items()}
        flags["stride"] = cfg.clip_stride
        extra = {
            "videos": {s: sum(1 for n in videos if assignment[n] == s) for s in SPLITS},
            "skipped": len(skipped),
            "source": str(Path(src).resolve()),
            "flags": flags,
            "warnings": warn,
        }
        DatasetMeta.for_features("av", image_size=W, channels=C, num_frames=T, fps=cfg.fps, splits=counts,
                                 settings=cfg.frame_settings, features=cfg.features, extra=extra).write(tmp)
        atomic_write_json(tmp / "sources.json", {"clips": clips_meta, "videos": video_meta})
        atomic_write_json(tmp / "skipped.json", skipped)


# ------------------------------------------------------------------- one clip for a model
def config_for_data(info: dict) -> AVConfig:
    """The preparer's settings that make clips as the dataset described by ``info`` (its
    ``dataset.json``, as :func:`data.dataset_info` reads it) holds them: frame size, channels,
    frame rate, sound samples per frame and the audio features with their parameters. M3SO's
    (10 fps, 440 samples a frame at 4,400 Hz, a 44-point STFT) included."""
    d, stft, mfcc = AVConfig(), info.get("stft") or {}, info.get("mfcc") or {}
    cfg = AVConfig(image_width=int(info["image_size"]), channels=int(info["channels"]), fps=int(info.get("fps") or d.fps),
                   seq_len=int(info["num_frames"]), features=str(info.get("features") or d.features),
                   n_fft=int(stft.get("n_fft", d.n_fft)), hop_length=int(stft.get("hop_length", d.hop_length)),
                   n_mfcc=int(mfcc.get("n_mfcc", d.n_mfcc)), n_mels=int(mfcc.get("n_mels", d.n_mels)),
                   frame_samples=int(info["samples_per_frame"]) if info.get("samples_per_frame") else None,
                   previews=False)
    cfg.validate()
    return cfg


def model_inputs(frames: np.ndarray, audio: np.ndarray, cfg: AVConfig):
    """What a model trained on ``cfg``'s data reads of a clip made by :func:`decode_video`: frames uint8
    ``[T, W, W, C]`` and its sound ``[T * L]`` -> frames float ``[T, C, W, W]`` in [0, 1] and the audio
    features ``[T, 1, F, S]``, computed and scaled as the dataset's loader sees them."""
    import torch

    kind = get_feature(cfg.features)
    features = kind.compute(np.asarray(audio, dtype=np.float32)[None], cfg.frame_settings)[0]  # [T, F, S]
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255.0)
    return video, kind.scale(torch.from_numpy(features)).unsqueeze(1)


# ----------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    d = AVConfig()
    p = ArgumentParser(prog="python -m data.prepare_av", description=plain_text(__doc__.split("\n\n")[0]))
    paths = p.add_argument_group("input and output")
    paths.add_argument("--src", required=True, help="folder of videos (recursive), a text list of videos, or one video")
    paths.add_argument("--dest", required=True, help="output dataset folder (must not exist unless --overwrite)")
    paths.add_argument("--overwrite", action="store_true", help="replace an existing --dest")
    paths.add_argument("--no_previews", action="store_true", help="skip previews/clip0.gif and .wav")
    frames = p.add_argument_group("frames and clips")
    frames.add_argument("--image_width", type=int, default=d.image_width, help="output frames are W x W")
    frames.add_argument("--channels", type=int, default=d.channels, choices=(1, 3), help="3 RGB, 1 grey")
    frames.add_argument("--fps", type=int, default=d.fps, help="output frame rate")
    frames.add_argument("--seq_len", type=int, default=d.seq_len, help="frames per clip")
    frames.add_argument("--stride", type=int, default=None, help="frames between clip starts (default: seq_len)")
    audio = p.add_argument_group("audio features")
    audio.add_argument("--features", choices=list(FEATURES), default=d.features,
                       help="the audio features the model reads; stft.npy is always written, mfcc also writes "
                            "mfcc.npy (librosa MFCCs, already log-scaled)")
    audio.add_argument("--n_fft", type=int, default=d.n_fft, help="per-frame STFT size")
    audio.add_argument("--hop_length", type=int, default=d.hop_length,
                       help="STFT hop; samples_per_frame = 16 * hop_length (unless --frame_samples), "
                            "sample_rate = fps * samples_per_frame")
    audio.add_argument("--frame_samples", type=int, default=None,
                       help="sound samples per video frame (default: 16 * hop_length; M3SO's: 440 with --n_fft 44 "
                            "--hop_length 22 at --fps 10)")
    audio.add_argument("--n_mfcc", type=int, default=d.n_mfcc, help="MFCC coefficients kept (--features mfcc)")
    audio.add_argument("--n_mels", type=int, default=d.n_mels, help="mel bands before the DCT (--features mfcc)")
    split = p.add_argument_group("train/test split")
    split.add_argument("--test_fraction", type=float, default=d.test_fraction, help="fraction of source VIDEOS in test")
    split.add_argument("--seed", type=int, default=d.seed, help="seed of the video split")
    rt = p.add_argument_group("runtime")
    rt.add_argument("--num_workers", "--workers", dest="workers", type=int, default=d.workers,
                    help="decoding processes (--workers is the old name)")
    return p


def main(argv: Sequence[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k not in ("src", "dest", "overwrite", "no_previews")}
    dest = prepare(args.src, args.dest, overwrite=args.overwrite, progress=True,
                   previews=not args.no_previews, **flags)
    meta = json.loads((dest / "dataset.json").read_text())
    print(f"wrote {dest}: {meta['splits']['train']} train / {meta['splits']['test']} test clips from "
          f"{meta['videos']['train']} + {meta['videos']['test']} videos; {meta['skipped']} file(s) skipped "
          f"(see skipped.json)")
    return dest


if __name__ == "__main__":
    run_cli(main)
