"""Shared test setup: the project root on sys.path, small thread counts, fast defaults."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "2")


import subprocess  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def live_pid():
    """The PID of a live process that is not this one (for run-lock tests); killed afterwards."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
