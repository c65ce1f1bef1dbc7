"""Convert the original release's M3SO layout into this project's ``dataset.json`` layout.

    python -m data.convert_legacy --src ROOT --dest DIR [--overwrite] [--image_width W]

Reads ``ROOT/{train,test}/gif/*.gif`` and ``stft_wav_pickle/*.pickle`` (through the
restricted unpickler of :mod:`data.legacy`), and writes ``DIR`` atomically:
``frames.npy`` (uint8, the loader's per-frame max scaling x 255, rounded), ``stft.npy``
(float32, the pickled features as they are) and, when every clip of a split has a
4,400 Hz WAV of exactly T*440 samples in ``wav/``, ``audio.npy``. Arrays are filled clip
by clip into memory-mapped files whose disk blocks are reserved first (a full disk is one
error line before the work, never a SIGBUS), so memory stays bounded for a full-size
download. Every clip is read (and checked: readable, shapes, NaN/inf) once before anything
is written; a SIGTERM/SIGINT stops between clips and leaves no ``DIR`` (or the previous one).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from cli import ArgumentParser, plain_text
from errors import InputError, run_cli
from files import atomic_dir, atomic_save_npy, preallocate
from media import read_wav, to_uint8
from signals import StopSignals

from .dataset_format import DatasetMeta, check_dest, stoppable
from .features import DEFAULT_FEATURE, FEATURES, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, FrameSettings
from .legacy import WAV_DIR, LegacyDataset, gif_info, legacy_splits, load_array_pickle


def _clip_lengths(ds: LegacyDataset, desc: str, stop: StopSignals) -> int:
    """Shortest clip (GIF frames vs feature frames) of a split: all clips are stored with one T.
    Every clip's files are checked here (readable, feature shape, finite), before any writing."""
    shortest = None
    for i in tqdm(range(len(ds)), desc=f"{desc}: scanning", unit="clip", leave=False):
        stop.check()
        n_gif = gif_info(ds.gif_path(i))[0]
        spec = load_array_pickle(ds.pickle_path(i))
        if spec.shape[1:] != ds.audio_shape:
            raise InputError(f"{ds.pickle_path(i)} holds features of shape {spec.shape[1:]}, but "
                             f"{ds.pickle_path(0)} has {ds.audio_shape}; re-download or re-generate it")
        if not np.isfinite(spec).all():
            raise InputError(f"{ds.pickle_path(i)} (clip {i}) has NaN/inf audio features; re-download or "
                             f"re-generate it")
        t = min(n_gif, spec.shape[0])
        shortest = t if shortest is None else min(shortest, t)
    return int(shortest)


def _read_audio(ds: LegacyDataset, num_frames: int) -> tuple[np.ndarray | None, str]:
    """``[N, T*440]`` float32 from ``<split>/wav/<id>.wav`` when every clip has a usable one, else a reason."""
    wav_dir = ds.root / ds.split / WAV_DIR
    need = num_frames * SAMPLES_PER_FRAME
    if not wav_dir.is_dir():
        return None, f"no {wav_dir}"
    out = np.zeros((len(ds), need), dtype=np.float32)
    for i, clip_id in enumerate(ds.ids):
        path = wav_dir / f"{clip_id}.wav"
        if not path.is_file():
            return None, f"{path} is missing"
        try:
            audio, rate = read_wav(path)
        except InputError as err:
            return None, str(err)
        if rate != SAMPLE_RATE or audio.shape[0] != need:
            return None, (f"{path} has {audio.shape[0]} samples at {rate} Hz, not {need} at {SAMPLE_RATE} Hz "
                          f"(no resampling is done)")
        out[i] = audio
    return out, "ok"


def convert(src: str | Path, dest: str | Path, *, overwrite: bool = False, image_width: int | None = None) -> dict:
    """Convert legacy ``src`` into a new-layout ``dest``; returns the written ``dataset.json`` dict.

    InputError for a bad ``src`` or ``dest`` (both checked before any work), a bad clip, or
    a full disk; a SIGTERM/SIGINT raises :class:`signals.StopRequested` between clips."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise InputError(f"--src {src} {'is a file, not a folder' if src.exists() else 'does not exist'}; pass the "
                         f"root folder of the legacy M3SO download (it has train/gif/, test/gif/)")
    splits = legacy_splits(src)
    if not splits:
        raise InputError(f"--src {src} is not the legacy M3SO layout (no train/gif/ or test/gif/); pass the "
                         f"download's root as --src")
    check_dest(dest, overwrite)
    with stoppable(dest) as stop:
        return _convert(src, dest, splits, overwrite, image_width, stop)


def _convert(src: Path, dest: Path, splits: list[str], overwrite: bool, image_width: int | None,
             stop: StopSignals) -> dict:
    datasets = {s: LegacyDataset(src, s, 1, image_width=image_width) for s in splits}
    first = datasets[splits[0]]
    # Every split must be stored with one image size, channel count and feature shape.
    for s, ds in datasets.items():
        if (ds.image_size, ds.channels, ds.audio_shape) != (first.image_size, first.channels, first.audio_shape):
            raise InputError(f"{src / s} has {ds.image_size}px, {ds.channels}-channel frames with features "
                             f"{ds.audio_shape}, unlike {src / splits[0]}; pass --image_width to unify the size")
        ds.image_width = first.image_size  # all clips resized to one size (no-op when it is native)
    lengths = {s: _clip_lengths(ds, s, stop) for s, ds in datasets.items()}
    num_frames = min(lengths.values())
    f_bins, s_steps = first.audio_shape
    size, c = first.image_size, first.channels
    # The pickles are |STFT| features whose shape they carry; the framing recorded is M3SO's.
    stft_block = {**FEATURES[DEFAULT_FEATURE].params(FrameSettings()), "shape": [f_bins, s_steps]}
    audio_files: dict[str, str] = {}
    meta = DatasetMeta(name="M3SO (legacy import)", image_size=size, channels=c, num_frames=num_frames,
                       splits={s: len(ds) for s, ds in datasets.items()}, feature_blocks={DEFAULT_FEATURE: stft_block},
                       fps=FPS, sample_rate=SAMPLE_RATE, samples_per_frame=SAMPLES_PER_FRAME,
                       extra={"source": {"layout": "legacy", "path": str(src.resolve())},
                              "ids": {s: list(ds.ids) for s, ds in datasets.items()}, "audio": audio_files})
    with atomic_dir(dest, overwrite=overwrite) as tmp:
        for s, ds in datasets.items():
            out = tmp / s
            out.mkdir()
            frame_shape = (size, size) if c == 1 else (size, size, c)
            frames = np.lib.format.open_memmap(out / "frames.npy", mode="w+", dtype=np.uint8,
                                               shape=(len(ds), num_frames, *frame_shape))
            stft = np.lib.format.open_memmap(out / "stft.npy", mode="w+", dtype=np.float32,
                                             shape=(len(ds), num_frames, f_bins, s_steps))
            for name in ("frames.npy", "stft.npy"):
                preallocate(out / name)  # a full disk fails here, not as a SIGBUS inside the memory map
            for i in tqdm(range(len(ds)), desc=f"{s}: converting", unit="clip"):
                stop.check()
                pix, spec = ds.load_clip(i, max_frames=num_frames)  # [T, H, W, C] float, [T, F, S]
                frames[i] = to_uint8(pix[..., 0] if c == 1 else pix)
                stft[i] = spec.astype(np.float32)
            frames.flush()
            stft.flush()
            del frames, stft
            audio, why = _read_audio(ds, num_frames)
            if audio is not None:
                atomic_save_npy(out / "audio.npy", audio)
            else:
                print(f"{s}: audio.npy left out: {why}")
            audio_files[s] = "audio.npy" if audio is not None else f"left out: {why}"
        meta.write(tmp)
    if any(t != num_frames for t in lengths.values()) or any(ds.num_frames != num_frames for ds in datasets.values()):
        print(f"note: clips cut to the shortest clip's {num_frames} frames")
    print(f"wrote {dest}: " + ", ".join(f"{s} {n} clips" for s, n in meta.splits.items())
          + f", {num_frames} frames of {size}x{size}x{c}, features {f_bins}x{s_steps}")
    return meta.to_json()


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m data.convert_legacy", description=plain_text(__doc__.split("\n\n")[0]))
    p.add_argument("--src", required=True, help="root of the legacy layout (has train/gif/, test/gif/)")
    p.add_argument("--dest", required=True, help="folder to write (refused if it exists, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --dest once the new one is complete")
    p.add_argument("--image_width", type=int, default=None,
                   help="resize frames to this square size (default: the GIFs' own size)")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.image_width is not None and args.image_width < 1:
        raise InputError(f"--image_width {args.image_width} must be a positive integer")
    return convert(args.src, args.dest, overwrite=args.overwrite, image_width=args.image_width)


if __name__ == "__main__":
    run_cli(main)
