"""Reader for the original release's M3SO layout (the published download uses it).

::

    <root>/<split>/gif/<id>.gif                 T frames (any size; resized to image_width)
    <root>/<split>/stft_wav_pickle/<id>.pickle  a pickled float array [T, F, S] (M3SO: [T, 23, 21])
    <root>/<split>/wav/<id>.wav                 optional, used only by data.convert_legacy

Differences from the original loader, on purpose:

* Pickles go through :func:`load_array_pickle`, a restricted unpickler that admits only
  the numpy callables an ndarray pickle needs, so a crafted file cannot run code.
* Frames are converted to grey ("L") or RGB *before* resizing. The original resized the
  GIF's palette image (which Pillow does with nearest-neighbour whatever filter is asked)
  and then scaled the palette *indices*; we resize real intensities with an anti-aliasing
  (Lanczos) filter.
* Each frame is still divided by its own maximum, as the original did, but an all-zero
  frame stays zero instead of becoming NaN.
* When a clip's GIF and feature file disagree in length, the shorter one decides ``T``.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageSequence, UnidentifiedImageError
from torch.utils.data import Dataset

from errors import InputError

from .features import scale_features
from .dataset_format import SPLITS, recreate_hint
from .m3so import check_seq_len, check_split, check_start

GIF_DIR = "gif"
PICKLE_DIR = "stft_wav_pickle"
WAV_DIR = "wav"
PICKLE_SUFFIX = ".pickle"


# ------------------------------------------------------------------ safe unpickling
def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol 2 stores an array's bytes as a latin-1 str."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


def _numpy_core(module: str):
    """numpy 2 keeps its internals in ``numpy._core``; numpy 1 in ``numpy.core``."""
    import importlib

    for prefix in ("numpy._core", "numpy.core"):
        try:
            return importlib.import_module(f"{prefix}.{module}")
        except ImportError:
            continue
    raise ImportError(f"numpy has no {module} module")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Exactly what pickled float ndarrays refer to (checked for protocols 0..5).

    Protocols 0-4: ``multiarray._reconstruct`` + ``ndarray`` + ``dtype`` (protocol <= 2 also
    ``_codecs.encode`` for the raw bytes); protocol 5: ``numeric._frombuffer`` + ``dtype``.
    Pickles written by numpy 1 name ``numpy.core``, numpy 2 ``numpy._core``: both map to
    the installed numpy's functions.
    """
    reconstruct = _numpy_core("multiarray")._reconstruct
    frombuffer = _numpy_core("numeric")._frombuffer
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): _latin1_encode}
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{prefix}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the names in :func:`_allowed_globals`; anything else is refused
    before it is looked up, so nothing a crafted file names is imported or called."""

    def __init__(self, file, path: Path) -> None:
        # latin1: the documented way to read numpy arrays pickled by Python 2.
        super().__init__(file, encoding="latin1")
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise InputError(f"{self._path} refers to {module}.{name}, which a plain numpy array pickle never "
                             f"does; refusing to load it (re-create the file from trusted data)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise InputError(f"{self._path} uses persistent ids, which a plain numpy array pickle never does; "
                         f"refusing to load it (re-create the file from trusted data)")


def load_array_pickle(path: str | Path) -> np.ndarray:
    """Load a pickled float ndarray ``[T, F, S]`` without running code from the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, path).load()
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path} is missing; re-download the dataset or re-generate it") from None
    except Exception as err:  # noqa: BLE001 - any failure inside a corrupt pickle is the file's fault
        raise InputError(f"{path} is not a readable array pickle ({type(err).__name__}: {err}); "
                         f"re-download or re-generate it") from None
    if not isinstance(obj, np.ndarray) or obj.dtype.kind != "f" or obj.ndim != 3:
        what = f"{type(obj).__name__}" + (f" {obj.dtype} {obj.shape}" if isinstance(obj, np.ndarray) else "")
        raise InputError(f"{path} holds {what}, expected a float array [T, F, S]; re-download or re-generate it")
    return obj


# ------------------------------------------------------------------------- GIFs
def read_gif(path: str | Path, image_width: int | None, channels: int, max_frames: int | None = None) -> np.ndarray:
    """Frames of a GIF as float32 ``[T, H, W, C]``, each frame divided by its own maximum.

    ``image_width=None`` keeps the native size (which must then be square). An all-zero
    frame stays zero. ``max_frames`` stops decoding early.
    """
    path = Path(path)
    mode = "L" if channels == 1 else "RGB"
    out = []
    try:
        with Image.open(path) as img:
            for frame in ImageSequence.Iterator(img):
                if max_frames is not None and len(out) >= max_frames:
                    break
                frame = frame.convert(mode)  # real intensities, not palette indices
                if image_width is None:
                    if frame.width != frame.height:
                        raise InputError(f"{path} has {frame.width}x{frame.height} frames; pass --image_width "
                                         f"to resize them to a square")
                elif frame.size != (image_width, image_width):
                    frame = frame.resize((image_width, image_width), Image.Resampling.LANCZOS)
                out.append(np.asarray(frame))
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path} is missing; re-download the dataset or re-generate it") from None
    except (OSError, EOFError, ValueError, SyntaxError, UnidentifiedImageError) as err:
        raise InputError(f"{path} is truncated or not a GIF ({err}); re-download or re-generate it") from None
    if not out:
        raise InputError(f"{path} has no frames; re-download or re-generate it")
    pix = np.stack(out).astype(np.float32)  # [T, H, W] or [T, H, W, C]
    if pix.ndim == 3:
        pix = pix[..., None]
    peak = pix.max(axis=(1, 2, 3), keepdims=True)  # [T, 1, 1, 1] each frame's own maximum
    return np.divide(pix, peak, out=np.zeros_like(pix), where=peak > 0)


def gif_info(path: str | Path) -> tuple[int, int, int, int]:
    """(frames, width, height, channels) of a GIF; channels is 3 when its first frame is not grey.

    The last frame is decoded too, so a truncated file is refused here (InputError), not
    counted as a shorter clip."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            n, (w, h) = getattr(img, "n_frames", 1), img.size
            rgb = np.asarray(img.convert("RGB"))  # [H, W, 3]
            if n > 1:
                img.seek(n - 1)
                img.load()
    except FileNotFoundError:
        raise InputError(f"{path} is missing; re-download the dataset or re-generate it") from None
    except (OSError, EOFError, ValueError, SyntaxError, UnidentifiedImageError) as err:
        raise InputError(f"{path} is truncated or not a GIF ({err}); re-download or re-generate it") from None
    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    return n, w, h, 1 if grey else 3


# ------------------------------------------------------------------------ listing
def _id_key(stem: str) -> tuple:
    """Numeric ids in numeric order, then the others alphabetically."""
    return (0, int(stem), stem) if stem.isdigit() else (1, 0, stem)


def is_legacy(root: str | Path) -> bool:
    """``root`` has ``<split>/gif/`` for some split."""
    return any((Path(root) / split / GIF_DIR).is_dir() for split in SPLITS)


def legacy_splits(root: str | Path) -> list[str]:
    """Splits of a legacy root that have a ``gif/`` folder."""
    return [s for s in SPLITS if (Path(root) / s / GIF_DIR).is_dir()]


def list_clips(root: str | Path, split: str) -> list[str]:
    """Clip ids of one legacy split (GIFs and pickles paired by stem, sorted numerically)."""
    check_split(split)
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} does not exist; point --data_root at the M3SO download or make one with "
                         f"{recreate_hint(root)}")
    gif_dir, pk_dir = root / split / GIF_DIR, root / split / PICKLE_DIR
    if not gif_dir.is_dir():
        raise InputError(f"{gif_dir} is missing: the legacy layout needs {split}/{GIF_DIR}/ and {split}/{PICKLE_DIR}/; "
                         f"re-download the dataset")
    if not pk_dir.is_dir():
        raise InputError(f"{pk_dir} is missing: every {split}/{GIF_DIR}/<id>.gif needs {split}/{PICKLE_DIR}/"
                         f"<id>{PICKLE_SUFFIX}; re-download the dataset")
    gifs = {p.stem for p in gif_dir.iterdir() if p.suffix.lower() == ".gif"}
    pickles = {p.name[: -len(PICKLE_SUFFIX)] for p in pk_dir.iterdir() if p.name.endswith(PICKLE_SUFFIX)}
    if not gifs:
        raise InputError(f"{gif_dir} has no .gif files (empty split); re-download or re-generate the dataset")
    for have, lack, folder, suffix in ((gifs, pickles, pk_dir, PICKLE_SUFFIX), (pickles, gifs, gif_dir, ".gif")):
        missing = sorted(have - lack, key=_id_key)
        if missing:
            shown = ", ".join(f"{m}{suffix}" for m in missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise InputError(f"{folder} lacks {len(missing)} file(s) that the other folder has ({shown}); "
                             f"re-download the dataset or remove the unpaired files")
    return sorted(gifs, key=_id_key)


# ------------------------------------------------------------------------ dataset
class LegacyDataset(Dataset):
    """One split of the legacy layout; same items as :class:`data.m3so.ClipDataset`.

    Item ``i`` -> ``(frames: float32 [seq_len, C, H, W] in [0, 1],
    audio: float32 [seq_len, 1, F, S] = scale_features(pickled array))``.
    Files are read per item (that is what the layout allows); convert the folder once
    with ``python -m data.convert_legacy`` for memory-mapped loading.
    """

    def __init__(self, root: str | Path, split: str, seq_len: int, *, image_width: int | None = None,
                 channels: int | None = None, start: str = "first") -> None:
        check_split(split)
        check_start(start)
        seq_len = check_seq_len(seq_len)
        self.root = Path(root)
        self.split = split
        self.start = start
        self.seq_len = seq_len
        self.ids = list_clips(self.root, split)
        first_gif = self.gif_path(0)
        n_frames, w, h, detected_c = gif_info(first_gif)
        if channels is not None and channels not in (1, 3):
            raise InputError(f"--channels {channels} is not supported for {first_gif}; use 1 (grey) or 3 (RGB)")
        self.channels = detected_c if channels is None else channels
        if image_width is None and w != h:
            raise InputError(f"{first_gif} has {w}x{h} frames; pass --image_width to resize them to a square")
        if image_width is not None and image_width < 1:
            raise InputError(f"--image_width {image_width} must be a positive integer")
        self.image_width = image_width
        self.image_size = w if image_width is None else image_width
        spec = load_array_pickle(self.pickle_path(0))
        self.audio_shape = (int(spec.shape[1]), int(spec.shape[2]))
        self.num_frames = min(n_frames, spec.shape[0])  # of the first clip; each item re-checks its own
        self._check_clip(0, n_frames, spec)

    def gif_path(self, index: int) -> Path:
        return self.root / self.split / GIF_DIR / f"{self.ids[index]}.gif"

    def pickle_path(self, index: int) -> Path:
        return self.root / self.split / PICKLE_DIR / f"{self.ids[index]}{PICKLE_SUFFIX}"

    def _check_clip(self, index: int, n_frames: int, spec: np.ndarray) -> None:
        if spec.shape[1:] != self.audio_shape:
            raise InputError(f"{self.pickle_path(index)} holds features of shape {spec.shape[1:]}, but "
                             f"{self.pickle_path(0)} has {self.audio_shape}; re-download or re-generate it")
        if not np.isfinite(spec).all():
            raise InputError(f"{self.pickle_path(index)} (clip {index}) has NaN/inf audio features; "
                             f"re-download or re-generate it")
        for path, length in ((self.pickle_path(index), spec.shape[0]), (self.gif_path(index), n_frames)):
            if length < self.seq_len:
                raise InputError(f"{path} has {length} frames, fewer than seq_len={self.seq_len}; lower "
                                 f"--n_past/--n_future or re-generate the clip")

    def __len__(self) -> int:
        return len(self.ids)

    def load_clip(self, index: int, max_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Whole clip: frames float32 ``[T, H, W, C]`` (per-frame max scaled) and raw features ``[T, F, S]``,
        both cut to the shorter of the two (and to ``max_frames``)."""
        spec = load_array_pickle(self.pickle_path(index))
        limit = spec.shape[0] if max_frames is None else min(max_frames, spec.shape[0])
        pix = read_gif(self.gif_path(index), self.image_width, self.channels, max_frames=limit)
        if self.image_width is None and pix.shape[1] != self.image_size:
            raise InputError(f"{self.gif_path(index)} has {pix.shape[2]}x{pix.shape[1]} frames but "
                             f"{self.gif_path(0)} has {self.image_size}; pass --image_width to resize all clips")
        self._check_clip(index, pix.shape[0], spec)
        t = min(pix.shape[0], spec.shape[0])
        return pix[:t], spec[:t]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self.ids):
            raise IndexError(f"clip index {index} out of range for {len(self.ids)} clips")
        if self.start == "first":
            pix, spec = self.load_clip(index, max_frames=self.seq_len)
            t0 = 0
        else:
            pix, spec = self.load_clip(index)
            t0 = int(torch.randint(0, pix.shape[0] - self.seq_len + 1, (1,)).item())
        t1 = t0 + self.seq_len
        video = torch.from_numpy(np.ascontiguousarray(pix[t0:t1].transpose(0, 3, 1, 2)))  # [seq_len, C, H, W]
        audio = scale_features(torch.from_numpy(spec[t0:t1].astype(np.float32))).unsqueeze(1)  # [seq_len, 1, F, S]
        return video, audio


def dataset_info(root: str | Path) -> dict[str, Any]:
    """Summary of a legacy root, read from the first clip of its first split."""
    root = Path(root)
    splits = legacy_splits(root)
    counts = {s: len(list_clips(root, s)) for s in splits}
    ds = LegacyDataset(root, splits[0], 1)
    return {"layout": "legacy", "name": "M3SO (legacy)", "image_size": ds.image_size, "channels": ds.channels,
            "audio_shape": ds.audio_shape, "num_frames": ds.num_frames, "splits": counts, "path": str(root)}
