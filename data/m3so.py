"""Loader for the project's on-disk dataset layout (``dataset.json`` + ``.npy`` arrays).

Layout (shared with the generator, the video preparer and training)::

    DIR/dataset.json
    DIR/<split>/frames.npy   uint8   [N, T, H, W] (grey) or [N, T, H, W, C] (colour)
    DIR/<split>/stft.npy     float32 [N, T, F, S]  raw |STFT| per video frame
    DIR/<split>/...          optional extras (audio.npy, labels.npy, ...) not needed here

When ``dataset.json`` says ``"features": "mfcc"`` (``data.prepare_av --features mfcc``),
the audio comes from the file named by ``"mfcc": {"file", "shape"}`` instead of
``stft.npy``; it is already log-scaled, so :func:`scale_features` is not applied to it.

The arrays are memory-mapped and opened lazily in each process: a DataLoader worker
that receives a pickled :class:`ClipDataset` gets only paths and shapes, then maps the
files itself, so no array is copied between processes and no file is opened per item.
Everything that can be checked once is checked at open; what cannot (NaN/inf in a clip
not sampled at open) is checked per item, cheaply, on the window being returned.
"""
from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from utils import InputError

from .features import scale_features

FORMAT_VERSION = 1
SPLITS = ("train", "test")
STARTS = ("first", "random")
REQUIRED_KEYS = ("name", "format_version", "image_size", "channels", "num_frames", "stft", "splits")
# How many clips' features are scanned for NaN/inf at open (evenly spaced, ends included).
_OPEN_CHECK_CLIPS = 8

GEN_HINT = "python M3SO_Gen_Code/generate_m3so.py --dest"


def check_split(split: str) -> None:
    """``split`` must be one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise InputError(f"split {split!r} is not valid; use one of {', '.join(SPLITS)}")


def check_start(start: str) -> None:
    """``start`` must be one of :data:`STARTS`."""
    if start not in STARTS:
        raise InputError(f"start={start!r} is not valid; use 'first' or 'random'")


def check_seq_len(seq_len: Any) -> int:
    """``seq_len`` must be a positive integer; returns it as ``int``."""
    try:
        value = operator.index(seq_len)
    except TypeError:
        value = 0
    if value < 1:
        raise InputError(f"seq_len {seq_len!r} must be a positive integer (check --n_past/--n_future)")
    return value


def read_dataset_json(root: str | Path) -> dict[str, Any]:
    """Read and check ``<root>/dataset.json`` (required keys, version, types)."""
    path = Path(root) / "dataset.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; make the dataset with {GEN_HINT} {root}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not readable JSON ({err}); re-create the dataset with {GEN_HINT} {root}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path} must hold a JSON object; re-create the dataset with {GEN_HINT} {root}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise InputError(f"{path} lacks key(s) {', '.join(missing)}; re-create the dataset with {GEN_HINT} {root}")
    if meta["format_version"] != FORMAT_VERSION:
        raise InputError(f"{path} has format_version {meta['format_version']!r}, this code reads {FORMAT_VERSION}; "
                         f"re-create the dataset with {GEN_HINT} {root}")
    shape = meta["stft"].get("shape") if isinstance(meta["stft"], dict) else None
    ints = [meta["image_size"], meta["channels"], meta["num_frames"]]
    if (not all(isinstance(v, int) and v > 0 for v in ints) or not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(v, int) and v > 0 for v in shape) or not isinstance(meta["splits"], dict)):
        raise InputError(f"{path}: image_size, channels, num_frames must be positive integers, stft.shape [F, S] and "
                         f"splits an object; re-create the dataset with {GEN_HINT} {root}")
    return meta


def feature_spec(meta: dict[str, Any], root: str | Path) -> tuple[str, tuple[int, int], bool]:
    """Which audio features a dataset's model reads: (file name, (F, S), apply scale_features?)."""
    kind = meta.get("features", "stft")
    if kind == "stft":
        return "stft.npy", tuple(meta["stft"]["shape"]), True
    if kind == "mfcc":
        mfcc = meta.get("mfcc")
        shape = mfcc.get("shape") if isinstance(mfcc, dict) else None
        name = mfcc.get("file", "mfcc.npy") if isinstance(mfcc, dict) else None
        if (not isinstance(name, str) or Path(name).name != name or not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(v, int) and v > 0 for v in shape)):
            raise InputError(f"{Path(root) / 'dataset.json'} says features 'mfcc' but lacks a valid "
                             f"\"mfcc\": {{\"file\", \"shape\": [F, S]}}; re-create it with python -m data.prepare_av")
        return name, (shape[0], shape[1]), False
    raise InputError(f"{Path(root) / 'dataset.json'} has features {kind!r}; this loader reads 'stft' or 'mfcc' "
                     f"(re-create the dataset)")


def _map(path: Path) -> np.ndarray:
    """Memory-map one ``.npy`` (never unpickling), with a clear error when it is missing or broken."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path} is missing; re-create the dataset (e.g. {GEN_HINT} {path.parent.parent})") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path} is not a readable .npy array ({err}); re-create the dataset") from None


def _check_finite(stft: np.ndarray, clip: int, path: Path) -> None:
    if not np.isfinite(stft).all():
        raise InputError(f"{path}: clip {clip} has NaN/inf audio features; re-create the dataset "
                         f"(or drop that clip)")


class ClipDataset(Dataset):
    """One split of a ``dataset.json`` layout, as (frames, audio features) windows.

    Item ``i`` -> ``(frames: float32 [seq_len, C, H, W] in [0, 1],
    audio: float32 [seq_len, 1, F, S] = scale_features(stft))`` (MFCC datasets: the MFCCs as stored).
    ``start="first"`` returns frames ``0..seq_len-1``; ``start="random"`` a window drawn
    with torch's RNG (so DataLoader worker seeding makes it reproducible).
    """

    def __init__(self, root: str | Path, split: str, seq_len: int, *, image_width: int | None = None,
                 channels: int | None = None, start: str = "first") -> None:
        check_split(split)
        check_start(start)
        self.root = Path(root)
        self.split = split
        self.start = start
        self.meta = read_dataset_json(self.root)
        split_dir = self.root / split
        if split not in self.meta["splits"]:
            raise InputError(f"{self.root / 'dataset.json'} lists no {split!r} split; "
                             f"re-create the dataset with {GEN_HINT} {self.root}")
        if not split_dir.is_dir():
            raise InputError(f"{split_dir} is missing; re-create the dataset with {GEN_HINT} {self.root}")
        self.frames_path = split_dir / "frames.npy"
        feature_file, self.audio_shape, self.scale = feature_spec(self.meta, self.root)
        self.stft_path = split_dir / feature_file  # the features the model reads (stft.npy unless MFCC)
        seq_len = check_seq_len(seq_len)
        frames, stft = _map(self.frames_path), _map(self.stft_path)
        self._validate(frames, stft, seq_len, image_width, channels)
        self.seq_len = int(seq_len)
        self._frames: np.ndarray | None = frames  # dropped when pickled, re-mapped on first use
        self._stft: np.ndarray | None = stft

    # ------------------------------------------------------------------ validation
    def _validate(self, frames: np.ndarray, stft: np.ndarray, seq_len: int, image_width: int | None,
                  channels: int | None) -> None:
        meta, fp, sp = self.meta, self.frames_path, self.stft_path
        if frames.dtype != np.uint8:
            raise InputError(f"{fp} has dtype {frames.dtype}, expected uint8; re-create the dataset")
        if stft.dtype != np.float32:
            raise InputError(f"{sp} has dtype {stft.dtype}, expected float32; re-create the dataset")
        if frames.ndim == 4:
            c = 1
        elif frames.ndim == 5:
            c = frames.shape[-1]
        else:
            raise InputError(f"{fp} has shape {frames.shape}, expected [N, T, H, W] or [N, T, H, W, C]; "
                             f"re-create the dataset")
        if stft.ndim != 4:
            raise InputError(f"{sp} has shape {stft.shape}, expected [N, T, F, S]; re-create the dataset")
        n, t, h, w = frames.shape[:4]
        want = {"N": (n, meta["splits"][self.split]), "T": (t, meta["num_frames"]),
                "H": (h, meta["image_size"]), "W": (w, meta["image_size"]), "C": (c, meta["channels"]),
                "F": (stft.shape[2], self.audio_shape[0]), "S": (stft.shape[3], self.audio_shape[1])}
        bad = [f"{k}={got} (dataset.json says {exp})" for k, (got, exp) in want.items() if got != exp]
        if bad:
            raise InputError(f"{fp} / {sp} disagree with dataset.json: {', '.join(bad)}; re-create the dataset")
        if stft.shape[:2] != (n, t):
            raise InputError(f"{sp} has {stft.shape[:2]} clips x frames but {fp} has {(n, t)}; re-create the dataset")
        if n == 0:
            raise InputError(f"{fp}: the {self.split} split has no clips; re-create the dataset with more clips")
        if seq_len > t:
            raise InputError(f"{fp}: clips have {t} frames, fewer than seq_len={seq_len}; lower --n_past/--n_future "
                             f"or re-create the dataset with more frames")
        if image_width is not None and image_width != h:
            raise InputError(f"{fp} holds {h}x{w} frames but --image_width {image_width} was asked; pass "
                             f"--image_width {h} (this layout is never resized)")
        if channels is not None and channels != c:
            raise InputError(f"{fp} holds {c}-channel frames but --channels {channels} was asked; pass --channels {c}")
        # A cheap sample now catches a broken file before training starts; items re-check their own window.
        for clip in sorted({round(i) for i in np.linspace(0, n - 1, min(n, _OPEN_CHECK_CLIPS))}):
            _check_finite(stft[clip], clip, sp)
        self.num_clips, self.num_frames, self.image_size, self.channels = n, t, h, c

    # ------------------------------------------------------------ lazy, per process
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_frames"] = state["_stft"] = None  # paths travel, arrays do not
        return state

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._frames is None or self._stft is None:
            self._frames, self._stft = _map(self.frames_path), _map(self.stft_path)
        return self._frames, self._stft

    # ------------------------------------------------------------------- items
    def __len__(self) -> int:
        return self.num_clips

    def window_start(self) -> int:
        """First frame of the next item's window (torch RNG for ``start='random'``)."""
        if self.start == "first":
            return 0
        return int(torch.randint(0, self.num_frames - self.seq_len + 1, (1,)).item())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip index {index} out of range for {self.num_clips} clips")
        frames, stft = self._arrays()
        t0 = self.window_start()
        t1 = t0 + self.seq_len
        spec = np.array(stft[index, t0:t1], dtype=np.float32)  # [seq_len, F, S], copied out of the map
        _check_finite(spec, index, self.stft_path)
        pix = torch.from_numpy(np.array(frames[index, t0:t1]))  # [seq_len, H, W] or [seq_len, H, W, C] uint8
        if pix.ndim == 3:
            pix = pix.unsqueeze(1)  # [seq_len, 1, H, W]
        else:
            pix = pix.permute(0, 3, 1, 2)  # [seq_len, C, H, W]
        video = pix.to(torch.float32).div_(255.0).contiguous()
        audio = torch.from_numpy(spec)
        if self.scale:
            audio = scale_features(audio)
        audio = audio.unsqueeze(1)  # [seq_len, 1, F, S]
        return video, audio


def read_events(root: str | Path, split: str, num_clips: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The M3SO event arrays of a split, if it has them: ``(bounces int8 [N, T, D], blocks
    int32 [N, 3] or None)`` memory-mapped, checked against ``num_clips``; None when the
    split has no ``bounces.npy`` (real videos, legacy downloads)."""
    split_dir = Path(root) / split
    if not (split_dir / "bounces.npy").is_file():
        return None
    bounces = _map(split_dir / "bounces.npy")
    if bounces.ndim not in (2, 3) or bounces.shape[0] != num_clips:
        raise InputError(f"{split_dir / 'bounces.npy'} has shape {bounces.shape}, expected [{num_clips}, T, D]; "
                         "re-create the dataset")
    blocks = None
    if (split_dir / "blocks.npy").is_file():
        blocks = _map(split_dir / "blocks.npy")
        if blocks.shape != (num_clips, 3):
            raise InputError(f"{split_dir / 'blocks.npy'} has shape {blocks.shape}, expected [{num_clips}, 3]; "
                             "re-create the dataset")
    return np.asarray(bounces), None if blocks is None else np.asarray(blocks)


def dataset_info(root: str | Path) -> dict[str, Any]:
    """Summary of a ``dataset.json`` layout (the JSON's own keys plus the common summary keys)."""
    root = Path(root)
    meta = read_dataset_json(root)
    info = dict(meta)
    info.update(layout="m3so", name=meta["name"], image_size=meta["image_size"], channels=meta["channels"],
                audio_shape=feature_spec(meta, root)[1], num_frames=meta["num_frames"],
                splits=dict(meta["splits"]), path=str(root))
    return info


__all__ = ["ClipDataset", "dataset_info", "read_events", "read_dataset_json", "check_split", "check_start", "check_seq_len", "feature_spec", "SPLITS", "STARTS"]
