"""Helpers shared by more than one script: devices, seeding, atomic writes, media output.

Everything that writes a file here writes it atomically (temporary file in the same
folder, then ``os.replace``), so a run killed at any moment leaves either the previous
file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import shutil
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np


class InputError(ValueError):
    """Bad user input (a path, a file, a flag) with a message that names it and the fix.

    Scripts catch it at the top level and print the message as one line, without a
    traceback: the user needs the fix, not our stack.
    """


def input_error_line(err: BaseException) -> str:
    """The one line to show for an :class:`InputError`. One raised in a DataLoader worker
    process reaches the main process re-raised by PyTorch with the worker's whole traceback
    in its message; the original message is its last line."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1].strip()
        for prefix in ("utils.InputError: ", "InputError: "):
            if last.startswith(prefix):
                return last[len(prefix):]
        return last
    return text


def run_cli(main, argv: Sequence[str] | None = None) -> None:
    """Run ``main(argv)``; turn an :class:`InputError` (also one from a DataLoader worker) into a
    one-line error and exit 2."""
    try:
        main(argv)
    except InputError as err:
        print(f"error: {input_error_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None


def cpu_name() -> str:
    """The CPU's model name (Linux), for benchmark reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def native_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX); without them bf16 is emulated, and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------ atomic writes
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_path_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp makes 0600 files; give the result the permissions a plain open() would have.
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_path_beside(path)
    except OSError as err:
        raise _write_error(path, err) from None
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
                raise _write_error(path, err) from None
            raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_error(path: Path, err: OSError) -> InputError:
    """A failed write as one line: what, why, and that the previous version is untouched."""
    kept = "; the previous file is intact" if path.exists() else ""
    return InputError(f"could not write {path} ({err.strerror or err}){kept}; free some space or pass a "
                      "writable location")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it to ``dest`` only on success.

    A half-written folder therefore never looks complete. An existing ``dest`` is
    refused unless ``overwrite``; then it is replaced only after the new one is done.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise InputError(f"{dest} already exists; pass --overwrite to replace it or choose another --dest")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; a dataset is for everyone to read
    try:
        yield tmp
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".old"))
            os.replace(dest, old / "x")
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- media out
def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (any shape) to uint8, clipping what lies outside."""
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def framed_row(panels: list, colours: list, pad: int = 2) -> np.ndarray:
    """Panels ``[T, C, H, W]`` (torch, in [0, 1]) side by side, each frame framed by its colour ``[T, 3]``.

    Returns uint8 ``[T, H + 2 pad, n (W + 2 pad), 3]``, ready for :func:`save_gif`.
    """
    import torch

    video = torch.stack(panels, 1).float().clamp(0, 1)  # [T, P, C, H, W]
    if video.shape[2] == 1:
        video = video.expand(-1, -1, 3, -1, -1)
    t, n, _, h, w = video.shape
    canvas = torch.stack(colours, 1)[:, :, :, None, None].expand(t, n, 3, h + 2 * pad, w + 2 * pad).clone()
    canvas[..., pad:pad + h, pad:pad + w] = video
    grid = canvas.permute(0, 3, 1, 4, 2).reshape(t, h + 2 * pad, n * (w + 2 * pad), 3)
    return (grid.numpy() * 255.0 + 0.5).astype(np.uint8)


def gif_colours(total: int, n_past: int, kind: str):
    """Frame colours ``[T, 3]`` for :func:`framed_row`: green = a real frame the model was given,
    red = a model output, grey = a ground-truth future frame (real, never shown to the model).
    ``kind``: ``"gt"``, ``"posterior"`` (frame 0 is the input, every later one decoded) or ``"sample"``."""
    import torch

    green, red, grey = torch.tensor([0.1, 0.8, 0.1]), torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.5, 0.5, 0.5])
    t = torch.arange(total)[:, None]
    if kind == "gt":
        return torch.where(t < n_past, green, grey)
    if kind == "posterior":
        return torch.where(t < 1, green, red)
    return torch.where(t < n_past, green, red)


def save_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0) -> None:
    """Write frames ``[T, H, W]`` or ``[T, H, W, C]`` (uint8, or float in [0, 1]) as a looping GIF."""
    import imageio.v3 as iio

    frames = to_uint8(np.asarray(frames))
    if frames.ndim == 4 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    buf = io.BytesIO()
    iio.imwrite(buf, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    atomic_write_bytes(path, buf.getvalue())


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio in [-1, 1] as 16-bit PCM WAV (stdlib ``wave``: no extra dependency)."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0) * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    atomic_write_bytes(path, buf.getvalue())


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV (mono or the mean of its channels) as float32 in [-1, 1]."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise InputError(f"{path}: only 16-bit PCM WAV is supported (got {8 * w.getsampwidth()}-bit)")
            n_ch, sr = w.getnchannels(), w.getframerate()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as err:
        raise InputError(f"{path}: not a readable WAV file ({err}); re-export it as 16-bit PCM") from None
    audio = data.reshape(-1, n_ch).mean(axis=1).astype(np.float32) / 32767.0
    return audio, sr


# ------------------------------------------------------------------------- run lock
class RunLock:
    """One process per output folder: ``<folder>/.lock`` holds the owner's PID.

    ``with RunLock(folder, "training"):`` creates the lock atomically (``O_EXCL``). A lock
    whose process is alive refuses with :class:`InputError` naming its PID; a lock left by
    a dead process (killed, machine rebooted) is taken over, saying so. The lock is removed
    on exit. PIDs are per machine: a folder on a shared file system used from two machines
    is not protected.
    """

    def __init__(self, folder: str | os.PathLike, what: str):
        self.path = Path(folder) / ".lock"
        self.what = what
        self.held = False

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    pid = -1  # unreadable or half-written: treat as stale
                if pid == os.getpid():
                    self.held = True
                    return
                if pid > 0 and self._alive(pid):
                    raise InputError(f"{self.path.parent} is in use by another {self.what} (process {pid}); wait for "
                                     f"it, stop it, or choose another output folder") from None
                print(f"taking over {self.path}, left by process {pid} that no longer runs", file=sys.stderr)
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {self.what}\n")
            self.held = True
            return
        raise InputError(f"could not take the lock {self.path}; another process keeps taking it")

    def release(self) -> None:
        if self.held:
            try:
                if self.path.read_text().split()[0] == str(os.getpid()):
                    self.path.unlink()
            except (OSError, IndexError):
                pass
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


# ---------------------------------------------------------------------- preemption
class StopSignals:
    """Turn SIGTERM / SIGINT into a request to stop at the next safe point.

    ``with StopSignals() as stop:`` then poll ``stop.requested`` (the signal number, or 0).
    A second SIGINT while a stop is pending raises ``KeyboardInterrupt`` at once (the user
    insists). The previous handlers come back on exit. Only the main thread can install
    handlers; elsewhere this is a no-op that never requests a stop.
    """

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self) -> None:
        self.requested = 0
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        import signal

        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum
        print(f"\n{signal.Signals(signum).name} received: stopping at the next safe point", file=sys.stderr)

    def __enter__(self) -> "StopSignals":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


# ------------------------------------------------------------------- config flags
def add_config_flags(parser: Any, cls: type, title: str) -> None:
    """One command-line flag per field of the dataclass ``cls``, from its metadata (help, choices).

    ``--<field>`` takes a value of the default's type; a bool defaulting to False becomes a
    switch; a bool defaulting to True is switched off by its ``flag`` name (``--no_audio``);
    fields with ``flag=False`` get none. :func:`config_kwargs` maps the parsed flags back."""
    import dataclasses

    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        md = f.metadata
        if md.get("flag", True) is False:
            continue
        if isinstance(f.default, bool):
            name = md.get("flag", f.name) if f.default else f.name
            group.add_argument(f"--{name}", action="store_true", help=md.get("help"))
        else:
            group.add_argument(f"--{f.name}", type=type(f.default), default=f.default, choices=md.get("choices"),
                               help=md.get("help"))


def config_kwargs(cls: type, args: Any) -> dict[str, Any]:
    """The fields of ``cls`` that :func:`add_config_flags` made flags for, read from parsed ``args``."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(cls):
        md = f.metadata
        if md.get("flag", True) is False:
            continue
        if isinstance(f.default, bool) and f.default:
            out[f.name] = not getattr(args, md.get("flag", f.name))
        else:
            out[f.name] = getattr(args, f.name)
    return out

