"""Files and folders written so that a run killed at any moment loses nothing.

Every file is written atomically (:func:`atomic_file`: a temporary file in the same folder,
then ``os.replace``), so a killed run leaves either the previous file or the new one, never
half of one; a dataset folder is built in a temporary sibling and renamed when complete
(:func:`atomic_dir`); the temporary folders of a build killed outright (SIGKILL, power loss)
are removed by the next build of the same folder (:func:`remove_leftovers`). Output folders are checked before any work
(:func:`check_output_folder`, :func:`folder_problem`), and large files get their disk
blocks up front (:func:`preallocate`), so a full disk is one error before the work.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from errors import InputError

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
    """Write ``data`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` to ``path`` as indented JSON with a final newline, atomically."""
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
    """``torch.save(obj)`` to ``path`` atomically; a full disk is a :class:`WriteError`, not torch's zip error."""
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
    """``np.save(array)`` (no pickles) to ``path`` atomically."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(_PythonWrites(f), array, allow_pickle=False)


# The random part of a tempfile.mkdtemp name: 8 of these characters.
_RANDOM = r"[a-z0-9_]{8}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _process_start_time() -> float:
    """When this process started (seconds since the epoch; Linux ``/proc``), else now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def remove_leftovers(dest: str | os.PathLike) -> list[str]:
    """Remove the temporary folders that builds of ``dest`` killed outright (SIGKILL, power loss, so
    :func:`atomic_dir` could not clean up) left beside it, saying so in one line on stderr; return their names.

    A leftover is ``.<name>.<pid>.<random>.partial`` whose process no longer runs, or one named
    without a PID (``.<name>.<random>.partial``) last changed before this process started;
    ``.<name>.<pid>.<random>.old`` (the replaced dataset, on its way out) only when ``dest``
    exists, since then the swap it belonged to finished. Folders of other names, of a live
    build, or that cannot be removed are left alone. PIDs are per machine: on a folder shared
    by several machines, a build running on another one may look dead.
    """
    dest = Path(dest)
    name = re.escape(dest.name)
    with_pid = re.compile(rf"\.{name}\.(\d+)\.{_RANDOM}\.(partial|old)")
    without_pid = re.compile(rf"\.{name}\.{_RANDOM}\.partial")
    started: float | None = None
    removed: list[str] = []
    try:
        entries = sorted(dest.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir():
            continue
        if m := with_pid.fullmatch(entry.name):
            stale = not _process_alive(int(m.group(1))) and (m.group(2) == "partial" or dest.is_dir())
        elif without_pid.fullmatch(entry.name):
            started = started if started is not None else _process_start_time()
            try:
                stale = entry.stat().st_mtime < started
            except OSError:
                stale = False
        else:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                removed.append(entry.name)
    if removed:
        shown = ", ".join(removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3 else "")
        print(f"removed {len(removed)} temporary folder{'s' if len(removed) > 1 else ''} left beside {dest} by a "
              f"build that was killed: {shown}", file=sys.stderr)
    return removed


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it to ``dest`` only on success.

    A half-written folder therefore never looks complete. An existing ``dest`` is
    refused unless ``overwrite``; then it is replaced only after the new one is done. A
    ``dest`` that is a file is refused either way. Whatever stops the build (an error, a
    signal turned into :class:`signals.StopRequested`, Ctrl-C) removes the temporary folder and
    leaves ``dest`` as it was; a write refused by the file system (:data:`WRITE_ERRNOS`,
    e.g. a full disk) becomes one :class:`InputError` line naming ``dest``. The temporary
    folders of an earlier build of ``dest`` that was killed outright are removed first
    (:func:`remove_leftovers`).
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise InputError(f"--dest {dest} is a file, not a folder; choose another --dest")
    if dest.exists() and not overwrite:
        raise InputError(f"{dest} already exists; pass --overwrite to replace it or choose another --dest")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(dest)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.{os.getpid()}.", suffix=".partial"))
    except OSError as err:
        problem = folder_problem(dest.parent) or _reason(err)
        raise InputError(f"--dest {dest}: cannot create it ({problem}); pass a --dest in a writable folder") from None
    kept = dest.is_dir()
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; a dataset is for everyone to read
        try:
            yield tmp
            if dest.exists():
                old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.{os.getpid()}.", suffix=".old"))
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
