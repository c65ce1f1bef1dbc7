"""Smoke tests of the benchmarks at toy sizes: each runs end to end, prints one JSON line
with its documented fields, and what it measures is consistent (no timing targets here:
those live in the benchmarks' own runs, see the README)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


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
    # the split of the fp32 iteration: its parts are positive and fit inside the whole
    parts = [out[k] for k in ("ms_forward", "ms_backward", "ms_optimizer")]
    assert all(p > 0 for p in parts) and out["ms_optimizer_for_loop"] > 0
    assert out["gflop_per_s"] > 0


def test_bench_train_step_times_the_plain_convolutions_on_request(capsys):
    tiny = ["--batch_size", "2", "--n_past", "2", "--n_future", "3", "--iters", "1", "--warmup", "0", "--bf16_iters", "0"]
    ours = bench("train_step").main(tiny)
    both = bench("train_step").main(tiny + ["--plain_convs"])
    assert ours["shortcut_convs"] == both["shortcut_convs"] == ["MatmulConv2d", "MatmulConvTranspose2d",
                                                                "PhasedConvTranspose2d", "SpaceToDepthConv2d"]
    assert ours["s_per_iter_plain"] is None and ours["shortcut_speedup"] is None
    assert both["s_per_iter_plain"] > 0
    assert both["shortcut_speedup"] == pytest.approx(both["s_per_iter_plain"] / both["s_per_iter"], rel=0.05)


def test_bench_generate(capsys):
    out = bench("generate").main(["--num_clips", "8", "--baseline_clips", "2"])
    assert last_json(capsys) == out
    assert all(v > 0 for k, v in out.items() if k.endswith("per_s"))


def test_bench_pool_start(capsys):
    out = bench("pool_start").main(["--clips", "8", "--methods", "fork", "forkserver"])
    assert last_json(capsys) == out and "spawn" not in out
    for method in ("fork", "forkserver"):
        assert 0 < out[method]["second_s"] and 0 < out[method]["first_s"]
    assert out["one_worker_s"] > 0


def test_bench_train_step_demo_preset():
    import train_sound2sight

    step = bench("train_step")
    args = step.parse_args(["--demo"])
    trained = train_sound2sight.parse_args(["--demo"])  # the shape the demo really trains
    assert {k: getattr(args, k) for k in step.SHAPE_FLAGS} == {k: getattr(trained, k) for k in step.SHAPE_FLAGS}
    assert (args.nf, args.n_past, args.n_future, args.batch_size, args.rnn_size) == (16, 5, 10, 16, 128)
    assert bench("train_step").parse_args(["--demo", "--nf", "8"]).nf == 8  # explicit flags win


def test_bench_learning_first_win_and_curve(tmp_path):
    learning = bench("learning")
    rows = [{"epoch": 0, "val_ssim": 0.5, "val_copy_last_ssim": 0.6, "val_psnr": 15.0, "val_copy_last_psnr": 14.0},
            {"epoch": 1, "val_ssim": 0.7, "val_copy_last_ssim": 0.6, "val_psnr": 13.0, "val_copy_last_psnr": 14.0},
            {"epoch": 2, "val_ssim": 0.7, "val_copy_last_ssim": 0.6, "val_psnr": 14.5, "val_copy_last_psnr": 14.0}]
    assert learning.first_win(rows)["epoch"] == 2  # both metrics must win in the same epoch
    assert learning.first_win(rows[:2]) is None
    csv_path = tmp_path / "metrics.csv"
    keys = ["epoch", "seconds", "train_mse_loss", "val_min_mse", "val_ssim", "val_copy_last_ssim", "val_psnr",
            "val_copy_last_psnr"]
    csv_path.write_text(",".join(keys) + "\n0,10.0,0.1,0.2,0.5,0.6,15,14\n1,12.5,0.1,0.2,0.7,0.6,15,14\n"
                        "2,9.0,0.1,,,,,\n3,11.0,0.1,0.2,0.7,0.6,15,14\n")  # epoch 2 not validated (--val_every)
    curve = learning.read_curve(csv_path, iters_per_epoch=50)
    assert [(r["epoch"], r["iterations"], r["seconds"]) for r in curve] == [(0, 50, 10.0), (1, 100, 22.5),
                                                                           (3, 200, 42.5)]


def test_bench_learning_runs_the_demo_end_to_end(tmp_path, capsys, tiny_data):
    tiny = ["--data_root", str(tiny_data), "--g_dim", "16", "--rnn_size", "32", "--z_dim", "4", "--dim_ff", "32",
            "--disc_rnn_size", "16", "--nhead", "2", "--nf", "8", "--n_past", "3", "--n_future", "3", "--n_eval", "6",
            "--batch_size", "4", "--niter", "2", "--epoch_size", "2", "--eval_nsample", "2", "--val_nsample", "2"]
    out = bench("learning").main(["--log_dir", str(tmp_path / "run"), "--", *tiny])
    assert last_json(capsys) == out
    # the demo validates every 3rd epoch and after the last: of 2 epochs, only the last
    assert [r["epoch"] for r in out["curve"]] == [1] and out["iterations_per_epoch"] == 2
    assert out["final"]["clips"] == 8 and out["final"]["nsample"] == 2  # all 8 test clips
    assert out["first_win"] is None or out["first_win"]["epoch"] in (0, 1)


def test_bench_prior_monitor(capsys):
    out = bench("prior_monitor").main(["--iters", "1", "--epoch_size", "50", "--val_clips", "4", "--nf", "8"])
    assert last_json(capsys) == out
    assert out["train_step_s"] > 0 and out["monitor_s"] > 0
    share = out["monitor_s"] / (out["monitor_s"] + 50 * out["train_step_s"])  # from the rounded times
    assert 0 < out["monitor_share_of_epoch"] < 1 and abs(out["monitor_share_of_epoch"] - share) < 2e-3
