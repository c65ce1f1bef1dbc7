"""Every command-line tool walked through bad input, a full disk and SIGTERM/SIGINT.

The tools: ``train_sound2sight.py``, ``generate_sound2sight.py``,
``M3SO_Gen_Code/generate_m3so.py``, ``python -m data.prepare_av``, ``python -m
data.convert_legacy``. For every bad input (a missing path, a file where a folder is
expected, a folder below a file, an unwritable location, a truncated or corrupt
``.npy``/``.gif``/``.pt``/video/pickle, NaN or inf in the data) each case asserts: exit
status 2, exactly one ``error:`` line on stderr naming the file or flag and the fix, no
traceback, and no file changed anywhere (inputs, earlier outputs), with no temporary file
left behind. Most cases run in-process through ``errors.run_cli`` (what the scripts' entry
points call); a few run as real subprocesses, to prove the entry points themselves print
no traceback. A full disk is simulated by making the write primitive a tool uses
(``os.pwrite``, ``os.posix_fallocate``, ``numpy.save``, ``torch.save``, ``numpy.savez``)
write part of its data and raise ``OSError(ENOSPC)``; the dataset tools' SIGTERM/SIGINT
handling is tested with real signals to real processes. Sizes are toys: seconds per case.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

import generate_sound2sight
import train_sound2sight
from data import convert_legacy, prepare_av
from M3SO_Gen_Code import generate_m3so
from test_generate import make_checkpoint
from test_generator import _fake_mnist
from test_loaders import make_legacy, write_pickle
from test_prepare_av import write_video
from errors import run_cli

ROOT = Path(__file__).resolve().parents[1]
MAINS: dict[str, Callable] = {"train": train_sound2sight.main, "evaluate": generate_sound2sight.main,
                              "m3so": generate_m3so.main, "prepare_av": prepare_av.main,
                              "convert_legacy": convert_legacy.main}
COMMANDS = {"train": [str(ROOT / "train_sound2sight.py")], "evaluate": [str(ROOT / "generate_sound2sight.py")],
            "m3so": [str(ROOT / "M3SO_Gen_Code" / "generate_m3so.py")], "prepare_av": ["-m", "data.prepare_av"],
            "convert_legacy": ["-m", "data.convert_legacy"]}
TRAIN = ["--g_dim", "16", "--rnn_size", "32", "--z_dim", "4", "--dim_ff", "32", "--disc_rnn_size", "16", "--nhead",
         "2", "--nf", "8", "--n_past", "3", "--n_future", "3", "--n_eval", "8", "--batch_size", "4", "--num_workers",
         "0", "--val_nsample", "1", "--bn_recalibrate", "1", "--device", "cpu", "--save_every", "0", "--niter", "1",
         "--epoch_size", "1", "--no_tensorboard"]
EVAL = ["--n_past", "2", "--n_future", "3", "--nsample", "2", "--batch_size", "4", "--num_gifs", "1", "--device",
        "cpu", "--no_tensorboard"]
M3SO = ["--quiet", "--num_train", "4", "--num_test", "2", "--num_frames", "4", "--no_block"]
AV = ["--image_width", "16", "--seq_len", "5", "--no_previews"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ------------------------------------------------------------------------- fixtures
@dataclasses.dataclass
class World:
    """Shared inputs and earlier outputs; no case may change a byte of them."""

    root: Path
    m3so: Path  # M3SO-NB, 16 + 8 clips of 10 frames (conftest's tiny_data, outside root)
    mfcc: Path  # the same with --features mfcc
    legacy: Path  # the release's GIF + pickle layout, 6 + 3 clips of 10 48x48 frames
    ckpt: Path  # a tiny evaluation checkpoint (n_past 2)
    run: Path  # a finished tiny training run (checkpoints/last.pt, best.pt)
    eval: Path  # a finished evaluation's outputs (metrics.json, ...)
    video: Path  # a good 1.5 s video with sound
    blocker: Path  # a plain file

    @property
    def roots(self) -> tuple[Path, Path]:
        return self.root, self.m3so


def nan_audio_video(path: Path) -> Path:
    """A 1.5 s video whose float PCM audio (mkv, pcm_f32le) carries NaN samples from 0.7 s on."""
    return write_video(path, seconds=1.5, acodec="pcm_f32le", audio_nan=(0.7, 0.71))


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_data) -> World:
    root = tmp_path_factory.mktemp("world")
    m3so = tiny_data
    mfcc = generate_m3so.generate(root / "mfcc", num_train=8, num_test=4, num_frames=10, no_block=True, seed=3,
                                  features="mfcc", progress=False)
    make_legacy(root / "legacy", n=(6, 3), t=10, size=48, wav=False)
    ckpt = make_checkpoint(root / "ckpt.pt", m3so, nf=8)
    run = train_sound2sight.main(["--data_root", str(m3so), "--log_dir", str(root / "run"), *TRAIN])
    generate_sound2sight.main(["--model_path", str(ckpt), "--data_root", str(m3so), "--log_dir", str(root / "eval"),
                               *EVAL])
    (root / "videos").mkdir()
    video = write_video(root / "videos" / "good.mp4", seconds=1.5)
    blocker = root / "blocker"
    blocker.write_text("a plain file\n")
    return World(root, m3so, mfcc, root / "legacy", ckpt, run, root / "eval", video, blocker)


def _can_create_in(folder: Path) -> bool:
    """Whether a file can really be created in ``folder`` (an independent probe, not the code under test)."""
    try:
        fd = os.open(folder / ".probe", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except OSError:
        return False
    os.close(fd)
    os.unlink(folder / ".probe")
    return True


@pytest.fixture
def lock_folder():
    """``lock(folder) -> folder to use``: make ``folder`` refuse new entries as really as this machine allows.

    * Not root: ``chmod 0o555``, the permission check every user meets (EACCES).
    * Root: permission bits do not stop root (CAP_DAC_OVERRIDE), so ``chmod`` alone proves
      nothing there. The folder is made immutable instead (``chattr +i``: EPERM for
      everyone, root included; ext4, xfs, btrfs, tmpfs from Linux 6.0). What a root run
      cannot check is the EACCES (permission denied) errno itself; the tools' checks are
      the same code for both.
    * Neither works (no chattr, or a file system without the flag): a folder below
      ``/sys/kernel``, where sysfs refuses to create anything even for root. It then holds
      no earlier files, so only the refusal is checked, not that they stay intact.
    """
    locked: list[tuple[str, Path]] = []

    def lock(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o555)
        locked.append(("chmod", folder))
        if not _can_create_in(folder):
            return folder
        chattr = shutil.which("chattr")
        if chattr and subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode == 0:
            locked.append(("chattr", folder))
            if not _can_create_in(folder):
                return folder
        fallback = Path("/sys/kernel/sound2sight_test")
        assert not _can_create_in(Path("/sys/kernel")), "no way to make a folder unwritable on this machine"
        return fallback

    yield lock
    for how, folder in reversed(locked):
        if how == "chattr":
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            os.chmod(folder, 0o755)


# --------------------------------------------------------------------------- helpers
def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file below ``roots`` (hidden ones included)."""
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(*roots: Path) -> list[str]:
    """Temporary files or folders a tool left behind (atomic writes, dataset builds, probes, locks;
    an evaluation's ``.partial/`` store of finished batches is kept on purpose)."""
    bad = []
    for root in roots:
        for p in Path(root).rglob("*"):
            name = p.name
            if (name.endswith((".tmp", ".old")) or (name.endswith(".partial") and name != ".partial")
                    or name.startswith(".write_test.") or name in (".lock", ".probe")):
                bad.append(str(p))
    return bad


def in_process(tool: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the tool's ``main(argv)`` through ``errors.run_cli``, as its entry point does: (exit status, out, err).
    Anything but SystemExit (a traceback at the real entry point) fails the test."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_cli(MAINS[tool], argv)
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


def as_subprocess(tool: str, argv: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, *COMMANDS[tool], *argv], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=ENV)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_error_line(code: int, out: str, err: str, needles: list[str]) -> str:
    """Exit status 2, exactly one ``error:`` line holding every needle, no traceback anywhere."""
    assert code == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def randomize(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(max(path.stat().st_size, 64)))


def poison(path: Path, clip: int, value: float = np.nan) -> None:
    """Put ``value`` into clip ``clip`` of a float ``.npy``."""
    array = np.load(path)
    array[clip].flat[7] = value
    np.save(path, array)


class _Evil:
    """Unpickling this runs a command: what a checkpoint or feature pickle must never do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclasses.dataclass
class Case:
    """One bad input: the tool, its argv and what its one error line must say."""

    tool: str
    argv: list[str]
    needles: list[str]  # what the error line must say: the file or flag, what is wrong, the fix
    new_ok: tuple[str, ...] = ()  # folders where a run that started may leave new (complete) files
    after: Callable[[], None] | None = None  # any further check
    not_started: tuple[str, ...] = ()  # progress output of work that a check before the work must prevent


# ----------------------------------------------------------------------------- cases
# Each builder gets the shared world, a fresh folder and the folder-locking fixture, sets the
# case up (copies of what it corrupts) and returns the Case.
def _train(w: World, t: Path, data: Path | None = None, log: Path | None = None, *extra: str) -> list[str]:
    return ["--data_root", str(data or w.m3so), "--log_dir", str(log or t / "log"), *TRAIN, *extra]


def _eval(w: World, t: Path, ckpt: Path | None = None, data: Path | None = None, out: Path | None = None,
          *extra: str) -> list[str]:
    # --overwrite: the output folder often holds an earlier evaluation, which must survive the bad input
    return ["--model_path", str(ckpt or w.ckpt), "--data_root", str(data or w.m3so), "--log_dir",
            str(out or t / "eval"), "--overwrite", *EVAL, *extra]


def _data(w: World, t: Path, name: str = "m3so") -> Path:
    return copy(getattr(w, name), t / "data")


def _corrupt_run(w: World, t: Path, how: Callable[[Path], None]) -> list[str]:
    run = copy(w.run, t / "run")
    how(run / "checkpoints" / "last.pt")
    return _train(w, t, None, run, "--resume")


def _evil_checkpoint(path: Path) -> None:
    torch.save({"model_config": {}, "model": _Evil(path.parent / "pwned")}, path)


def _not_run(marker: Path) -> Callable[[], None]:
    def check() -> None:
        assert not marker.exists(), "unpickling ran code"
    return check


def _absent(path: Path) -> Callable[[], None]:
    def check() -> None:
        assert not path.exists(), f"{path} was written"
    return check


def _data_with(w: World, t: Path, split: str, name: str, how: Callable[[Path], None], kind: str = "m3so") -> Path:
    data = _data(w, t, kind)
    how(data / split / name)
    return data


def _float_frames(path: Path) -> None:
    frames = np.load(path).astype(np.float32) / 255
    frames[0, 0, 0, 0] = np.nan
    np.save(path, frames)


def _legacy_with(w: World, t: Path, how: Callable[[Path], None], *names: str) -> Path:
    data = copy(w.legacy, t / "legacy")
    for name in names:
        how(data / name)
    return data


def _non_dataset(t: Path) -> Path:
    folder = t / "not_a_dataset"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    return folder


def _mnist(t: Path, how: Callable[[Path], None], name: str) -> Path:
    _fake_mnist(t / "mnist")
    how(t / "mnist" / name)
    return t / "mnist"


def _videos(t: Path, *files: tuple[str, Callable[[Path], None]]) -> Path:
    src = t / "videos"
    src.mkdir()
    for name, make in files:
        make(src / name)
    return src


def _cut(seconds: float = 1.5, fraction: float = 0.5, **kw) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        write_video(path, seconds=seconds, **kw)
        truncate(path, fraction)
    return make


def _dataset_at(t: Path, name: str = "ds") -> Path:
    """A complete (tiny) dataset at ``t/name``, to be kept intact."""
    return generate_m3so.generate(t / name, num_train=4, num_test=2, num_frames=4, no_block=True, progress=False)


def _locked_dest(t: Path, lock, with_dataset: bool = False) -> Path:
    folder = t / "locked"
    if with_dataset:
        _dataset_at(folder)
    return lock(folder) / "ds"


def _copied_and(path: Path, t: Path, how: Callable[[Path], None]) -> Path:
    out = t / path.name
    shutil.copy(path, out)
    how(out)
    return out


def _random_file(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(1).bytes(3000))
    return path


def _list_file(t: Path, *names: str) -> Path:
    listing = t / "list.txt"
    listing.write_text("".join(f"{n}\n" for n in names))
    return listing


def _corrupt_gz(path: Path) -> None:
    """Keep the gzip header, damage the deflate stream behind it."""
    data = bytearray(path.read_bytes())
    data[12:40] = b"\xff" * 28
    path.write_bytes(bytes(data))


def _nan_pickle(path: Path) -> None:
    write_pickle(path, np.full((10, 23, 21), np.nan, np.float32), 2)


CASES: dict[str, Callable[[World, Path, Callable], Case]] = {
    # ---------------------------------------------------------------- train_sound2sight.py
    "train-data_root-missing": lambda w, t, lock: Case(
        "train", _train(w, t, t / "nope"), [str(t / "nope"), "does not exist", "--data_root"]),
    "train-data_root-is-a-file": lambda w, t, lock: Case(
        "train", _train(w, t, w.blocker), [str(w.blocker), "is a file, not a folder", "--data_root"]),
    "train-data_root-below-a-file": lambda w, t, lock: Case(
        "train", _train(w, t, w.blocker / "sub"), [str(w.blocker / "sub"), "does not exist", "pass"]),
    "train-log_dir-is-a-file": lambda w, t, lock: Case(
        "train", _train(w, t, None, w.blocker), ["--log_dir", str(w.blocker), "is a file, not a folder", "pass"]),
    "train-log_dir-below-a-file": lambda w, t, lock: Case(
        "train", _train(w, t, None, w.blocker / "sub"), ["--log_dir", f"{w.blocker} is a file, not a folder",
                                                          "pass a writable folder"]),
    "train-log_dir-unwritable": lambda w, t, lock: Case(
        "train", _train(w, t, None, lock(t / "locked") / "run"), ["--log_dir", "not writable", "pass a writable"]),
    "train-model_dir-is-a-file": lambda w, t, lock: Case(
        "train", [*_train(w, t), "--model_dir", str(w.blocker)], ["--model_dir", "is a file, not a folder"]),
    "train-model_dir-below-a-file": lambda w, t, lock: Case(
        "train", [*_train(w, t), "--model_dir", str(w.blocker / "run")], ["--model_dir", "is a file, not a folder"]),
    "train-frames.npy-truncated": lambda w, t, lock: Case(
        "train", _train(w, t, _data_with(w, t, "train", "frames.npy", truncate)),
        ["train/frames.npy is truncated", "re-create the dataset"]),
    "train-stft.npy-random-bytes": lambda w, t, lock: Case(
        "train", _train(w, t, _data_with(w, t, "test", "stft.npy", randomize)),
        ["test/stft.npy is not a .npy file", "re-create the dataset"]),
    "train-dataset.json-random-bytes": lambda w, t, lock: Case(
        "train", _train(w, t, _data_with(w, t, ".", "dataset.json", randomize)),
        ["dataset.json is not readable JSON", "re-create it with"]),
    "train-stft.npy-nan-in-clip-0": lambda w, t, lock: Case(
        "train", _train(w, t, _data_with(w, t, "train", "stft.npy", lambda p: poison(p, 0))),
        ["train/stft.npy: clip 0 has NaN/inf audio features", "re-create the dataset"]),
    "train-stft.npy-inf-in-clip-5-found-while-training": lambda w, t, lock: Case(
        "train", _train(w, t, _data_with(w, t, "train", "stft.npy", lambda p: poison(p, 5, np.inf)), None,
                        "--niter", "2", "--epoch_size", "4"),
        ["train/stft.npy: clip 5 has NaN/inf audio features"], new_ok=(str(t / "log"),),
        after=_absent(t / "log" / "checkpoints" / "last.pt")),
    "train-mfcc.npy-nan-in-clip-2": lambda w, t, lock: Case(
        "train", _train(w, t, _data_with(w, t, "train", "mfcc.npy", lambda p: poison(p, 2), kind="mfcc")),
        ["train/mfcc.npy: clip 2 has NaN/inf audio features"]),
    "train-frames.npy-float-with-nan": lambda w, t, lock: Case(
        "train", _train(w, t, _data_with(w, t, "train", "frames.npy", _float_frames)),
        ["train/frames.npy has dtype float32, expected uint8", "re-create the dataset"]),
    "train-legacy-gifs-truncated": lambda w, t, lock: Case(
        "train", _train(w, t, _legacy_with(w, t, truncate, *(f"train/gif/{i}.gif" for i in (5, 10, 15, 20, 25)))),
        ["train/gif/", ".gif is truncated or not a GIF", "re-download or re-generate it"],
        new_ok=(str(t / "log"),)),
    "train-resume-last.pt-truncated": lambda w, t, lock: Case(
        "train", _corrupt_run(w, t, truncate), ["checkpoints/last.pt is truncated or damaged", "use another"]),
    "train-resume-last.pt-random-bytes": lambda w, t, lock: Case(
        "train", _corrupt_run(w, t, randomize), ["checkpoints/last.pt is not a torch checkpoint", "pass a"]),
    "train-resume-last.pt-not-weights-only": lambda w, t, lock: Case(
        "train", _corrupt_run(w, t, _evil_checkpoint), ["last.pt holds pickled objects", "never loaded"],
        after=_not_run(t / "run" / "checkpoints" / "pwned")),
    # -------------------------------------------------------------- generate_sound2sight.py
    "evaluate-model_path-missing": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, t / "nope.pt"), ["--model_path", str(t / "nope.pt"), "does not exist", "pass"]),
    "evaluate-model_path-below-a-file": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, w.blocker / "last.pt"), ["--model_path", "does not exist"]),
    "evaluate-model_path-folder-without-checkpoints": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, w.root / "videos"), ["--model_path", "no best.pt or last.pt", "train first"]),
    "evaluate-data_root-missing": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, t / "nope"), [str(t / "nope"), "does not exist", "--data_root"]),
    "evaluate-data_root-is-a-file": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, w.blocker), [str(w.blocker), "is a file", "--data_root"]),
    "evaluate-data_root-below-a-file": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, w.blocker / "data"), [str(w.blocker / "data"), "does not exist"]),
    "evaluate-log_dir-is-a-file": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, None, w.blocker), ["--log_dir", "is a file, not a folder"]),
    "evaluate-log_dir-below-a-file": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, None, w.blocker / "sub"), ["--log_dir", "cannot be written", "is a file"]),
    "evaluate-log_dir-unwritable": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, None, lock(t / "locked") / "eval"), ["--log_dir", "not writable"]),
    "evaluate-log_path-below-a-file": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, None, copy(w.eval, t / "eval"), "--log_path", str(w.blocker / "sub" / "x.txt")),
        ["--log_path", "does not exist", "create it or pass an existing folder"]),
    "evaluate-log_path-unwritable-folder": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, None, None, "--log_path", str(lock(t / "locked"))),
        ["--log_path", "not writable", "pass a writable"]),
    "evaluate-checkpoint-truncated": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, _copied_and(w.ckpt, t, truncate), None, copy(w.eval, t / "eval")),
        ["ckpt.pt is truncated or damaged", "use another checkpoint"]),
    "evaluate-checkpoint-random-bytes": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, _copied_and(w.ckpt, t, randomize), None, copy(w.eval, t / "eval")),
        ["ckpt.pt is not a torch checkpoint", "pass a checkpoint written by train_sound2sight.py"]),
    "evaluate-checkpoint-empty": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, _copied_and(w.ckpt, t, lambda p: p.write_bytes(b""))), ["ckpt.pt is empty"]),
    "evaluate-checkpoint-not-weights-only": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, _copied_and(w.ckpt, t, _evil_checkpoint)), ["holds pickled objects", "never loaded"],
        after=_not_run(t / "pwned")),
    "evaluate-frames.npy-random-bytes": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, _data_with(w, t, "test", "frames.npy", randomize), copy(w.eval, t / "eval")),
        ["test/frames.npy is not a .npy file", "re-create the dataset"]),
    "evaluate-stft.npy-truncated": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, _data_with(w, t, "test", "stft.npy", truncate)), ["test/stft.npy is truncated"]),
    "evaluate-stft.npy-nan-in-clip-3": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, _data_with(w, t, "test", "stft.npy", lambda p: poison(p, 3)),
                          copy(w.eval, t / "eval")),
        ["test/stft.npy: clip 3 has NaN/inf audio features", "re-create the dataset"]),
    "evaluate-legacy-gif-truncated": lambda w, t, lock: Case(
        "evaluate", _eval(w, t, None, _legacy_with(w, t, truncate, "test/gif/0.gif")),
        ["test/gif/0.gif is truncated or not a GIF", "re-download"]),
    # -------------------------------------------------------------------- generate_m3so.py
    "m3so-dest-is-a-file": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(w.blocker)], ["--dest", str(w.blocker), "is a file, not a folder", "choose"]),
    "m3so-dest-is-a-file-with-overwrite": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(w.blocker), "--overwrite"], ["--dest", "is a file, not a folder"]),
    "m3so-dest-below-a-file": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(w.blocker / "sub")], ["--dest", f"{w.blocker} is a file", "writable folder"]),
    "m3so-dest-unwritable": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(_locked_dest(t, lock))], ["--dest", "not writable", "writable folder"]),
    "m3so-dest-unwritable-replacing-a-dataset": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(_locked_dest(t, lock, with_dataset=True)), "--overwrite"],
        ["--dest", "not writable"]),
    "m3so-dest-exists": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(_dataset_at(t))], ["--dest", "already exists", "--overwrite"]),
    "m3so-dest-not-a-dataset-with-overwrite": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(_non_dataset(t)), "--overwrite"], ["--dest", "not a dataset", "choose another"]),
    "m3so-mnist_dir-missing": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(t / "ds"), "--mnist_dir", str(t / "nope")], ["--mnist_dir", "not a folder"]),
    "m3so-mnist_dir-is-a-file": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(t / "ds"), "--mnist_dir", str(w.blocker)], ["--mnist_dir", "not a folder"]),
    "m3so-mnist_dir-below-a-file": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(t / "ds"), "--mnist_dir", str(w.blocker / "mnist")], ["--mnist_dir"]),
    "m3so-mnist-images-truncated-gz": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(t / "ds"), "--mnist_dir", str(_mnist(t, truncate, "train-images-idx3-ubyte.gz"))],
        ["--mnist_dir", "train-images-idx3-ubyte.gz", "re-download"]),
    "m3so-mnist-labels-corrupt-gz": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(t / "ds"), "--mnist_dir",
                 str(_mnist(t, _corrupt_gz, "train-labels-idx1-ubyte.gz"))],
        ["--mnist_dir", "train-labels-idx1-ubyte.gz", "re-download"]),
    "m3so-mnist-images-random-bytes": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(t / "ds"), "--mnist_dir", str(_mnist(t, randomize, "t10k-images-idx3-ubyte"))],
        ["--mnist_dir", "t10k-images-idx3-ubyte", "magic number"]),
    "m3so-num_workers-0": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(t / "ds"), "--num_workers", "0"], ["--num_workers 0", ">= 1"]),
    "m3so-workers-0-old-spelling": lambda w, t, lock: Case(
        "m3so", [*M3SO, "--dest", str(t / "ds"), "--workers", "0"], ["--num_workers 0", ">= 1"]),
    # ------------------------------------------------------------------ python -m data.prepare_av
    "prepare_av-src-missing": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(t / "nope"), "--dest", str(t / "ds")], ["--src", "no such file or folder"]),
    "prepare_av-src-below-a-file": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(w.blocker / "sub"), "--dest", str(t / "ds")], ["--src", "no such file"]),
    "prepare_av-src-folder-without-videos": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(w.legacy), "--dest", str(t / "ds")], ["--src", "no video files"]),
    "prepare_av-src-binary-list": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(_random_file(t / "list.bin")), "--dest", str(t / "ds")],
        ["--src", "not a UTF-8 text list", "pass a folder"]),
    "prepare_av-video-truncated-mp4": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(_videos(t, ("cut.mp4", _cut()))), "--dest", str(t / "ds")],
        ["--src", "no usable video", "cut.mp4: cannot open as a video", "need video + audio"]),
    "prepare_av-video-truncated-mkv": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(_videos(t, ("cut.mkv", _cut(3.0, acodec="mp3")))), "--dest", str(t / "ds")],
        ["no usable video", "cut.mkv: truncated"]),
    "prepare_av-video-random-bytes": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(_random_file(t / "noise.mp4")), "--dest", str(t / "ds")],
        ["no usable video", "noise.mp4: cannot open as a video"]),
    "prepare_av-video-nan-audio": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(_videos(t, ("nan.mkv", nan_audio_video))), "--dest", str(t / "ds")],
        ["no usable video", "nan.mkv: audio has", "NaN/inf samples (the first at 0.70 s)"]),
    "prepare_av-list-names-a-missing-video": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(_list_file(t, "gone.mp4")), "--dest", str(t / "ds")],
        ["no usable video", "gone.mp4: cannot open"]),
    "prepare_av-dest-is-a-file": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(w.video), "--dest", str(w.blocker)], ["--dest", "is a file, not a folder"],
        not_started=("videos:",)),
    "prepare_av-dest-below-a-file": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(w.video), "--dest", str(w.blocker / "sub")], ["--dest", "is a file"],
        not_started=("videos:",)),
    "prepare_av-dest-unwritable": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(w.video), "--dest", str(_locked_dest(t, lock))], ["--dest", "not writable"],
        not_started=("videos:",)),
    "prepare_av-dest-exists": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(w.video), "--dest", str(_dataset_at(t))], ["already exists", "--overwrite"],
        not_started=("videos:",)),
    "prepare_av-dest-not-a-dataset-with-overwrite": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(w.video), "--dest", str(_non_dataset(t)), "--overwrite"], ["not a dataset"],
        not_started=("videos:",)),
    "prepare_av-num_workers-0": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(w.video), "--dest", str(t / "ds"), "--num_workers", "0"], ["--num_workers"]),
    "prepare_av-workers-0-old-spelling": lambda w, t, lock: Case(
        "prepare_av", [*AV, "--src", str(w.video), "--dest", str(t / "ds"), "--workers", "0"], ["--num_workers"]),
    # ------------------------------------------------------------ python -m data.convert_legacy
    "convert_legacy-src-missing": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(t / "nope"), "--dest", str(t / "ds")], ["--src", "does not exist", "pass"]),
    "convert_legacy-src-is-a-file": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(w.blocker), "--dest", str(t / "ds")], ["--src", "is a file, not a folder"]),
    "convert_legacy-src-below-a-file": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(w.blocker / "m3so"), "--dest", str(t / "ds")], ["--src", "does not exist"]),
    "convert_legacy-src-not-the-legacy-layout": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(w.m3so), "--dest", str(t / "ds")], ["--src", "not the legacy M3SO layout"]),
    "convert_legacy-gif-truncated": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(_legacy_with(w, t, truncate, "train/gif/5.gif")), "--dest", str(t / "ds")],
        ["train/gif/5.gif is truncated or not a GIF", "re-download"]),
    "convert_legacy-gif-random-bytes": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(_legacy_with(w, t, randomize, "test/gif/0.gif")), "--dest", str(t / "ds")],
        ["test/gif/0.gif is truncated or not a GIF"]),
    "convert_legacy-pickle-random-bytes": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(_legacy_with(w, t, randomize, "train/stft_wav_pickle/10.pickle")),
                           "--dest", str(t / "ds")], ["10.pickle is not a readable array pickle", "re-download"]),
    "convert_legacy-pickle-runs-code": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(_legacy_with(w, t, lambda p: write_pickle(p, _Evil(t / "pwned"), 2),
                                                     "train/stft_wav_pickle/5.pickle")), "--dest", str(t / "ds")],
        ["5.pickle refers to", "refusing to load it"], after=_not_run(t / "pwned")),
    "convert_legacy-pickle-nan-in-clip-1": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(_legacy_with(w, t, _nan_pickle, "test/stft_wav_pickle/5.pickle")),
                           "--dest", str(t / "ds")], ["test/stft_wav_pickle/5.pickle (clip 1) has NaN/inf"]),
    "convert_legacy-dest-is-a-file": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(w.legacy), "--dest", str(w.blocker)], ["--dest", "is a file, not a folder"],
        not_started=("scanning",)),
    "convert_legacy-dest-below-a-file": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(w.legacy), "--dest", str(w.blocker / "sub")], ["--dest", "is a file"],
        not_started=("scanning",)),
    "convert_legacy-dest-unwritable": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(w.legacy), "--dest", str(_locked_dest(t, lock))], ["--dest", "not writable"],
        not_started=("scanning",)),
    "convert_legacy-dest-exists": lambda w, t, lock: Case(
        "convert_legacy", ["--src", str(w.legacy), "--dest", str(_dataset_at(t))], ["already exists", "--overwrite"],
        not_started=("scanning",)),
}
# One or two per tool through the real entry point, in a fresh interpreter.
SUBPROCESS_CASES = ["train-log_dir-below-a-file", "train-stft.npy-nan-in-clip-0", "evaluate-checkpoint-random-bytes",
                    "m3so-dest-below-a-file", "prepare_av-video-truncated-mp4", "convert_legacy-pickle-nan-in-clip-1"]


def _check(case: Case, code: int, out: str, err: str, world: World, tmp_path: Path, before: dict[str, str]) -> None:
    assert_one_error_line(code, out, err, case.needles)
    for marker in case.not_started:
        assert marker not in err, f"the work started before the check: {err[-2000:]}"
    after = snapshot(*world.roots, tmp_path)
    assert {k: after.get(k) for k in before} == before, "a file that existed before was changed or removed"
    new = [k for k in after if k not in before and not any(k.startswith(d) for d in case.new_ok)]
    assert new == [], new
    assert leftovers(*world.roots, tmp_path) == []
    if case.after:
        case.after()


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_gives_one_line_and_changes_nothing(case_id, world, tmp_path, lock_folder, capsys):
    case = CASES[case_id](world, tmp_path, lock_folder)
    before = snapshot(*world.roots, tmp_path)
    code, out, err = in_process(case.tool, case.argv, capsys)
    _check(case, code, out, err, world, tmp_path, before)


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_the_real_entry_points_print_no_traceback(case_id, world, tmp_path, lock_folder):
    case = CASES[case_id](world, tmp_path, lock_folder)
    before = snapshot(*world.roots, tmp_path)
    code, out, err = as_subprocess(case.tool, case.argv)
    _check(case, code, out, err, world, tmp_path, before)


def test_a_mix_of_good_and_broken_videos_keeps_the_good_and_lists_the_rest(world, tmp_path):
    src = _videos(tmp_path, ("cut.mp4", _cut()), ("nan.mkv", nan_audio_video))
    shutil.copy(world.video, src / "good.mp4")
    dest = prepare_av.prepare(src, tmp_path / "ds", progress=False, image_width=16, seq_len=5, previews=False,
                              test_fraction=0.0)
    skipped = {s["source"]: s["reason"] for s in json.loads((dest / "skipped.json").read_text())}
    assert sorted(skipped) == ["cut.mp4", "nan.mkv"] and "NaN/inf" in skipped["nan.mkv"]
    assert np.isfinite(np.load(dest / "train" / "stft.npy")).all()


# ------------------------------------------------------------------------ a full disk
def _fill_after(real: Callable, calls: int, write_part: Callable) -> Callable:
    """``real`` until call number ``calls``; that call writes part of its data (``write_part(args)``) and
    raises ENOSPC, like a disk that fills up in the middle of a file."""
    count = {"n": 0}

    def full(*args, **kwargs):
        count["n"] += 1
        if count["n"] < calls:
            return real(*args, **kwargs)
        write_part(*args, **kwargs)
        raise NO_SPACE
    return full


def _save_half(real_save: Callable, file_first: bool = True) -> Callable:
    """The part of a ``numpy.save``/``numpy.savez`` (file first) or ``torch.save`` (object first) call
    that lands before the disk is full: half its bytes."""
    def part(*args, **kwargs):
        buf = io.BytesIO()
        if file_first:
            file = args[0]
            real_save(buf, *args[1:], **kwargs)
        else:
            file = args[1]
            real_save(args[0], buf)
        file.write(buf.getvalue()[:len(buf.getvalue()) // 2])
    return part


def _assert_full_disk_error(code: int, out: str, err: str, dest: Path, writing: str, kept: str) -> None:
    assert_one_error_line(code, out, err, [f"could not write {dest} (No space left on device", writing, kept,
                                           "free some space"])


@pytest.mark.parametrize("workers", ["1", "2"])
def test_full_disk_while_generating_m3so_keeps_the_previous_dataset(tmp_path, monkeypatch, capsys, workers):
    """The chunks' positioned writes fail part-way. The workers must see the patched os.pwrite, so
    they are forked here (the project never forks: this test process has no FFmpeg threads)."""
    import multiprocessing

    from M3SO_Gen_Code import generate_m3so

    monkeypatch.setattr(generate_m3so, "pool_context", lambda: multiprocessing.get_context("fork"))
    dest = _dataset_at(tmp_path)
    before = snapshot(tmp_path)
    real = os.pwrite
    monkeypatch.setattr(os, "pwrite", _fill_after(real, 3, lambda fd, data, off: real(fd, data[:len(data) // 2], off)))
    argv = ["--dest", str(dest), "--overwrite", "--num_train", "600", "--num_test", "8", "--num_frames", "4",
            "--no_block", "--quiet", "--num_workers", workers]
    code, out, err = in_process("m3so", argv, capsys)
    _assert_full_disk_error(code, out, err, dest, "writing train/", "the previous dataset there is intact")
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_full_disk_found_when_reserving_space_before_the_work(tmp_path, monkeypatch, capsys):
    """Space is reserved (posix_fallocate) for every file before any clip is made: the test split's
    reservation fails after the train split's succeeded."""
    dest = tmp_path / "new"
    monkeypatch.setattr(os, "posix_fallocate", _fill_after(os.posix_fallocate, 8, lambda *a: None))
    code, out, err = in_process("m3so", ["--dest", str(dest), *M3SO], capsys)
    _assert_full_disk_error(code, out, err, dest, "writing test/frames.npy", "nothing was left behind")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_preparing_videos_keeps_the_previous_dataset(world, tmp_path, monkeypatch, capsys):
    dest = prepare_av.prepare(world.video, tmp_path / "ds", progress=False, image_width=16, seq_len=5,
                              previews=False, test_fraction=0.0)
    before = snapshot(tmp_path)
    monkeypatch.setattr(np, "save", _fill_after(np.save, 2, _save_half(np.save)))  # the 2nd file: train/audio.npy
    code, out, err = in_process("prepare_av", [*AV, "--src", str(world.video), "--dest", str(dest), "--overwrite",
                                               "--channels", "1", "--test_fraction", "0"], capsys)
    _assert_full_disk_error(code, out, err, dest, "writing train/audio.npy", "the previous dataset there is intact")
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_full_disk_while_converting_keeps_the_previous_dataset(world, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "ds"
    convert_legacy.convert(world.legacy, dest)
    before = snapshot(tmp_path)
    # reservations: train/frames, train/stft, then test/frames fails (the train split is already written)
    monkeypatch.setattr(os, "posix_fallocate", _fill_after(os.posix_fallocate, 3, lambda *a: None))
    code, out, err = in_process("convert_legacy", ["--src", str(world.legacy), "--dest", str(dest), "--overwrite"],
                                capsys)
    _assert_full_disk_error(code, out, err, dest, "writing test/frames.npy", "the previous dataset there is intact")
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(world, tmp_path, monkeypatch, capsys):
    run = copy(world.run, tmp_path / "run")
    before = snapshot(run / "checkpoints")
    monkeypatch.setattr(torch, "save", _fill_after(torch.save, 1, _save_half(torch.save, file_first=False)))
    code, out, err = in_process("train", _train(world, tmp_path, None, run, "--resume", "--niter", "2"), capsys)
    assert_one_error_line(code, out, err, [f"could not write {run / 'checkpoints' / 'last.pt'} (No space left on "
                                           "device); the previous file is intact", "free some space"])
    assert snapshot(run / "checkpoints") == before and leftovers(tmp_path) == []


def test_full_disk_while_evaluating_keeps_the_earlier_results(world, tmp_path, monkeypatch, capsys):
    """The first batch's results fail to write: the earlier evaluation's outputs stay as they were
    (finished batches would be kept in .partial/ for the next run)."""
    out_dir = copy(world.eval, tmp_path / "eval")
    before = snapshot(out_dir)
    monkeypatch.setattr(np, "savez", _fill_after(np.savez, 1, _save_half(np.savez)))
    code, out, err = in_process("evaluate", _eval(world, tmp_path, None, None, out_dir, "--seed", "5"), capsys)
    assert_one_error_line(code, out, err, [f"could not write {out_dir / '.partial'}", "(No space left on device)",
                                           "free some space"])
    after = snapshot(out_dir)
    assert {k: after.get(k) for k in before} == before and leftovers(tmp_path) == []


# --------------------------------------------------------------------- SIGTERM / SIGINT
class _Stderr:
    """Collect a process's stderr in a thread (tqdm writes progress with \\r, no newline)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        while chunk := stream.read1(4096):
            self.text += chunk.decode(errors="replace")

    def wait_for(self, predicate: Callable[[str], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while not predicate(self.text) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert predicate(self.text), f"never started working: {self.text[-2000:]}"

    def join(self) -> str:
        self._thread.join(timeout=30)
        return self.text


def _children(pid: int) -> set[int]:
    """PIDs of the live child processes of ``pid`` (from /proc)."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def _gone(pids: set[int], timeout: float = 5.0) -> bool:
    deadline = time.time() + timeout
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    return not any(Path(f"/proc/{p}").exists() for p in pids)


def _stop_while_working(tool: str, argv: list[str], started: Callable[[str], bool], sig: int, group: bool,
                        workers: int = 0) -> tuple[int, str]:
    """Start the tool, wait until ``started(stderr)``, send ``sig`` (to its whole process group, as a
    terminal's Ctrl-C does, with ``group``), and return (exit status, stderr); its worker processes
    (``workers`` expected) must be gone, none left running or as a zombie."""
    proc = subprocess.Popen([sys.executable, *COMMANDS[tool], *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env={**ENV, "PYTHONFAULTHANDLER": "1"}, start_new_session=True)
    err = _Stderr(proc)
    try:
        err.wait_for(started, proc)
        kids = _children(proc.pid)
        assert len(kids) >= workers, kids
        (os.killpg if group else os.kill)(proc.pid, sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGABRT)  # faulthandler: where it hangs, on stderr
            proc.wait(timeout=30)
            raise AssertionError(f"did not stop: {err.join()[-5000:]}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert _gone(kids), f"worker processes left behind: {kids}"
    return proc.returncode, err.join()


def _assert_stopped(code: int, err: str, sig: int, dest: Path, left: str) -> None:
    assert code == 128 + sig, err[-3000:]
    assert "Traceback" not in err and "error:" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last == (f"stopped by {signal.Signals(sig).name} before {dest} was complete; {left}; "
                    "run the same command again to build it"), last


def _progress(unit: str, at_least: int = 1) -> Callable[[str], bool]:
    """tqdm has shown at least ``at_least`` units done."""
    import re

    return lambda text: any(int(n) >= at_least for n in re.findall(rf"\| *(\d+)/\d+ \[[^]]*{unit}", text))


def test_generate_m3so_stops_on_sigterm_and_keeps_the_previous_dataset(tmp_path):
    """A real SIGTERM to the generator (2 worker processes) in the middle of its chunks: exit 143,
    one line, the workers ended, no temporary folder, the dataset already at --dest untouched."""
    dest = _dataset_at(tmp_path)
    before = snapshot(tmp_path)
    argv = ["--dest", str(dest), "--overwrite", "--num_train", "2048", "--num_test", "16", "--nums_per_image", "3",
            "--features", "mfcc", "--num_workers", "2"]
    code, err = _stop_while_working("m3so", argv, _progress("clip", 256), signal.SIGTERM, group=False, workers=2)
    _assert_stopped(code, err, signal.SIGTERM, dest, "the dataset already there is intact")
    assert "SIGTERM received" in err
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_prepare_av_stops_on_ctrl_c_to_the_process_group(world, tmp_path):
    """SIGINT to the whole process group (a terminal's Ctrl-C reaches the decoding workers too):
    exit 130, one line, no traceback from any worker, nothing at --dest."""
    src = tmp_path / "videos"
    src.mkdir()
    first = write_video(src / "v00.mp4", seconds=8.0, fps=10)
    for i in range(1, 60):  # hard links: 60 distinct videos (several seconds of decoding), one encoding
        os.link(first, src / f"v{i:02d}.mp4")
    dest = tmp_path / "ds"
    code, err = _stop_while_working("prepare_av", ["--src", str(src), "--dest", str(dest), "--num_workers", "2",
                                                   "--image_width", "32"], _progress("file", 2), signal.SIGINT,
                                    group=True, workers=2)
    _assert_stopped(code, err, signal.SIGINT, dest, "nothing was written there")
    assert not dest.exists() and leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos"]


def test_convert_legacy_stops_on_sigterm(world, tmp_path):
    """A real SIGTERM while converting (one process, between clips): exit 143, the dataset already at
    --dest untouched, no temporary folder."""
    src = copy(world.legacy, tmp_path / "legacy")
    for split in ("train", "test"):  # 1,200 clips per split, hard links to the first clip's files
        gif, pk = src / split / "gif" / "0.gif", src / split / "stft_wav_pickle" / "0.pickle"
        for i in range(100, 1300):
            os.link(gif, src / split / "gif" / f"{i}.gif")
            os.link(pk, src / split / "stft_wav_pickle" / f"{i}.pickle")
    dest = _dataset_at(tmp_path)
    before = snapshot(dest)
    code, err = _stop_while_working("convert_legacy", ["--src", str(src), "--dest", str(dest), "--overwrite"],
                                    _progress("clip", 50), signal.SIGTERM, group=False)
    _assert_stopped(code, err, signal.SIGTERM, dest, "the dataset already there is intact")
    assert snapshot(dest) == before and leftovers(tmp_path) == []


# -------------------------------------------------------------- one worker-count flag name
@pytest.mark.parametrize("parser", [generate_m3so.build_parser, prepare_av.build_parser], ids=["m3so", "prepare_av"])
def test_num_workers_is_the_flag_and_workers_its_alias(parser):
    p = parser()
    base = ["--dest", "x"] + (["--src", "y"] if parser is prepare_av.build_parser else [])
    assert p.parse_args(base + ["--num_workers", "3"]).workers == 3
    assert p.parse_args(base + ["--workers", "3"]).workers == 3
    action = next(a for a in p._actions if a.dest == "workers")
    assert action.option_strings == ["--num_workers", "--workers"]  # --num_workers first: what --help shows
