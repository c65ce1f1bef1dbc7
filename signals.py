"""Stopping at a safe point: SIGTERM/SIGINT turned into a request the work polls
(:class:`StopSignals`, :class:`StopRequested`), and the project's worker pools: how they
start (:func:`pool_context`), how their workers take signals (:func:`worker_signals`) and how
they end without orphans (:func:`stop_pool`)."""
from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
import time
from typing import Any

#: Modules the forkserver imports once, so that each worker forked from it starts at once
#: instead of importing torch itself (about 2 s each; ``python bench/pool_start.py``).
POOL_PRELOAD = ("data.prepare_av", "M3SO_Gen_Code.generate_m3so")


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


def pool_context(method: str | None = None) -> multiprocessing.context.BaseContext:
    """The multiprocessing context of every worker pool in the project: ``forkserver`` where
    the platform has it, else ``spawn``; never ``fork``.

    Why not fork: a forked child inherits the parent's memory but not its threads. A parent
    that has already used FFmpeg (PyAV's scaler keeps a thread pool), torch's OpenMP pool or
    BLAS leaves locks held by threads that do not exist in the child, which then waits on them
    forever (PyAV 18 / FFmpeg 8: ``sws_scale_frame`` in ``avpriv_slicethread_execute``).
    The forkserver is a fresh interpreter started once per program, with no such threads; it
    imports :data:`POOL_PRELOAD` once and forks each worker from itself, so workers start
    as fast as forked ones after the first (``python bench/pool_start.py`` measures it).
    ``method`` overrides the choice (the benchmark compares them)."""
    if method is None:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(list(POOL_PRELOAD))  # read when the server starts; later calls are no-ops
    return ctx


def worker_signals() -> None:
    """Worker-process initializer: SIGTERM ends the worker; SIGINT is left to the parent.

    SIGTERM takes its default action, at once, whatever the worker is doing: a worker stuck
    in C code (a decoder deadlock) cannot run a Python handler, and a job scheduler, ``timeout``
    or a user must always be able to end it. SIGINT (a Ctrl-C reaches the whole process group)
    is ignored here: the parent, which receives it too, stops at a safe point, sets the pool's
    event so the running tasks give up, and ends the pool with :func:`stop_pool`; a worker
    killed half-way through sending its result would leave the pool waiting for the rest.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_pool(pool: Any, event: Any = None, grace: float = 30.0) -> None:
    """End a ``concurrent.futures.ProcessPoolExecutor`` now (after a stop or an error): set
    ``event`` (a ``multiprocessing.Event`` its tasks poll, to give up early), cancel the queued
    tasks, give the running ones ``grace`` seconds to finish, then terminate (SIGTERM, which
    :func:`worker_signals` leaves deadly) any worker still alive, so none (and no zombie)
    outlives the call.

    Workers are terminated only after the grace period: one ended while sending its result
    leaves half a message in the result pipe. Tasks must therefore be short or poll ``event``;
    a worker still running after ``grace`` seconds is taken to be stuck, not sending.
    """
    if event is not None:
        event.set()
    # The executor keeps its processes in a private dict; reading it is the only way to join
    # or end them with a deadline (shutdown(wait=True) would wait forever on a stuck worker).
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(10.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
    pool.shutdown(wait=True)
