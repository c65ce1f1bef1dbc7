"""Datasets for Sound2Sight: one entry point for both on-disk layouts.

* ``<root>/dataset.json`` -> the project's memory-mapped layout (:mod:`data.m3so`);
* ``<root>/<split>/gif/`` -> the original release's GIF + pickle layout (:mod:`data.legacy`).

Items are ``(frames: float32 [seq_len, C, H, W] in [0, 1], audio: float32 [seq_len, 1, F, S])``
with the audio already passed through :func:`data.features.scale_features`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from utils import InputError

from . import legacy, m3so
from .m3so import GEN_HINT, check_split

__all__ = ["detect_layout", "dataset_info", "open_dataset", "DATASETS", "PRESETS"]

#: ``--dataset`` choices of both scripts. smmnist/m3so/m3so_nb: a generated or legacy M3SO
#: folder; drums/painting: the paper's 64x64 colour sets; av: any folder
#: made by ``python -m data.prepare_av``, shapes from its dataset.json.
DATASETS = ["smmnist", "m3so", "m3so_nb", "drums", "painting", "av"]
#: Frame shape of the fixed-shape presets (their audio features are [45, 17] or [48, 17]).
PRESETS = {
    "drums": {"image_width": 64, "channels": 3},
    "painting": {"image_width": 64, "channels": 3},
}
PRESET_AUDIO_SHAPES = [(45, 17), (48, 17)]


def detect_layout(data_root: str | Path) -> str:
    """``"m3so"`` when ``dataset.json`` exists, ``"legacy"`` when ``<split>/gif/`` does, else InputError."""
    root = Path(data_root)
    if not root.is_dir():
        raise InputError(f"{root} does not exist or is not a folder; pass the dataset folder as --data_root "
                         f"or make one with {GEN_HINT} {root}")
    if (root / "dataset.json").is_file():
        return "m3so"
    if legacy.is_legacy(root):
        return "legacy"
    raise InputError(f"{root} is neither a Sound2Sight dataset (dataset.json) nor the legacy M3SO layout "
                     f"(<split>/gif/); make one with {GEN_HINT} {root}")


def dataset_info(data_root: str | Path) -> dict[str, Any]:
    """Describe a dataset folder: ``layout``, ``name``, ``image_size``, ``channels``, ``audio_shape`` (F, S),
    ``num_frames``, ``splits`` (clips per split) and ``path``; the new layout adds its dataset.json keys."""
    if detect_layout(data_root) == "m3so":
        return m3so.dataset_info(data_root)
    return legacy.dataset_info(data_root)


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
