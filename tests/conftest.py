"""Shared test setup: the project root on sys.path, small thread counts, shared fixtures."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "2")


import subprocess  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """One small generated M3SO-NB (16 train / 8 test clips of 10 frames), shared by every test
    that only needs some real dataset to train or evaluate on (read it, never write into it)."""
    from M3SO_Gen_Code.generate_m3so import generate

    root = tmp_path_factory.mktemp("data") / "m3so_nb"
    generate(root, num_train=16, num_test=8, num_frames=10, no_block=True, seed=3, progress=False)
    return root


@pytest.fixture
def lock_holder():
    """Start another process that holds a :class:`runlock.RunLock` on a folder: ``hold(folder, what)``
    returns the process once it holds the lock (for run-lock tests); every such process is killed afterwards."""
    procs: list[subprocess.Popen] = []

    def hold(folder: Path, what: str) -> subprocess.Popen:
        code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from runlock import RunLock\n"
                f"with RunLock({str(folder)!r}, {what!r}):\n    print('held', flush=True); time.sleep(120)")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()
