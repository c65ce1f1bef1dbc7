"""Benchmark: what the worker pools' start method costs (``signals.pool_context``).

Prints one JSON line::

    {"fork": {"first_s", "second_s"}, "forkserver": {...}, "spawn": {...}, "one_worker_s", ...}

Each start method runs in a fresh Python process (so no forkserver is running yet), which
generates the same tiny M3SO twice with 2 workers (``generate(..., workers=2)``):
``first_s`` is the first call's wall time (it starts the pool, and for forkserver the
server, which imports torch once), ``second_s`` the second call's (a new pool; the
forkserver is already running). ``one_worker_s``: the same data made in-process, no pool.
The work itself is tiny, so the differences are start-up costs. ``fork`` is measured for
comparison only: the project never uses it (it hangs after FFmpeg's threads exist).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli import ArgumentParser
from errors import run_cli

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
import signals
import M3SO_Gen_Code.generate_m3so as gen
method = sys.argv[1]
if method != "none":
    gen.pool_context = lambda: signals.pool_context(method)
kw = dict(num_train=int(sys.argv[2]), num_test=8, num_frames=10, block_start_frame=3, progress=False,
          workers=1 if method == "none" else 2)
out = []
with tempfile.TemporaryDirectory() as tmp:
    for i in range(2):
        t0 = time.perf_counter()
        gen.generate(Path(tmp) / str(i), seed=0, **kw)
        out.append(time.perf_counter() - t0)
print(json.dumps(out))
"""


def main(argv: Sequence[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=64, help="training clips per generate() call")
    p.add_argument("--methods", nargs="+", default=["fork", "forkserver", "spawn"],
                   choices=["fork", "forkserver", "spawn"], help="start methods to time")
    args = p.parse_args(argv)
    result: dict = {"clips": args.clips}
    for method in (*args.methods, "none"):
        out = subprocess.run([sys.executable, "-c", CHILD, method, str(args.clips)], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).resolve().parents[1])
        first, second = json.loads(out.stdout.strip().splitlines()[-1])
        if method == "none":
            result["one_worker_s"] = round(second, 3)
        else:
            result[method] = {"first_s": round(first, 3), "second_s": round(second, 3)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run_cli(main)
