"""One process per output folder: :class:`RunLock` (``<folder>/.lock``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from errors import InputError
from files import folder_problem

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
        problem = folder_problem(folder) or err.strerror or str(err)
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
