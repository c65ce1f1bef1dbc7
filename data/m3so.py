"""Loader for the project's on-disk dataset layout (``dataset.json`` + ``.npy`` arrays).

Layout (shared with the generator, the video preparer and training)::

    DIR/dataset.json                  (read and checked by :class:`data.dataset_format.DatasetMeta`)
    DIR/<split>/frames.npy   uint8   [N, T, H, W] (grey) or [N, T, H, W, C] (colour)
    DIR/<split>/stft.npy     float32 [N, T, F, S]  raw |STFT| per video frame (always present)
    DIR/<split>/<kind>.npy   float32 [N, T, F, S]  the features ``dataset.json`` names (``"features"``)
    DIR/<split>/...          optional extras (audio.npy, labels.npy, ...) not needed here

Which file the model reads and how it is scaled come from the feature registry
(:data:`data.features.FEATURES`) by the name ``dataset.json`` records: ``stft.npy`` with
``log1p`` unless it says otherwise (``mfcc.npy``, read as stored).

The arrays are memory-mapped and opened lazily in each process: a DataLoader worker
that receives a pickled :class:`ClipDataset` gets only paths and shapes, then maps the
files itself, so no array is copied between processes and no file is opened per item.
Everything that can be checked once is checked at open; what cannot (NaN/inf in a clip
not sampled at open) is checked per item, cheaply, on the window being returned.
"""
from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from errors import InputError

from .dataset_format import FILE_NAME, GEN_HINT, SPLITS, DatasetMeta, recreate_hint

STARTS = ("first", "random")
# How many clips' features are scanned for NaN/inf at open (evenly spaced, ends included).
_OPEN_CHECK_CLIPS = 8


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


def _map(path: Path, hint: str | None = None) -> np.ndarray:
    """Memory-map one ``.npy`` (never unpickling), with a clear error when it is missing or broken.

    ``hint``: the command that re-creates the dataset (default: the M3SO generator's)."""
    hint = hint or recreate_hint(path.parent.parent)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path} is missing; re-create the dataset (e.g. {hint})") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path} {_npy_problem(path, err)}; re-create the dataset (e.g. {hint})") from None


def _npy_problem(path: Path, err: BaseException) -> str:
    """What is wrong with a ``.npy`` file numpy refused to map (never the numpy advice to unpickle it)."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                return "is not a .npy file (no .npy header: damaged or another kind of file)"
            f.seek(0)
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)  # the header only, no data
            offset = f.tell()
    except IsADirectoryError:
        return "is a folder, not a .npy file"
    except (OSError, ValueError, SyntaxError, TypeError):
        return "has a damaged .npy header"
    if dtype.hasobject:
        return "holds Python objects (a pickle), which are never loaded"
    need = offset + int(np.prod(shape)) * dtype.itemsize
    have = path.stat().st_size
    if have < need:
        return f"is truncated: {have} bytes, its header ({dtype} {list(shape)}) needs {need}"
    return f"is not a readable .npy array ({str(err).splitlines()[0][:200]})"


def _check_finite(stft: np.ndarray, clip: int, path: Path) -> None:
    if not np.isfinite(stft).all():
        raise InputError(f"{path}: clip {clip} has NaN/inf audio features; re-create the dataset "
                         f"(or drop that clip)")


class ClipDataset(Dataset):
    """One split of a ``dataset.json`` layout, as (frames, audio features) windows.

    Item ``i`` -> ``(frames: float32 [seq_len, C, H, W] in [0, 1],
    audio: float32 [seq_len, 1, F, S] = kind.scale(features))``: ``log1p(|STFT|)`` for STFT
    datasets, the MFCCs as stored for MFCC ones (:data:`data.features.FEATURES`).
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
        self.meta = DatasetMeta.read(self.root)
        split_dir = self.root / split
        if split not in self.meta.splits:
            raise InputError(f"{self.root / FILE_NAME} lists no {split!r} split; "
                             f"re-create it with {recreate_hint(self.root, self.meta.name)}")
        if not split_dir.is_dir():
            raise InputError(f"{split_dir} is missing; re-create the dataset with "
                             f"{recreate_hint(self.root, self.meta.name)}")
        self.frames_path = split_dir / "frames.npy"
        self.kind = self.meta.kind  # the registry entry: file name and the scaling the model sees
        self.audio_shape = self.meta.audio_shape
        self.stft_path = split_dir / self.kind.file  # the features the model reads (stft.npy unless another kind)
        seq_len = check_seq_len(seq_len)
        self._hint = recreate_hint(self.root, self.meta.name)
        frames, stft = _map(self.frames_path, self._hint), _map(self.stft_path, self._hint)
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
        want = {"N": (n, meta.splits[self.split]), "T": (t, meta.num_frames),
                "H": (h, meta.image_size), "W": (w, meta.image_size), "C": (c, meta.channels),
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
            self._frames, self._stft = _map(self.frames_path, self._hint), _map(self.stft_path, self._hint)
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
        audio = self.kind.scale(torch.from_numpy(spec)).unsqueeze(1)  # [seq_len, 1, F, S]
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
    meta = DatasetMeta.read(root)
    info = meta.to_json()
    info.update(layout="m3so", name=meta.name, image_size=meta.image_size, channels=meta.channels,
                audio_shape=meta.audio_shape, num_frames=meta.num_frames, features=meta.feature_name,
                splits=dict(meta.splits), path=str(root))
    return info


__all__ = ["ClipDataset", "dataset_info", "read_events", "check_split", "check_start", "check_seq_len",
           "GEN_HINT", "SPLITS", "STARTS"]
