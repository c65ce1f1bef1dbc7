"""Worker pools that work whatever their caller did first, and that a signal can always end.

The sequences here hung forever with workers forked from a parent that had already used
FFmpeg's scaler threads (PyAV 18 / FFmpeg 8): see :func:`signals.pool_context`.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time

import numpy as np
import pytest
import torch

from signals import pool_context, stop_pool, worker_signals


def test_pools_never_fork():
    assert pool_context().get_start_method() in ("forkserver", "spawn")


@pytest.mark.timeout(180)
def test_prepare_with_workers_after_decoding_in_this_process(tmp_path):
    """Decode and convert frames here first (FFmpeg's scaler threads now exist in this process),
    then prepare with two worker processes: the same dataset as one process makes."""
    from data.prepare_av import AVConfig, decode_video, prepare
    from test_prepare_av import OUT_W, write_video

    src = tmp_path / "vids"
    src.mkdir()
    for i in range(3):
        write_video(src / f"clip{i}.mp4", seconds=1.2)
    decoded = decode_video(str(src / "clip0.mp4"), AVConfig(image_width=OUT_W, seq_len=5))
    assert len(decoded.frames) >= 5  # frames converted by sws_scale in this process
    kw = dict(image_width=OUT_W, seq_len=5, test_fraction=0.3, progress=False)
    one = prepare(src, tmp_path / "one", workers=1, **kw)
    two = prepare(src, tmp_path / "two", workers=2, **kw)
    for split in ("train", "test"):
        for f in ("frames.npy", "audio.npy", "stft.npy"):
            np.testing.assert_array_equal(np.load(one / split / f), np.load(two / split / f))


@pytest.mark.timeout(180)
def test_generator_pool_after_torch_started_its_threads(tmp_path):
    """torch's intra-op pool running in this process, then the generator with two workers."""
    from M3SO_Gen_Code.generate_m3so import generate

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(512, 512)
        assert torch.isfinite(x @ x).all()  # starts the OpenMP pool
        kw = dict(num_train=12, num_test=4, num_frames=6, block_start_frame=3, seed=5, progress=False)
        a = generate(tmp_path / "a", workers=1, **kw)
        b = generate(tmp_path / "b", workers=2, **kw)
    finally:
        torch.set_num_threads(threads)
    for split in ("train", "test"):
        for f in sorted(p.name for p in (a / split).glob("*.npy")):
            np.testing.assert_array_equal(np.load(a / split / f), np.load(b / split / f))


#: A forkserver child's exit code as its parent sees it after SIGTERM: -15, or 255 when the forkserver
#: could not report the signal (it reaps the child itself and passes the status on).
ENDED_BY_SIGTERM = (-signal.SIGTERM, 255)


def _pool_pid(pool: cf.ProcessPoolExecutor) -> int:
    return pool.submit(os.getpid).result(timeout=60)


@pytest.mark.timeout(120)
def test_a_worker_ends_on_sigterm_and_leaves_sigint_to_its_parent():
    pool = cf.ProcessPoolExecutor(1, mp_context=pool_context(), initializer=worker_signals)
    try:
        pid = _pool_pid(pool)
        proc = next(iter(pool._processes.values()))
        os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        assert proc.is_alive() and _pool_pid(pool) == pid  # SIGINT is the parent's to act on
        os.kill(pid, signal.SIGTERM)
        proc.join(30)
        assert proc.exitcode in ENDED_BY_SIGTERM
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.timeout(120)
def test_stop_pool_ends_a_stuck_worker_after_its_grace():
    """A task that never returns (as a deadlocked decoder) does not keep stop_pool waiting."""
    pool = cf.ProcessPoolExecutor(1, mp_context=pool_context(), initializer=worker_signals)
    pid = _pool_pid(pool)
    proc = next(iter(pool._processes.values()))
    pool.submit(time.sleep, 600)
    time.sleep(0.5)
    t0 = time.monotonic()
    stop_pool(pool, grace=1.0)
    assert time.monotonic() - t0 < 30
    assert not proc.is_alive() and proc.exitcode in ENDED_BY_SIGTERM and proc.pid == pid
    with pytest.raises(RuntimeError):  # shut down: takes no new work
        pool.submit(os.getpid)
