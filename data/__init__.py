"""Datasets for Sound2Sight: one entry point for both on-disk layouts.

* ``<root>/dataset.json`` -> the project's memory-mapped layout (:mod:`data.m3so`);
* ``<root>/<split>/gif/`` -> the original release's GIF + pickle layout (:mod:`data.legacy`).

Items are ``(frames: float32 [seq_len, C, H, W] in [0, 1], audio: float32 [seq_len, 1, F, S])``
with the audio already scaled as its feature kind says (:data:`data.features.FEATURES`:
``log1p`` for STFT, MFCCs as stored).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from errors import InputError

from . import legacy, m3so
from .dataset_format import DEFAULT_DATA_ROOT, in_package, recreate_hint
from .m3so import check_split

__all__ = ["DEFAULT_DATA_ROOT", "detect_layout", "dataset_info", "dataset_shapes", "check_preset", "open_dataset",
           "DataShapes", "DATASETS", "PRESETS", "PRESET_AUDIO_SHAPES"]

#: ``--dataset`` choices of both scripts. smmnist/m3so/m3so_nb: a generated or legacy M3SO
#: folder; drums/painting: the paper's 64x64 colour sets; av: any folder
#: made by ``python -m data.prepare_av``, shapes from its dataset.json.
DATASETS = ["smmnist", "m3so", "m3so_nb", "drums", "painting", "av"]
#: Frame shape of the fixed-shape presets (their audio features are [45, 17] or [48, 17]).
#: A preset checks a folder's shapes (:func:`check_preset`); the shapes come from the folder.
PRESETS = {
    "drums": {"image_width": 64, "channels": 3},
    "painting": {"image_width": 64, "channels": 3},
}
PRESET_AUDIO_SHAPES = [(45, 17), (48, 17)]


@dataclass(frozen=True)
class DataShapes:
    """What a model trained on a data folder takes: ``channels x image_size x image_size`` frames
    and ``audio_shape = (F, S)`` features per frame."""

    image_size: int
    channels: int
    audio_shape: tuple[int, int]


def detect_layout(data_root: str | Path) -> str:
    """``"m3so"`` when ``dataset.json`` exists, ``"legacy"`` when ``<split>/gif/`` does, else InputError."""
    root = Path(data_root)
    if in_package(root) and not (root / "dataset.json").is_file() and not legacy.is_legacy(root):
        raise InputError(f"{root} is in data/, the project's Python package, not a dataset folder; make one "
                         f"outside it with {recreate_hint(root)}")
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise InputError(f"{root} {what}; pass the dataset folder as --data_root or make one with "
                         f"{recreate_hint(root)}")
    if (root / "dataset.json").is_file():
        return "m3so"
    if legacy.is_legacy(root):
        return "legacy"
    raise InputError(f"{root} is neither a Sound2Sight dataset (dataset.json) nor the legacy M3SO layout "
                     f"(<split>/gif/); make one with {recreate_hint(root)}")


def dataset_info(data_root: str | Path) -> dict[str, Any]:
    """Describe a dataset folder: ``layout``, ``name``, ``image_size``, ``channels``, ``audio_shape`` (F, S),
    ``num_frames``, ``splits`` (clips per split) and ``path``; the new layout adds its dataset.json keys."""
    if detect_layout(data_root) == "m3so":
        return m3so.dataset_info(data_root)
    return legacy.dataset_info(data_root)


def dataset_shapes(data_root: str | Path, *, missing_ok: bool = False) -> DataShapes | None:
    """Frame and feature shapes of the dataset in ``data_root`` (either layout; the legacy
    layout's native GIF size). InputError when the folder holds none, or None with
    ``missing_ok`` (a folder not made yet); a broken dataset is an InputError either way."""
    root = Path(data_root)
    if missing_ok and not ((root / "dataset.json").is_file() or (root.is_dir() and legacy.is_legacy(root))):
        return None
    info = dataset_info(root)
    return DataShapes(image_size=int(info["image_size"]), channels=int(info["channels"]),
                      audio_shape=tuple(int(v) for v in info["audio_shape"]))  # type: ignore[arg-type]


def check_preset(dataset: str, shapes: DataShapes, data_root: str | Path) -> None:
    """``--dataset drums|painting`` names fixed shapes: InputError when the folder's differ
    (nothing to check for the other choices)."""
    want = PRESETS.get(dataset)
    if want is None:
        return
    frames_ok = (shapes.image_size, shapes.channels) == (want["image_width"], want["channels"])
    if not frames_ok or tuple(shapes.audio_shape) not in PRESET_AUDIO_SHAPES:
        raise InputError(f"--dataset {dataset} expects {want['channels']}x{want['image_width']}x{want['image_width']} "
                         f"frames and {' or '.join(str(list(s)) for s in PRESET_AUDIO_SHAPES)} audio features; "
                         f"{data_root} has {shapes.channels}x{shapes.image_size}x{shapes.image_size} and "
                         f"{list(shapes.audio_shape)}; use --dataset av to take the folder's own shapes")


def open_dataset(data_root: str | Path, split: str, seq_len: int, *, image_width: int | None = None,
                 channels: int | None = None, start: str = "first") -> Dataset:
    """Open one split as a torch Dataset of ``(frames [seq_len, C, H, W], audio [seq_len, 1, F, S])``.

    ``start="first"`` gives frames ``0..seq_len-1``; ``"random"`` a random window of
    ``seq_len`` frames drawn with torch's RNG (training augmentation). ``image_width`` and
    ``channels`` must match the new layout (it is never resized); the legacy layout is
    resized to ``image_width`` and converted to ``channels``.
    """
    check_split(split)
    kwargs = dict(image_width=image_width, channels=channels, start=start)
    if detect_layout(data_root) == "m3so":
        return m3so.ClipDataset(data_root, split, seq_len, **kwargs)
    return legacy.LegacyDataset(data_root, split, seq_len, **kwargs)


def clip_sound(data_root: str | Path, split: str, clip: int, frames: int) -> tuple[Any, int] | None:
    """The first ``frames`` video frames' worth of clip ``clip``'s sound (mono float32) and its sample
    rate, read from ``<split>/audio.npy`` (memory-mapped, no pickles); None for a dataset that keeps
    only audio features (the legacy layout)."""
    import numpy as np

    info = dataset_info(data_root)
    path = Path(data_root) / split / "audio.npy"
    if info.get("layout") != "m3so" or not path.is_file() or not info.get("sample_rate"):
        return None
    audio = np.load(path, mmap_mode="r", allow_pickle=False)
    return np.asarray(audio[clip, :frames * int(info["samples_per_frame"])], dtype=np.float32), int(info["sample_rate"])
