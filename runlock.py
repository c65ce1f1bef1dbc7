"""One process per output folder: :class:`RunLock`, an OS lock on ``<folder>/.lock``."""
from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path
from typing import Any

import filelock

from errors import InputError
from files import folder_problem


class RunLock:
    """One process per output folder: an OS file lock (``flock``, through ``filelock``) on ``<folder>/.lock``.

    ``with RunLock(folder, "training"):`` takes the lock without waiting. The kernel releases
    it when its holder ends, however it ends (killed, out of memory, machine rebooted), so a
    lock file left by a dead process never blocks: it is taken over, saying so. The holder
    writes its PID into the file once it holds the lock; a folder held by another process,
    or by another :class:`RunLock` in this process, is refused with :class:`InputError`
    naming that PID. The file is removed on exit. Network file systems may not honour
    ``flock`` across machines: a folder shared by two machines is not protected.
    """

    def __init__(self, folder: str | os.PathLike, what: str) -> None:
        self.path = Path(folder) / ".lock"
        self.what = what
        self._lock: filelock.BaseFileLock | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock is not None

    def _owner(self) -> int | None:
        """The PID written in the lock file, or None (no file, empty, not a PID)."""
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _write_owner(self, fd: int) -> None:
        """Called by filelock with the locked file: note a previous holder that ended without
        removing the file, then write our PID and what holds the folder."""
        previous = os.pread(fd, 200, 0).split()
        if previous and previous[0].isdigit() and int(previous[0]) != os.getpid():
            print(f"taking over {self.path}, left by process {int(previous[0])} that no longer runs", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)

    def _unusable(self, err: OSError) -> InputError:
        folder = self.path.parent
        if err.errno == errno.ENOSYS:
            problem = "its file system does not support file locks"
        else:
            problem = folder_problem(folder) or err.strerror or str(err)
        return InputError(f"{folder} cannot hold the {self.what} ({problem}); pass a writable output folder")

    def acquire(self) -> None:
        """Take the lock (InputError when another process or RunLock holds it, or the folder cannot be written)."""
        if self._lock is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self._unusable(err) from None
        lock = filelock.FileLock(self.path, timeout=0, thread_local=False, on_acquired=self._write_owner)
        for attempt in range(20):
            try:
                lock.acquire()
            except filelock.Timeout:
                pid = self._owner()
                # No PID yet: the holder is between taking the lock and writing it, or is removing the file.
                if pid is None and attempt < 19:
                    time.sleep(0.05)
                    continue
                owner = f"process {pid}" if pid is not None else "a process that has not written its PID"
                raise InputError(f"{self.path.parent} is in use by another {self.what} ({owner}); wait for it, stop "
                                 f"it, or choose another output folder") from None
            except OSError as err:
                raise self._unusable(err) from None
            self._lock = lock
            return

    def release(self) -> None:
        """Remove the lock file and release the lock (nothing when not held)."""
        if self._lock is None:
            return
        # Removed while still held: a process waiting on this file finds it unlinked once it gets
        # the lock (filelock checks) and takes a new file instead.
        if self._owner() == os.getpid():
            try:
                self.path.unlink()
            except OSError:
                pass
        self._lock.release()
        self._lock = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
