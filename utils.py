"""Helpers shared by more than one script: one-line input errors, seeding, atomic writes,
run locks and stop signals, media output, flags made from a config dataclass.

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


class StopRequested(Exception):
    """A SIGTERM/SIGINT stopped the work at a safe point (:meth:`StopSignals.check`).

    ``signum`` is the signal; the message is the one line to show (what happened, what is
    left on disk, how to run it again). :func:`run_cli` prints it and exits with 128 + signum.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        import signal

        super().__init__(message or f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def run_cli(main, argv: Sequence[str] | None = None) -> None:
    """Run ``main(argv)``; turn an :class:`InputError` (also one from a DataLoader worker) into a
    one-line error and exit 2, a :class:`StopRequested` into its one line and exit 128 + signal,
    and a ``KeyboardInterrupt`` (a second Ctrl-C, or one before any handler) into one line and exit 130."""
    try:
        main(argv)
    except InputError as err:
        print(f"error: {input_error_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except StopRequested as stop:
        print(str(stop), file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except KeyboardInterrupt:
        print("interrupted (SIGINT): stopped at once; a file being written keeps its previous version; run the "
              "same command again", file=sys.stderr)
        raise SystemExit(130) from None


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
#: errno values of a write that failed for lack of space or of permission: the user's to fix
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM, errno.EFBIG})


class WriteError(InputError):
    """A write refused by the file system (full, read-only, not permitted): ``path`` and ``reason``."""

    def __init__(self, message: str, path: Path, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


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


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def folder_problem(folder: str | os.PathLike) -> str | None:
    """Why files cannot be created in ``folder`` (which may not exist yet), or None when they can.

    Finds the nearest existing ancestor (``folder`` itself when it exists), which must be a
    folder, and creates and removes a temporary folder there: a real write, so a read-only
    mount, an immutable folder or missing permission is found (root ignores permission bits,
    so for root only the first two count). Nothing is left behind.
    """
    probe = Path(folder)
    try:
        while not (probe.exists() or probe.is_symlink()) and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            return f"{probe} is a file, not a folder"
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".write_test."))
    except OSError as err:
        return f"{probe} is not writable ({_reason(err)})"
    return None


def check_output_folder(folder: str | os.PathLike, flag: str) -> None:
    """Refuse, before any work, an output folder ``flag`` that cannot be created or written:
    :class:`InputError` naming the flag, the folder and why. Nothing is created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{flag} {folder} is a file, not a folder; pass a folder (it is created when missing)")
    problem = folder_problem(folder)
    if problem:
        raise InputError(f"{flag} {folder} cannot be written: {problem}; pass a writable folder")


def preallocate(path: str | os.PathLike) -> None:
    """Reserve the disk blocks of ``path`` at its current size (``posix_fallocate``).

    A file sized by seeking (``np.lib.format.open_memmap``) is sparse: writing it through a
    memory map on a full disk kills the process with SIGBUS, and positioned writes fail one
    by one late in the work. Reserving the blocks up front turns a full disk into one
    ``OSError(ENOSPC)`` before the work. File systems without fallocate are left as they are.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        if size:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
            except OSError as err:
                if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise OSError(err.errno, err.strerror, str(path)) from None


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    A write refused by the file system (:data:`WRITE_ERRNOS`: full, read-only, not permitted)
    becomes a :class:`WriteError` naming ``path``; the temporary file is removed in any case.
    """
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
            if err.errno in WRITE_ERRNOS:
                raise _write_error(path, err) from None
            raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_error(path: Path, err: OSError) -> WriteError:
    """A failed write as one line: what, why, and that the previous version is untouched."""
    kept = "; the previous file is intact" if path.is_file() else ""
    if isinstance(err, (NotADirectoryError, FileExistsError)):
        why = folder_problem(path.parent) or _reason(err)
    else:
        why = _reason(err)
    return WriteError(f"could not write {path} ({why}){kept}; free some space or pass a writable location",
                      path, why)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class _PythonWrites:
    """A file seen only through ``write``/``flush``, remembering the write error it passed on.

    numpy and torch then write through Python's file object, whose errors carry their errno.
    Given a real file, numpy's ``tofile`` reports a full disk as a bare ``OSError("N requested
    and M written")``; torch's zip writer swallows the failing write's ``OSError(ENOSPC)``
    and raises ``RuntimeError("unexpected pos ...")``, so :attr:`error` is re-raised instead.
    """

    def __init__(self, f: Any) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self._f.flush()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            out = _PythonWrites(f)
            try:
                torch.save(obj, out)
            except RuntimeError:
                if out.error is not None:  # a full disk, reported by torch as a bad zip position
                    raise out.error from None
                raise


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(_PythonWrites(f), array, allow_pickle=False)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it to ``dest`` only on success.

    A half-written folder therefore never looks complete. An existing ``dest`` is
    refused unless ``overwrite``; then it is replaced only after the new one is done. A
    ``dest`` that is a file is refused either way. Whatever stops the build (an error, a
    signal turned into :class:`StopRequested`, Ctrl-C) removes the temporary folder and
    leaves ``dest`` as it was; a write refused by the file system (:data:`WRITE_ERRNOS`,
    e.g. a full disk) becomes one :class:`InputError` line naming ``dest``.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise InputError(f"--dest {dest} is a file, not a folder; choose another --dest")
    if dest.exists() and not overwrite:
        raise InputError(f"{dest} already exists; pass --overwrite to replace it or choose another --dest")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial"))
    except OSError as err:
        problem = folder_problem(dest.parent) or _reason(err)
        raise InputError(f"--dest {dest}: cannot create it ({problem}); pass a --dest in a writable folder") from None
    kept = dest.is_dir()
    try:
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
        except WriteError as err:
            raise _dir_write_error(dest, tmp, err.path, err.reason, kept) from None
        except OSError as err:
            if err.errno in WRITE_ERRNOS:
                raise _dir_write_error(dest, tmp, err.filename, _reason(err), kept) from None
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _dir_write_error(dest: Path, tmp: Path, path: Any, reason: str, kept: bool) -> InputError:
    """A refused write while building ``dest`` in ``tmp``: one line naming ``dest`` (and the file, when known)."""
    where = ""
    if path:
        try:
            where = f" writing {Path(path).relative_to(tmp).as_posix()}"
        except ValueError:
            where = f" writing {path}"
    left = "the previous dataset there is intact" if kept else "nothing was left behind"
    return InputError(f"could not write {dest} ({reason}{where}); {left}; free some space or pass another --dest")


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


def label_columns(grid: np.ndarray, labels: list[str], height: int = 14) -> np.ndarray:
    """A header strip above every frame of ``grid`` (uint8 ``[T, H, W, 3]``, panels of equal width side
    by side) naming each panel: returns uint8 ``[T, height + H, W, 3]``, white text on black, each
    label centred over its panel (``W / len(labels)`` pixels wide; Pillow's default font, shrunk
    until the longest label fits)."""
    from PIL import Image, ImageDraw, ImageFont

    t, _, width, _ = grid.shape
    panel = width / max(len(labels), 1)
    head = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(head)
    for size in range(height - 3, 5, -1):
        font = ImageFont.load_default(size=size)
        if max(draw.textlength(text, font=font) for text in labels) <= panel - 2:
            break
    for i, text in enumerate(labels):
        x = (i + 0.5) * panel - draw.textlength(text, font=font) / 2
        draw.text((x, height / 2), text, fill=(255, 255, 255), font=font, anchor="lm")
    strip = np.broadcast_to(np.asarray(head, dtype=np.uint8), (t, height, width, 3))
    return np.concatenate([strip, grid], axis=1)


def gif_colours(total: int, n_past: int, kind: str):
    """Frame colours ``[T, 3]`` for :func:`framed_row`: green = a real frame the model was given,
    red = a model output, grey = a ground-truth future frame (real, never shown to the model).
    ``kind``: ``"gt"``, or ``"posterior"`` / ``"sample"`` (rows that show the ``n_past`` given frames
    and then the model's frames, as the release drew its posterior and sample rows)."""
    import torch

    if kind not in ("gt", "posterior", "sample"):
        raise ValueError(f"kind must be gt, posterior or sample, got {kind!r}")
    green, red, grey = torch.tensor([0.1, 0.8, 0.1]), torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.5, 0.5, 0.5])
    t = torch.arange(total)[:, None]
    return torch.where(t < n_past, green, grey if kind == "gt" else red)


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

    def _unusable(self, err: OSError) -> InputError:
        folder = self.path.parent
        problem = folder_problem(folder) or _reason(err)
        return InputError(f"{folder} cannot hold the {self.what} ({problem}); pass a writable output folder")

    def acquire(self) -> None:
        """Take the lock (InputError when a live process holds it, or the folder cannot be written)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self._unusable(err) from None
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
            except OSError as err:
                raise self._unusable(err) from None
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

    ``with StopSignals() as stop:`` then poll ``stop.requested`` (the signal number, or 0),
    or call ``stop.check()`` at each safe point (raises :class:`StopRequested`).
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

    def check(self) -> None:
        """At a safe point: raise :class:`StopRequested` when a signal asked to stop."""
        if self.requested:
            raise StopRequested(self.requested)

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


def ignore_stop_signals() -> None:
    """Worker-process initializer: leave SIGTERM/SIGINT to the parent.

    A Ctrl-C (or a job scheduler's SIGTERM) reaches the whole process group; workers that
    ignore it do not die half-way or print tracebacks, and the parent, which stops at a
    safe point, ends the pool with :func:`stop_pool`. A forked worker also drops the
    parent's :class:`StopSignals` handler this way.
    """
    import signal

    for name in StopSignals.SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def stop_pool(pool: Any, event: Any = None) -> None:
    """End a ``concurrent.futures.ProcessPoolExecutor`` now (after a stop or an error): set
    ``event`` (a ``multiprocessing.Event`` its tasks poll, to give up early), cancel the queued
    tasks, wait for the running ones and join every worker, so none (and no zombie) outlives
    the call.

    Workers are not killed: one killed while sending its result leaves half a message in the
    result pipe, and the executor then waits for the rest forever (a large result, such as a
    decoded video, is sent in several writes). Tasks must therefore be short or poll ``event``.
    """
    if event is not None:
        event.set()
    pool.shutdown(wait=True, cancel_futures=True)


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

