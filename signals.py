"""Stopping at a safe point: SIGTERM/SIGINT turned into a request the work polls
(:class:`StopSignals`, :class:`StopRequested`), and worker pools that leave the signals to
their parent and end without orphans (:func:`ignore_stop_signals`, :func:`stop_pool`)."""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class StopRequested(Exception):
    """A SIGTERM/SIGINT stopped the work at a safe point (:meth:`StopSignals.check`).

    ``signum`` is the signal; the message is the one line to show (what happened, what is
    left on disk, how to run it again). :func:`errors.run_cli` prints it and exits with 128 + signum.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


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
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum
        print(f"\n{signal.Signals(signum).name} received: stopping at the next safe point", file=sys.stderr)

    def check(self) -> None:
        """At a safe point: raise :class:`StopRequested` when a signal asked to stop."""
        if self.requested:
            raise StopRequested(self.requested)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
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
