"""The one owner of ``dataset.json``: its format version, split names, keys and checks.

Every tool that writes a dataset folder (the M3SO generator, ``data.prepare_av``,
``data.convert_legacy``) builds a :class:`DatasetMeta` and calls :meth:`DatasetMeta.write`;
every loader calls :meth:`DatasetMeta.read`. The file (format version 1)::

    {"name": str, "format_version": 1, "image_size": W, "channels": C, "num_frames": T,
     "fps": int, "sample_rate": int, "samples_per_frame": L,      (optional: not every writer knows them)
     "stft": {"n_fft", "hop_length", "center", "window", "shape": [F, S]},   (always: stft.npy exists)
     "features": "stft" | "mfcc" | ...,                          (optional; absent means "stft")
     "<kind>": {..., "shape": [F, S]},                           (the parameters of that kind, when not stft)
     "splits": {"train": N, "test": N},
     ...}                                                         (any other key: provenance, kept as is)

Keys this module does not know (generator flags, sources, tone tables, ...) are kept in
:attr:`DatasetMeta.extra` in their order, so reading and writing a file gives the same JSON
object back. Which array the model reads, and how it is scaled, comes from the feature
registry (:mod:`data.features`) by the recorded ``"features"`` name.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from errors import InputError
from files import atomic_write_json, folder_problem
from signals import StopRequested, StopSignals

from .features import DEFAULT_FEATURE, FEATURES, FeatureKind, FrameSettings, get_feature

FILE_NAME = "dataset.json"
FORMAT_VERSION = 1
SPLITS = ("train", "test")
GEN_HINT = "python M3SO_Gen_Code/generate_m3so.py --dest"
#: Where the README's examples and the training's ``--data_root`` default put datasets: beside
#: the code, outside the ``data/`` package (and ignored by git).
DATASETS_DIR = "datasets"
DEFAULT_DATA_ROOT = f"{DATASETS_DIR}/m3so"
PACKAGE_DIR = Path(__file__).resolve().parent
# How to re-create a dataset, by its recorded name (anything else: the M3SO generator).
_HINTS = {"av": "python -m data.prepare_av --src VIDEOS --dest",
          "M3SO (legacy import)": "python -m data.convert_legacy --src DOWNLOAD --dest"}
# Top-level keys with a field of their own, in the order they are written.
_HEAD = ("name", "format_version", "image_size", "channels", "num_frames", "fps", "sample_rate",
         "samples_per_frame", "stft", "features")
_REQUIRED = ("name", "format_version", "image_size", "channels", "num_frames", "stft", "splits")


def in_package(root: str | Path) -> bool:
    """Whether ``root`` is this ``data/`` package's folder or inside it (no place for a dataset)."""
    try:
        resolved = Path(root).resolve()
    except (OSError, RuntimeError):
        return False
    return resolved == PACKAGE_DIR or PACKAGE_DIR in resolved.parents


def hint_dest(root: str | Path) -> str:
    """``root`` as a ``--dest`` to advise: itself, or for a folder in the ``data/`` package the same
    name under :data:`DATASETS_DIR` (the package itself: :data:`DEFAULT_DATA_ROOT`)."""
    if not in_package(root):
        return str(root)
    resolved = Path(root).resolve()
    return DEFAULT_DATA_ROOT if resolved == PACKAGE_DIR else f"{DATASETS_DIR}/{resolved.name}"


def recreate_hint(root: str | Path, name: Any = None) -> str:
    """The command that re-creates the dataset folder ``root`` (by the dataset's ``name``); for a
    folder in the ``data/`` package, the command that makes one outside it and the ``--data_root``
    to pass then."""
    command = f"{_HINTS.get(name, GEN_HINT) if isinstance(name, str) else GEN_HINT} {hint_dest(root)}"
    if in_package(root):
        command += f" and pass --data_root {hint_dest(root)}"
    return command


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _shape_of(block: Any) -> tuple[int, int] | None:
    """``block["shape"]`` as ``(F, S)`` when it is a list of two positive ints, else None."""
    shape = block.get("shape") if isinstance(block, dict) else None
    if isinstance(shape, list) and len(shape) == 2 and all(_positive_int(v) for v in shape):
        return int(shape[0]), int(shape[1])
    return None


@dataclass
class DatasetMeta:
    """The content of one ``dataset.json``.

    ``feature_blocks`` maps a feature kind's name to its parameter block (``"stft"`` always,
    the read kind's too); each is a top-level key of the same name on disk. ``features``
    None means the file does not say (read as ``"stft"``). ``fps``, ``sample_rate``,
    ``samples_per_frame`` None: not recorded.
    """

    name: str
    image_size: int
    channels: int
    num_frames: int
    splits: dict[str, int]
    feature_blocks: dict[str, dict[str, Any]]
    features: str | None = None
    fps: int | None = None
    sample_rate: int | None = None
    samples_per_frame: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    # ------------------------------------------------------------------ building
    @classmethod
    def for_features(cls, name: str, *, image_size: int, channels: int, num_frames: int, fps: int,
                     splits: dict[str, int], settings: FrameSettings, features: str = DEFAULT_FEATURE,
                     extra: dict[str, Any] | None = None) -> "DatasetMeta":
        """A dataset whose features were computed here with ``settings``: the ``stft`` block and
        the ``features`` kind's block come from the registry (ValueError for an unknown kind)."""
        kinds = {DEFAULT_FEATURE: get_feature(DEFAULT_FEATURE), features: get_feature(features)}
        return cls(name=name, image_size=image_size, channels=channels, num_frames=num_frames,
                   splits=dict(splits), feature_blocks={k: kind.params(settings) for k, kind in kinds.items()},
                   features=features, fps=fps, sample_rate=settings.sample_rate,
                   samples_per_frame=settings.samples_per_frame, extra=dict(extra or {}))

    # --------------------------------------------------------------- properties
    @property
    def feature_name(self) -> str:
        """The kind the model reads (``"stft"`` when the file does not say)."""
        return self.features if self.features is not None else DEFAULT_FEATURE

    @property
    def kind(self) -> FeatureKind:
        """The registry entry of :attr:`feature_name` (file name, scaling)."""
        return get_feature(self.feature_name)

    @property
    def audio_shape(self) -> tuple[int, int]:
        """``(F, S)`` of the features the model reads."""
        return tuple(self.feature_blocks[self.feature_name]["shape"])  # type: ignore[return-value]

    @property
    def stft_shape(self) -> tuple[int, int]:
        """``(F, S)`` of ``stft.npy``."""
        return tuple(self.feature_blocks[DEFAULT_FEATURE]["shape"])  # type: ignore[return-value]

    # ------------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        """The JSON object written to disk (known keys first, then :attr:`extra` in order)."""
        head = {"name": self.name, "format_version": self.format_version, "image_size": self.image_size,
                "channels": self.channels, "num_frames": self.num_frames, "fps": self.fps,
                "sample_rate": self.sample_rate, "samples_per_frame": self.samples_per_frame}
        out = {k: v for k, v in head.items() if v is not None}
        out["stft"] = self.feature_blocks[DEFAULT_FEATURE]
        if self.features is not None:
            out["features"] = self.features
        out.update({k: v for k, v in self.feature_blocks.items() if k != DEFAULT_FEATURE})
        out["splits"] = self.splits
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, obj: Any, path: str | Path) -> "DatasetMeta":
        """Check a parsed ``dataset.json`` (read from ``path``) and wrap it; InputError naming the fix."""
        path = Path(path)
        root = path.parent
        if not isinstance(obj, dict):
            raise InputError(f"{path} must hold a JSON object; re-create it with {recreate_hint(root)}")
        hint = recreate_hint(root, obj.get("name"))
        missing = [k for k in _REQUIRED if k not in obj]
        if missing:
            raise InputError(f"{path} lacks key(s) {', '.join(missing)}; re-create it with {hint}")
        features = obj.get("features")
        blocks = {DEFAULT_FEATURE: obj["stft"]}
        if isinstance(features, str) and features in FEATURES and features in obj:
            blocks[features] = obj[features]  # an unknown or unrecorded kind is refused by validate()
        meta = cls(name=obj["name"], image_size=obj["image_size"], channels=obj["channels"],
                   num_frames=obj["num_frames"], splits=obj["splits"], feature_blocks=blocks, features=features,
                   fps=obj.get("fps"), sample_rate=obj.get("sample_rate"),
                   samples_per_frame=obj.get("samples_per_frame"),
                   extra={k: v for k, v in obj.items() if k not in _HEAD and k != "splits" and k not in blocks},
                   format_version=obj["format_version"])
        meta.validate(path)
        return meta

    def validate(self, path: str | Path) -> None:
        """Raise one-line InputError (naming ``path`` and the command that re-creates it) unless
        the fields hold a readable dataset description."""
        path = Path(path)
        hint = recreate_hint(path.parent, self.name)
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"{path}: name must be a non-empty string; re-create it with {hint}")
        if self.format_version != FORMAT_VERSION:
            raise InputError(f"{path} has format_version {self.format_version!r}, this code reads {FORMAT_VERSION}; "
                             f"re-create it with {hint}")
        if (not all(_positive_int(v) for v in (self.image_size, self.channels, self.num_frames))
                or _shape_of(self.feature_blocks.get(DEFAULT_FEATURE)) is None
                or not isinstance(self.splits, dict)
                or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                           for k, v in self.splits.items())):
            raise InputError(f"{path}: image_size, channels, num_frames must be positive integers, stft.shape [F, S] "
                             f"and splits an object of clip counts; re-create it with {hint}")
        for key in ("fps", "sample_rate", "samples_per_frame"):
            if getattr(self, key) is not None and not _positive_int(getattr(self, key)):
                raise InputError(f"{path}: {key} must be a positive integer; re-create it with {hint}")
        try:
            kind = self.kind
        except ValueError:
            raise InputError(f"{path} has features {self.features!r}; this code reads {', '.join(FEATURES)}; "
                             f"re-create it with {hint}") from None
        block = self.feature_blocks.get(kind.name)
        recorded = block.get("file", kind.file) if isinstance(block, dict) else kind.file
        if _shape_of(block) is None or recorded != kind.file:
            raise InputError(f"{path} says features {kind.name!r} but lacks a valid \"{kind.name}\": "
                             f"{{\"shape\": [F, S], \"file\": \"{kind.file}\"}}; re-create it with {hint}")

    # -------------------------------------------------------------------- files
    @classmethod
    def read(cls, root: str | Path) -> "DatasetMeta":
        """Read and check ``<root>/dataset.json``; InputError naming the file and the fix."""
        path = Path(root) / FILE_NAME
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path} does not exist; make the dataset with {recreate_hint(root)}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{path} is not readable JSON ({err}); re-create it with {recreate_hint(root)}") from None
        return cls.from_json(obj, path)

    def write(self, root: str | Path) -> Path:
        """Check, then write ``<root>/dataset.json`` atomically; returns its path."""
        path = Path(root) / FILE_NAME
        self.validate(path)
        atomic_write_json(path, self.to_json())
        return path


# -------------------------------------------------------------- writing a dataset folder
def check_dest(dest: str | Path, overwrite: bool) -> None:
    """Refuse, before any work, a ``--dest`` that cannot become a dataset folder.

    Refused (one-line InputError naming ``--dest`` and the fix): a file; an existing folder
    without ``overwrite``; with ``overwrite``, a non-empty folder that is not a dataset (no
    ``dataset.json``: ``--overwrite`` replaces datasets, never other folders); a location
    whose folder cannot be created or written; a folder in the ``data/`` package (code, not
    data). Nothing is created. The tools then build the folder with :func:`files.atomic_dir`,
    which refuses the same first two again.
    """
    dest = Path(dest)
    if in_package(dest):
        raise InputError(f"--dest {dest} is in data/, the project's Python package; write datasets outside it, "
                         f"e.g. --dest {hint_dest(dest)}")
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir():
            raise InputError(f"--dest {dest} is a file, not a folder; choose another --dest")
        if not overwrite:
            raise InputError(f"--dest {dest} already exists; pass --overwrite to replace it or choose another --dest")
        if not (dest / FILE_NAME).is_file() and any(dest.iterdir()):
            raise InputError(f"--dest {dest} is a folder with files but no {FILE_NAME}, not a dataset; --overwrite "
                             "replaces only a dataset: choose another --dest, or empty that folder yourself")
    problem = folder_problem(dest.parent)
    if problem:
        raise InputError(f"--dest {dest}: {problem}; pass a --dest in a writable folder")


@contextlib.contextmanager
def stoppable(dest: str | Path) -> Iterator[StopSignals]:
    """SIGTERM/SIGINT while a dataset tool builds ``dest``: stop at its next ``stop.check()``.

    Wrap the whole work (reading inputs, then :func:`files.atomic_dir`): a stop raises
    :class:`signals.StopRequested` whose one line says what happened, that nothing was
    written to ``dest`` (a dataset already there is intact: ``atomic_dir`` removed the
    temporary folder) and how to run it again; :func:`errors.run_cli` prints it and exits
    with 128 + the signal number.
    """
    import signal

    dest = Path(dest)
    kept = (dest / FILE_NAME).is_file()
    with StopSignals() as stop:
        try:
            yield stop
        except StopRequested as err:
            left = "the dataset already there is intact" if kept else "nothing was written there"
            raise StopRequested(err.signum, f"stopped by {signal.Signals(err.signum).name} before {dest} was complete; "
                                            f"{left}; run the same command again to build it") from None


__all__ = ["DatasetMeta", "FILE_NAME", "FORMAT_VERSION", "SPLITS", "GEN_HINT", "DATASETS_DIR",
           "DEFAULT_DATA_ROOT", "in_package", "hint_dest", "recreate_hint", "check_dest",
           "stoppable"]
