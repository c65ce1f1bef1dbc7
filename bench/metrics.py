"""SSIM+PSNR throughput: metrics.score_pairs (CPU: the numba kernel) vs a scikit-image loop.

The original scored one (ground truth, sample) frame pair per Python call. Both ways
score the same random 48x48 grey pairs in one run, interleaved; ours is also checked to
agree with scikit-image on the pairs both scored. The first call (numba compiling the
kernel, or loading it from its cache) is timed apart as ``jit_s``. Prints ONE JSON line.

    python bench/metrics.py [--pairs 4096] [--skimage_pairs 400] [--threads 0]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import metrics  # noqa: E402
from cli import ArgumentParser, plain_text  # noqa: E402
from errors import run_cli  # noqa: E402


def _best_times(fns, repeats: int) -> list[float]:
    """Fastest of ``repeats`` timed calls of each function (seconds), the functions
    interleaved so that load from other processes hits both sides alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def _cache_state() -> str:
    """How the kernel got here: "hit" (loaded from numba's cache), "miss" (compiled, saved), "off" (no cache)."""
    stats = metrics._kernel().stats
    if stats.cache_path is None:
        return "off"
    return "hit" if sum(stats.cache_hits.values()) else "miss"


def main(argv=None) -> dict:
    parser = ArgumentParser(description=plain_text(__doc__))
    parser.add_argument("--pairs", type=int, default=4096, help="pairs scored by metrics.score_pairs")
    parser.add_argument("--skimage_pairs", type=int, default=400, help="pairs scored by the scikit-image loop")
    parser.add_argument("--size", type=int, default=48, help="frame side (grey)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads, which also cap the kernel's threads (0 = torch's default)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved timing rounds; the best of each side counts")
    args = parser.parse_args(argv)
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    gt = rng.random((args.pairs, 1, args.size, args.size), dtype=np.float32)  # [P, 1, H, W]
    pred = np.clip(gt + 0.2 * rng.standard_normal(gt.shape, dtype=np.float32), 0, 1)
    gt_t, pred_t = torch.from_numpy(gt), torch.from_numpy(pred)
    n_sk = min(args.skimage_pairs, args.pairs)

    def skimage_loop():
        out = np.empty((n_sk, 2))
        for i in range(n_sk):  # as the original: one call per pair and metric
            out[i, 0] = structural_similarity(gt[i, 0], pred[i, 0], data_range=metrics.SSIM_DATA_RANGE)
            out[i, 1] = peak_signal_noise_ratio(gt[i, 0], pred[i, 0], data_range=metrics.PSNR_DATA_RANGE)
        return out

    with torch.inference_mode():
        t0 = time.perf_counter()
        metrics.score_pairs(gt_t[:64], pred_t[:64])  # warm-up: compiles, or loads the cached kernel
        jit_s = time.perf_counter() - t0
        t_torch, t_sk = _best_times([lambda: metrics.score_pairs(gt_t, pred_t), skimage_loop], args.repeats)
        s, p = metrics.score_pairs(gt_t[:n_sk], pred_t[:n_sk])
    ref = skimage_loop()
    result = {
        "bench": "metrics", "size": args.size, "pairs": args.pairs,
        "pairs_per_s": round(args.pairs / t_torch, 1),
        "skimage_pairs_per_s": round(n_sk / t_sk, 1),
        "speedup": round((args.pairs / t_torch) / (n_sk / t_sk), 2),
        "torch_threads": torch.get_num_threads(),
        "scoring_threads": metrics._cpu_threads(args.pairs, args.size, args.size),
        "jit_s": round(jit_s, 2),
        "jit_cache": _cache_state(),
        "max_abs_diff_ssim": float(np.abs(s.numpy() - ref[:, 0]).max()),
        "max_abs_diff_psnr": float(np.abs(p.numpy() - ref[:, 1]).max()),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run_cli(main)
