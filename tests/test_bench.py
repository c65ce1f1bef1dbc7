"""Smoke tests of the benchmarks at toy sizes: each runs end to end, prints one JSON line
with its documented fields, and what it measures is consistent (no timing targets here:
those live in the benchmarks' own runs, see the README)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_metrics(capsys):
    out = bench("metrics").main(["--pairs", "64", "--skimage_pairs", "8", "--repeats", "1"])
    assert last_json(capsys) == out
    assert out["pairs_per_s"] > 0 and out["skimage_pairs_per_s"] > 0 and out["speedup"] > 0
    assert out["max_abs_diff_ssim"] < 1e-5 and out["max_abs_diff_psnr"] < 1e-5


def test_bench_train_step_counts_fewer_flops_than_the_original(capsys):
    out = bench("train_step").main(["--batch_size", "2", "--n_past", "2", "--n_future", "3", "--iters", "1",
                                    "--warmup", "0", "--bf16_iters", "0"])
    assert last_json(capsys) == out
    assert out["s_per_iter"] > 0 and out["s_per_iter_original"] > 0 and out["s_per_iter_bf16"] is None
    # the vectorised step does strictly less work than the released structure (frames encoded once, etc.)
    assert 0 < out["gflop_per_iter"] < out["gflop_per_iter_original"]


def test_bench_generate(capsys):
    out = bench("generate").main(["--num_clips", "8", "--baseline_clips", "2"])
    assert last_json(capsys) == out
    assert all(v > 0 for k, v in out.items() if k.endswith("per_s"))
