"""Exact, batched SSIM / PSNR, the metric registry and the evaluation protocols.

Metrics are chosen by name from :data:`PAIR_METRICS` (per frame pair: SSIM, PSNR,
MSE) and :data:`SET_METRICS` (over the samples of a clip: diversity); the protocols
(:data:`PROTOCOLS`) reduce per-sample scores to per-clip curves for any of them.

The numbers reproduce what the original release reported with scikit-image 0.15
(``compare_ssim`` / ``compare_psnr`` on float frames, no ``data_range``; see docs/DESIGN.md), i.e.
today's ``skimage.metrics.structural_similarity(gt, pred, data_range=2.0)`` and
``skimage.metrics.peak_signal_noise_ratio(gt, pred, data_range=1.0)``, one channel at a
time and averaged over channels -- but for a whole batch in one call instead of one
Python call per frame.

Why valid pooling is exact: scikit-image filters the whole image with a 7x7 uniform
window (scipy ``uniform_filter``, mode 'reflect') and then drops a 3-px border before the
mean. Every SSIM value that survives the crop comes from a window lying entirely inside
the image, so the padding never enters the result; sums over the "valid" (fully inside)
windows yield exactly the kept values.

Two implementations of the same numbers:

* CPU (tensors on the CPU and numpy arrays): :func:`_score_range`, compiled by numba. One
  pass over each pair computes running window sums, the SSIM map and the squared error
  in float64 while every intermediate row stays in L1. A batch with enough work is split
  over ``torch.get_num_threads()`` plain Python threads (the kernel releases the GIL), not
  numba's ``parallel=True``, whose threading layers clash with torch's OpenMP. The kernel
  is compiled once per input dtype and cached (``cache=True``: in ``__pycache__`` next to
  this file, or in numba's per-user cache directory for a read-only checkout;
  ``NUMBA_CACHE_DIR`` overrides both); with no writable cache directory it is compiled
  once per process. Why a kernel and not the torch path or ``torch.compile``, with the
  measurements: docs/DESIGN.md, "The SSIM/PSNR kernel".
* Any other device (CUDA): :func:`_scores_torch`, batched torch ops on chunks of
  :data:`_CHUNK_PIXELS` pixels, SSIM maps in float32 on mean-centred images
  (:func:`ssim_map_valid`), means in float64. It agrees with the kernel to ~1e-7.

Input dtypes follow scikit-image: both images are compared in float32 if both are
float32 or narrower floats, else in float64; the PSNR difference and its square are
taken in that dtype (as ``mean_squared_error`` does), the mean in float64.

Identical frames: scikit-image returns PSNR = +inf (MSE 0). One infinite value would make
every mean infinite, so this project caps PSNR at :data:`PSNR_CAP_DB` (100 dB, the PSNR
of an MSE of 1e-10 at data range 1) and records the cap as ``"psnr_cap_db"`` in
``metrics.json``. Below the cap the values are scikit-image's.
"""
from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

#: PSNR reported for (near-)identical pairs instead of +inf.
PSNR_CAP_DB = 100.0
#: SSIM data range of the original evaluation: skimage 0.15 gave float images the range (-1, 1).
SSIM_DATA_RANGE = 2.0
#: PSNR data range of the original: float ground truth with minimum >= 0 -> dtype max 1.
PSNR_DATA_RANGE = 1.0
#: SSIM constants of scikit-image (and of Wang et al. 2004).
SSIM_K1, SSIM_K2 = 0.01, 0.03

# Torch path: pixels per chunk. On a GPU big chunks just amortise kernel launches.
_CHUNK_PIXELS = 1 << 22
# CPU kernel: a thread is started only for this many pixels of work (~220 48x48 pairs),
# so that starting it costs little against its share (docs/DESIGN.md, "The SSIM/PSNR kernel").
_MIN_PIXELS_PER_THREAD = 1 << 19


# ------------------------------------------------------------------------------ inputs
def _common_float(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """scikit-image's working dtype for a pair: float32 if both are float32 or narrower floats, else float64."""
    narrow = (torch.float32, torch.float16, torch.bfloat16)
    return torch.float32 if a in narrow and b in narrow else torch.float64


def _as_images(gt: Any, pred: Any) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Both inputs as float tensors ``[M, H, W]`` (M = prod(lead) * C) of one dtype on gt's device + the lead shape."""
    # read-only arrays (np.broadcast_to, read-only memmaps) are copied: torch refuses to wrap them
    gt_t = torch.as_tensor(np.require(gt, requirements="W") if isinstance(gt, np.ndarray) else gt)
    pred_t = torch.as_tensor(np.require(pred, requirements="W") if isinstance(pred, np.ndarray) else pred,
                             device=gt_t.device)
    if gt_t.shape != pred_t.shape:
        raise ValueError(f"gt {tuple(gt_t.shape)} and pred {tuple(pred_t.shape)} must have the same shape")
    if gt_t.ndim < 3:
        raise ValueError(f"expected images [..., C, H, W], got shape {tuple(gt_t.shape)}")
    dtype = _common_float(gt_t.dtype, pred_t.dtype)
    lead = tuple(gt_t.shape[:-2])  # (..., C)
    h, w = gt_t.shape[-2:]
    return gt_t.reshape(-1, h, w).to(dtype), pred_t.reshape(-1, h, w).to(dtype), lead


def _check_window(x: torch.Tensor, win_size: int) -> None:
    """Reject a window scikit-image would reject: even, 1 (its N - 1 would be 0), or larger than a frame side."""
    h, w = x.shape[-2:]
    if win_size < 3 or win_size % 2 != 1 or min(h, w) < win_size:
        raise ValueError(f"images {h}x{w} need an odd win_size >= 3 and <= their smaller side (got {win_size})")


# ---------------------------------------------------------------------- CPU: numba kernel
def _score_range(x: np.ndarray, y: np.ndarray, lo: int, hi: int, win: int, c1: float, c2: float,
                 peak_sq: float, cap_db: float, out_s: np.ndarray, out_p: np.ndarray) -> None:
    """SSIM and PSNR of pairs ``lo:hi`` of ``x, y`` ``[M, H, W]`` into ``out_s, out_p`` float64 ``[M]``.

    Compiled by numba (see :func:`_kernel`); plain Python runs it too, slowly. x and y
    share one dtype (float32 or float64). SSIM (skipped when ``win == 0``) is scikit-image's
    with a ``win`` x ``win`` uniform window, sample covariance, constants ``c1 = (K1 L)^2``
    and ``c2 = (K2 L)^2``, averaged over the fully-inside windows; PSNR is
    ``10 log10(peak_sq / MSE)``, capped at ``cap_db``.

    Per pair, rows enter the window one at a time: column sums over the window's rows
    slide down (one row in, one out; contiguous, so LLVM vectorises them), window sums
    slide along each row, and the SSIM of the finished output row is computed at once.
    The working arrays are single rows (a few hundred bytes each), so nothing leaves L1.
    All in float64: the sums' rounding error stays ~1e-13, far below SSIM's 1e-5
    tolerance even for bright, nearly flat frames (no centring needed, unlike float32).
    """
    h, w = x.shape[1], x.shape[2]
    ho, wo = h - win + 1, w - win + 1  # SSIM map size
    n = float(win * win)
    cov = n / (n - 1.0)  # sample covariance: N / (N - 1)
    cn1, cn2 = c1 * n * n, c2 * n * n  # the constants on the scale of (window sums)^2
    # column sums over the window's rows [W]: x, y, x^2 + y^2, xy; squared error per column
    cx, cy, cq, cxy, err = np.empty(w), np.empty(w), np.empty(w), np.empty(w), np.empty(w)
    # window sums along the current output row [W'], and the SSIM map summed per column
    bx, by, bq, bxy, acc = np.empty(wo), np.empty(wo), np.empty(wo), np.empty(wo), np.empty(wo)
    for m in range(lo, hi):
        for j in range(w):
            cx[j] = 0.0
            cy[j] = 0.0
            cq[j] = 0.0
            cxy[j] = 0.0
            err[j] = 0.0
        for j in range(wo):
            acc[j] = 0.0
        for r in range(h):
            if win > 0 and r >= win:  # row r enters the window, row r - win leaves
                ro = r - win
                for j in range(w):
                    a, b = np.float64(x[m, r, j]), np.float64(y[m, r, j])
                    a0, b0 = np.float64(x[m, ro, j]), np.float64(y[m, ro, j])
                    cx[j] += a - a0
                    cy[j] += b - b0
                    cq[j] += (a * a + b * b) - (a0 * a0 + b0 * b0)
                    cxy[j] += a * b - a0 * b0
                    d = x[m, r, j] - y[m, r, j]  # difference and square in the input dtype, as scikit-image
                    err[j] += np.float64(d * d)
            else:
                for j in range(w):
                    a, b = np.float64(x[m, r, j]), np.float64(y[m, r, j])
                    cx[j] += a
                    cy[j] += b
                    cq[j] += a * a + b * b
                    cxy[j] += a * b
                    d = x[m, r, j] - y[m, r, j]
                    err[j] += np.float64(d * d)
            if win > 0 and r >= win - 1:  # output row r - win + 1 is complete
                # window sums slide along the row: four independent chains
                sx, sy, sq, sxy = 0.0, 0.0, 0.0, 0.0
                for k in range(win):
                    sx += cx[k]
                    sy += cy[k]
                    sq += cq[k]
                    sxy += cxy[k]
                bx[0], by[0], bq[0], bxy[0] = sx, sy, sq, sxy
                for j in range(1, wo):
                    sx += cx[j + win - 1] - cx[j - 1]
                    sy += cy[j + win - 1] - cy[j - 1]
                    sq += cq[j + win - 1] - cq[j - 1]
                    sxy += cxy[j + win - 1] - cxy[j - 1]
                    bx[j], by[j], bq[j], bxy[j] = sx, sy, sq, sxy
                # SSIM = (2 mx my + C1)(2 vxy + C2) / ((mx^2 + my^2 + C1)(vx + vy + C2)),
                # numerator and denominator both multiplied by N^4 to work on sums
                for j in range(wo):
                    sxsy = bx[j] * by[j]
                    ss = bx[j] * bx[j] + by[j] * by[j]
                    num = (2.0 * sxsy + cn1) * (2.0 * cov * (n * bxy[j] - sxsy) + cn2)
                    den = (ss + cn1) * (cov * (n * bq[j] - ss) + cn2)
                    acc[j] += num / den
        if win > 0:
            total = 0.0
            for j in range(wo):
                total += acc[j]
            out_s[m] = total / (ho * wo)
        sse = 0.0
        for j in range(w):
            sse += err[j]
        mse = sse / (h * w)
        if mse == 0.0:  # identical pair: +inf in scikit-image
            out_p[m] = cap_db
        else:
            p = 10.0 * math.log10(peak_sq / mse)
            out_p[m] = cap_db if p > cap_db else p  # NaN stays NaN


_KERNEL: Any = None  # numba dispatcher of _score_range, built on first use


def _kernel(cache: bool = True) -> Any:
    """The compiled :func:`_score_range` (numba is imported only when a CPU batch is scored).

    ``nogil`` lets Python threads run it side by side; ``error_model='numpy'`` drops the
    zero-division checks that would keep LLVM from vectorising the SSIM division. With no
    writable cache directory anywhere numba refuses ``cache=True``: compile per process.
    """
    global _KERNEL
    if _KERNEL is None or not cache:
        import numba

        try:
            _KERNEL = numba.njit(_score_range, nogil=True, error_model="numpy", cache=cache)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            _KERNEL = numba.njit(_score_range, nogil=True, error_model="numpy")
    return _KERNEL


def _cpu_threads(m: int, h: int, w: int) -> int:
    """Threads the CPU kernel uses for ``m`` pairs of ``h`` x ``w``: torch's setting, when there is enough work."""
    return max(1, min(torch.get_num_threads(), m * h * w // _MIN_PIXELS_PER_THREAD))


def _scores_cpu(x: torch.Tensor, y: torch.Tensor, ssim_range: float | None, psnr_range: float,
                cap_db: float, win_size: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """CPU path: ``[M, H, W]`` pairs (one float dtype) -> float64 ``[M]`` SSIM (None if
    ``ssim_range`` is None) and PSNR, by the numba kernel on :func:`_cpu_threads` threads."""
    xa = x.detach().contiguous().numpy()  # [M, H, W], float32 or float64 (see _as_images)
    ya = y.detach().contiguous().numpy()
    m, h, w = xa.shape
    s, p = np.empty(m), np.empty(m)  # [M] each
    win = 0 if ssim_range is None else int(win_size)
    c1, c2 = (SSIM_K1 * float(ssim_range or 0.0)) ** 2, (SSIM_K2 * float(ssim_range or 0.0)) ** 2
    consts = (win, c1, c2, float(psnr_range) ** 2, float(cap_db))
    kernel = _kernel()
    try:  # compile (or load) for this dtype here, not in several threads at once
        kernel(xa, ya, 0, 0, *consts, s, p)
    except OSError as err:  # the cache directory passed numba's check but saving failed (disk full?)
        warnings.warn(f"numba could not cache the metrics kernel ({err}); compiling without cache")
        kernel = _kernel(cache=False)
    n = _cpu_threads(m, h, w)
    bounds = [m * i // n for i in range(n + 1)]
    if n == 1:
        kernel(xa, ya, 0, m, *consts, s, p)
    else:
        with ThreadPoolExecutor(n - 1) as pool:
            jobs = [pool.submit(kernel, xa, ya, bounds[i], bounds[i + 1], *consts, s, p) for i in range(1, n)]
            kernel(xa, ya, 0, bounds[1], *consts, s, p)  # this thread takes the first share
            for job in jobs:
                job.result()
    return (None if ssim_range is None else torch.from_numpy(s)), torch.from_numpy(p)


# ------------------------------------------------------------------ any device: torch path
def _window_sum(a: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Sum of every run of k consecutive entries along ``dim`` (valid: length L-k+1).

    Built from power-of-two window sums (doubling), so k=7 costs 4 additions and the
    rounding error stays that of a k-term sum (a running cumsum in float32 would
    accumulate error over the whole row).
    """
    n_out = a.shape[dim] - k + 1
    parts = []  # (window width, offset) pieces that tile [0, k)
    pw, width, offset = a, 1, 0  # pw[i] = sum of a[i : i + width]
    while True:
        if k & width:
            parts.append(pw.narrow(dim, offset, n_out))
            offset += width
        if offset == k:
            break
        n = pw.shape[dim] - width
        pw = pw.narrow(dim, 0, n) + pw.narrow(dim, width, n)
        width *= 2
    if len(parts) == 1:
        return parts[0]
    out = parts[0] + parts[1]
    for part in parts[2:]:
        out += part
    return out


def ssim_map_valid(gt: torch.Tensor, pred: torch.Tensor, data_range: float = SSIM_DATA_RANGE,
                   win_size: int = 7, k1: float = SSIM_K1, k2: float = SSIM_K2,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """SSIM at every fully-inside window: ``[M, H, W] -> [M, H-win+1, W-win+1]`` in ``dtype``.

    Same formula as scikit-image with ``gaussian_weights=False`` and
    ``use_sample_covariance=True`` (covariances scaled by N/(N-1), N = win_size**2),
    rewritten on window SUMS with the constants folded in, so each map costs few passes.
    Each image is first centred on its own mean: (co)variances do not change under a
    shift, and the smaller magnitudes curb the float32 cancellation in
    ``E[x^2] - E[x]^2`` (without it a bright, nearly flat frame loses ~3e-6 of SSIM).
    """
    n = float(win_size * win_size)
    x = gt.to(dtype)
    y = pred.to(dtype)
    mx = x.mean(dim=(-2, -1), keepdim=True)  # [M, 1, 1]
    my = y.mean(dim=(-2, -1), keepdim=True)
    buf = torch.empty((4, *x.shape), dtype=dtype, device=x.device)  # centred x, y, x^2+y^2, xy
    torch.sub(x, mx, out=buf[0])
    torch.sub(y, my, out=buf[1])
    torch.mul(buf[0], buf[0], out=buf[2]).addcmul_(buf[1], buf[1])
    torch.mul(buf[0], buf[1], out=buf[3])
    sums = _window_sum(_window_sum(buf, win_size, 2), win_size, 3)  # [4, M, H', W']
    sx_c, sy_c, sq, sxy = sums.unbind(0)
    # Variance terms, shift-invariant so taken from the centred sums, divided by N:
    # a2 = (2 cov + C2) N(N-1) / 2N,  b2 = (var_x + var_y + C2) N(N-1) / N.
    a2 = sxy.add_((k2 * data_range) ** 2 * (n - 1) / 2).addcmul_(sx_c, sy_c, value=-1.0 / n)
    b2 = (sq.add_((k2 * data_range) ** 2 * (n - 1))
          .addcmul_(sx_c, sx_c, value=-1.0 / n).addcmul_(sy_c, sy_c, value=-1.0 / n))
    # Mean terms need the uncentred window sums: a1 = (2 mu_x mu_y + C1) N^2 / 2,
    # b1 = (mu_x^2 + mu_y^2 + C1) N^2.  So SSIM = 4 * (a1 a2) / (b1 b2).
    c1 = (k1 * data_range) ** 2 * n * n
    sx = sx_c.add_(mx, alpha=n)
    sy = sy_c.add_(my, alpha=n)
    a1 = torch.mul(sx, sy).add_(c1 / 2)
    b1 = torch.mul(sx, sx).addcmul_(sy, sy).add_(c1)
    return a1.mul_(a2).div_(b1.mul_(b2)).mul_(4.0)


def _ssim_chunk(x: torch.Tensor, y: torch.Tensor, data_range: float, win_size: int) -> torch.Tensor:
    """``[m, H, W]`` pairs -> float64 ``[m]``: float32 map, float64 mean over the kept pixels."""
    smap = ssim_map_valid(x, y, data_range, win_size)
    return smap.sum(dim=(-2, -1), dtype=torch.float64) / (smap.shape[-2] * smap.shape[-1])


def _psnr_chunk(x: torch.Tensor, y: torch.Tensor, data_range: float, cap_db: float) -> torch.Tensor:
    """``[m, H, W]`` pairs -> float64 ``[m]``: difference and square in the inputs' dtype (as
    scikit-image), mean in float64, +inf (MSE 0) capped at ``cap_db``."""
    d = x - y
    mse = (d * d).to(torch.float64).mean(dim=(-2, -1))
    return (10.0 * torch.log10(data_range ** 2 / mse)).clamp_(max=cap_db)


def _scores_torch(x: torch.Tensor, y: torch.Tensor, ssim_range: float | None, psnr_range: float,
                  cap_db: float, win_size: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Torch path (the GPU path; runs anywhere): ``[M, H, W]`` pairs (one float dtype) ->
    float64 ``[M]`` SSIM (None if ``ssim_range`` is None) and PSNR, walked in chunks of
    :data:`_CHUNK_PIXELS` pixels."""
    s = None if ssim_range is None else torch.empty(x.shape[0], dtype=torch.float64, device=x.device)  # [M]
    p = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)  # [M]
    step = max(1, _CHUNK_PIXELS // (x.shape[-2] * x.shape[-1]))
    for i in range(0, x.shape[0], step):
        xc, yc = x[i:i + step], y[i:i + step]
        if s is not None:
            s[i:i + step] = _ssim_chunk(xc, yc, ssim_range, win_size)
        p[i:i + step] = _psnr_chunk(xc, yc, psnr_range, cap_db)
    return s, p


# ------------------------------------------------------------------------------ public
def _scores(gt: Any, pred: Any, ssim_range: float | None, psnr_range: float, cap_db: float,
            win_size: int) -> tuple[torch.Tensor | None, torch.Tensor, tuple[int, ...]]:
    """Per image and channel: float64 ``[M]`` SSIM (None if ``ssim_range`` is None), PSNR, and the lead shape."""
    x, y, lead = _as_images(gt, pred)
    if ssim_range is not None:
        _check_window(x, win_size)
    path = _scores_cpu if x.device.type == "cpu" and _numba_available() else _scores_torch
    return (*path(x, y, ssim_range, psnr_range, cap_db, win_size), lead)


_NUMBA: bool | None = None


def _numba_available() -> bool:
    """True when numba imports; otherwise warn once and score CPU batches with the torch
    path (same numbers, several times slower) instead of failing after a long sampling run."""
    global _NUMBA
    if _NUMBA is None:
        try:
            import numba  # noqa: F401
            _NUMBA = True
        except ImportError as err:
            warnings.warn(f"numba is not importable ({err}); scoring on the CPU with the slower torch path. "
                          "Install it: pip install -r requirements.txt")
            _NUMBA = False
    return _NUMBA


def score_pairs(gt: Any, pred: Any, ssim_range: float = SSIM_DATA_RANGE, psnr_range: float = PSNR_DATA_RANGE,
                cap_db: float = PSNR_CAP_DB, win_size: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and PSNR of every pair in one pass: ``[..., C, H, W]`` -> two float64 ``[...]``.

    Same values as :func:`ssim` and :func:`psnr` at the price of one; what the
    evaluation and the training's validation use.
    """
    s, p, lead = _scores(gt, pred, ssim_range, psnr_range, cap_db, win_size)
    return s.reshape(lead).mean(dim=-1), p.reshape(lead).mean(dim=-1)


def ssim(gt: Any, pred: Any, data_range: float = SSIM_DATA_RANGE, win_size: int = 7) -> torch.Tensor:
    """Mean SSIM per image, as scikit-image computes it, for a whole batch.

    gt, pred: ``[..., C, H, W]`` (tensor or array, any float dtype, any device; values
    normally in [0, 1]). Each channel is scored on its own and the channel scores are
    averaged, as the original did. Returns float64 ``[...]`` on gt's device.

    ``data_range`` defaults to 2.0 -- the range scikit-image 0.15 silently used for float
    images and hence the one behind the paper's numbers; pass 1.0 for the "correct" range
    (it gives lower values). Matches
    ``skimage.metrics.structural_similarity(gt[c], pred[c], data_range=data_range)``
    (``win_size`` x ``win_size`` uniform window, odd, default 7; sample covariance; K1
    0.01, K2 0.03; border cropped) to ~1e-12 on the CPU (float64 kernel) and ~1e-7 on
    other devices (float32 maps on mean-centred images).
    """
    s, _, lead = _scores(gt, pred, data_range, PSNR_DATA_RANGE, PSNR_CAP_DB, win_size)
    return s.reshape(lead).mean(dim=-1)


def psnr(gt: Any, pred: Any, data_range: float = PSNR_DATA_RANGE, cap_db: float = PSNR_CAP_DB) -> torch.Tensor:
    """PSNR per image (per channel, then averaged over channels), capped at ``cap_db``.

    gt, pred: ``[..., C, H, W]``; returns float64 ``[...]``. Per channel this is
    ``skimage.metrics.peak_signal_noise_ratio(gt[c], pred[c], data_range=data_range)`` =
    ``10 log10(data_range**2 / MSE)`` with the MSE accumulated in float64, except that a
    channel whose PSNR would exceed ``cap_db`` (identical pair: +inf) counts as ``cap_db``.
    """
    _, p, lead = _scores(gt, pred, None, data_range, cap_db, 0)
    return p.reshape(lead).mean(dim=-1)


def pairwise_diversity(samples: Any) -> torch.Tensor:
    """Mean pairwise per-pixel MSE between the S samples of each clip.

    samples: ``[B, S, ...]`` -> float64 ``[B]``. Uses
    ``sum_{i<j} |x_i - x_j|^2 = S * sum_i |x_i - mean|^2``, so the mean over the
    S(S-1)/2 pairs is twice the unbiased variance over samples, averaged over pixels:
    O(S) instead of O(S^2). Needs S >= 2.
    """
    x = torch.as_tensor(samples).to(torch.float64)
    if x.ndim < 2 or x.shape[1] < 2:
        raise ValueError(f"need samples [B, S>=2, ...], got shape {tuple(x.shape)}")
    var = x.var(dim=1, unbiased=True)  # [B, ...]
    return 2.0 * var.reshape(x.shape[0], -1).mean(dim=1)


def diversity_from_sums(sum_x: torch.Tensor, sum_sq: torch.Tensor, nsample: int) -> torch.Tensor:
    """:func:`pairwise_diversity` from running sums, so samples can be streamed in chunks.

    sum_x: ``[B, ...]`` sum over the S samples of each pixel; sum_sq: ``[B]`` sum over
    samples and pixels of the squares (both float64). ``sum_i |x_i - mean|^2 =
    sum_sq - |sum_x|^2 / S``; the mean pairwise per-pixel MSE is twice that over
    (S-1) * pixels. Returns float64 ``[B]``; needs S >= 2.
    """
    if nsample < 2:
        raise ValueError(f"diversity needs at least 2 samples, got {nsample}")
    sx = sum_x.reshape(sum_x.shape[0], -1).to(torch.float64)
    spread = sum_sq.to(torch.float64) - sx.square().sum(dim=1) / nsample  # [B]
    return 2.0 * spread.clamp(min=0.0) / ((nsample - 1) * sx.shape[1])


# ------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ScoreSettings:
    """The settings a pair metric may read (each takes the ones it needs)."""

    ssim_range: float = SSIM_DATA_RANGE
    psnr_range: float = PSNR_DATA_RANGE
    cap_db: float = PSNR_CAP_DB
    win_size: int = 7


@dataclass(frozen=True)
class PairMetric:
    """A score of one (ground truth, prediction) frame pair.

    ``fn(gt, pred, settings)``: ``[..., C, H, W]`` each -> float64 ``[...]``.
    ``higher_is_better`` decides which sample the paper protocol keeps per frame."""

    name: str
    higher_is_better: bool
    unit: str
    description: str
    fn: Callable[[Any, Any, ScoreSettings], torch.Tensor]


def _ssim_fn(gt: Any, pred: Any, st: ScoreSettings) -> torch.Tensor:
    return ssim(gt, pred, st.ssim_range, st.win_size)


def _psnr_fn(gt: Any, pred: Any, st: ScoreSettings) -> torch.Tensor:
    return psnr(gt, pred, st.psnr_range, st.cap_db)


def mse(gt: Any, pred: Any, st: ScoreSettings | None = None) -> torch.Tensor:
    """Mean squared error per image over channels and pixels: ``[..., C, H, W]`` -> float64 ``[...]``."""
    x, y, lead = _as_images(gt, pred)
    d = x.to(torch.float64) - y.to(torch.float64)
    return d.square().mean(dim=(-2, -1)).reshape(lead).mean(dim=-1)


#: Every frame-pair metric, by name. Adding one here is all it takes: the evaluation, its
#: protocols, tables, CSV, curves, event-aligned means and the training's validation
#: loop over names.
PAIR_METRICS: dict[str, PairMetric] = {
    m.name: m for m in (
        PairMetric("ssim", True, "", "structural similarity (scikit-image's, release's data range)", _ssim_fn),
        PairMetric("psnr", True, "dB", "peak signal-to-noise ratio, capped", _psnr_fn),
        PairMetric("mse", False, "", "mean squared error per pixel", mse),
    )
}
#: What the evaluation reports unless asked otherwise: the paper's two metrics.
DEFAULT_METRICS = ("ssim", "psnr")
#: The best-sample protocol keeps, per clip, the sample with the best mean of this metric.
SELECTION_METRIC = "ssim"


def check_metrics(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, or ValueError naming the unknown ones and the choices."""
    unknown = [n for n in names if n not in PAIR_METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(PAIR_METRICS)}")
    return tuple(dict.fromkeys(names))


def score(gt: Any, pred: Any, names: Sequence[str] = DEFAULT_METRICS,
          settings: ScoreSettings = ScoreSettings()) -> dict[str, torch.Tensor]:
    """Every metric of ``names`` for every pair: ``[..., C, H, W]`` each -> ``{name: float64 [...]}``.

    SSIM and PSNR asked together share one pass of the compiled kernel
    (:func:`score_pairs`); every other metric runs its own ``fn``."""
    names = check_metrics(names)
    out: dict[str, torch.Tensor] = {}
    if "ssim" in names and "psnr" in names:
        out["ssim"], out["psnr"] = score_pairs(gt, pred, settings.ssim_range, settings.psnr_range,
                                               settings.cap_db, settings.win_size)
    for name in names:
        if name not in out:
            out[name] = PAIR_METRICS[name].fn(gt, pred, settings)
    return {name: out[name] for name in names}


@dataclass(frozen=True)
class SetMetric:
    """A figure of the set of samples of each clip (not of one pair), streamed over chunks of samples.

    ``start(gt)`` with gt ``[B, F, C, H, W]`` -> a state; ``update(state, samples)`` with
    samples ``[B, s, F, C, H, W]`` (any chunk of the clip's samples); ``finish(state,
    nsample)`` -> float64 ``[B]``. Needs ``min_samples`` samples per clip (NaN below)."""

    name: str
    higher_is_better: bool
    description: str
    min_samples: int
    start: Callable[[torch.Tensor], Any]
    update: Callable[[Any, torch.Tensor], None]
    finish: Callable[[Any, int], torch.Tensor]


def _diversity_start(gt: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"sum_x": torch.zeros(gt.shape, dtype=torch.float64, device=gt.device),   # [B, F, C, H, W]
            "sum_sq": torch.zeros(gt.shape[0], dtype=torch.float64, device=gt.device)}  # [B]


def _diversity_update(state: dict[str, torch.Tensor], samples: torch.Tensor) -> None:
    x = samples.to(torch.float64)  # [B, s, F, C, H, W]
    state["sum_x"] += x.sum(1)
    state["sum_sq"] += x.square().sum(dim=tuple(range(1, x.ndim)))


def _diversity_finish(state: dict[str, torch.Tensor], nsample: int) -> torch.Tensor:
    return diversity_from_sums(state["sum_x"], state["sum_sq"], nsample)


#: Every set-level metric, by name (reported per clip, and its mean in metrics.json).
SET_METRICS: dict[str, SetMetric] = {
    "diversity": SetMetric("diversity", True, "mean pairwise per-pixel MSE between the samples of a clip", 2,
                           _diversity_start, _diversity_update, _diversity_finish),
}


# ------------------------------------------------------------------------------ protocols
def _as_scores(scores: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{name: [N, S, T]}`` (tensors or arrays) as float64 arrays of one shape, else ValueError."""
    out = {k: np.asarray(torch.as_tensor(v).detach().cpu(), dtype=np.float64) for k, v in scores.items()}
    shapes = {v.shape for v in out.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"expected scores of one shape [N, S, T], got {[v.shape for v in out.values()]}")
    return out


def per_clip_paper(scores: dict[str, Any]) -> dict[str, np.ndarray]:
    """Paper protocol, per clip: for each frame the best over samples, every metric separately.

    ``{name: [N, S, T]}`` -> ``{name: [N, T]}``; "best" is the max, or the min for a
    metric where lower is better. The metrics' bests may come from different samples (and
    different frames from different samples), as in the release."""
    out = {}
    for name, v in _as_scores(scores).items():
        out[name] = v.max(axis=1) if PAIR_METRICS[name].higher_is_better else v.min(axis=1)
    return out


def per_clip_best(scores: dict[str, Any], select: str = SELECTION_METRIC) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Best-sample protocol, per clip: the ONE sample with the best mean ``select`` over frames.

    ``{name: [N, S, T]}`` -> (``{name: [N, T]}`` of that sample's whole sequence, chosen
    index ``[N]``); ties -> the lowest index."""
    v = _as_scores(scores)
    if select not in v:
        raise ValueError(f"the best-sample protocol selects by {select!r}, which was not scored")
    means = v[select].mean(axis=2)  # [N, S]
    best = means.argmax(axis=1) if PAIR_METRICS[select].higher_is_better else means.argmin(axis=1)
    rows = np.arange(best.shape[0])
    return {name: a[rows, best] for name, a in v.items()}, best


#: The evaluation protocols, by name: ``{name: [N, S, T]}`` -> ``{name: [N, T]}``.
PROTOCOLS: dict[str, Callable[[dict[str, Any]], dict[str, np.ndarray]]] = {
    "paper": per_clip_paper,
    "best": lambda scores: per_clip_best(scores)[0],
}


def summarise(per_clip: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-clip curves ``{name: [N, T]}`` -> for each metric the mean over clips per frame
    (``<name>_per_frame``) and the mean of that curve (``<name>``)."""
    curves = {name: np.asarray(v, dtype=np.float64).mean(axis=0) for name, v in per_clip.items()}  # [T] each
    return {**{name: float(c.mean()) for name, c in curves.items()},
            **{f"{name}_per_frame": c.tolist() for name, c in curves.items()}}


# ------------------------------------------------------------------------ event-aligned
#: Event groups of :func:`event_masks`, in report order.
EVENT_GROUPS = ("after_wall_bounce", "after_block_bounce", "before_block", "after_block")


def event_masks(bounces: np.ndarray, blocks: np.ndarray | None, n_past: int, n_future: int,
                window: int) -> dict[str, np.ndarray]:
    """Which scored frames fall in which event group, per clip.

    bounces: ``[N, T', D]`` event codes per clip, frame and digit (0 none, 1 wall, 2 block;
    code at frame ``e`` = the digit turned at ``e``, the picture shows it from ``e+1``);
    blocks: ``[N, 3]`` block (x, y, first frame), -1s without block (or None). The scored
    frames are ``n_past .. n_past+n_future-1``. Returns boolean ``[N, n_future]`` masks:

    * ``after_wall_bounce`` / ``after_block_bounce``: frame ``j`` with a bounce of that kind
      (any digit) at some ``e`` with ``e < j <= e + window``;
    * ``before_block`` / ``after_block`` (clips that have a block): ``j`` before its first
      frame, or from it on.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    frames = np.arange(n_past, n_past + n_future)                          # [F]
    b = np.asarray(bounces)
    if b.ndim == 2:
        b = b[:, :, None]
    n, t_len = b.shape[:2]

    def after(code: int) -> np.ndarray:
        hit = (b == code).any(axis=2)                                      # [N, T'] event frames
        mask = np.zeros((n, n_future), dtype=bool)
        for lag in range(1, window + 1):                                   # frame j sees event e = j - lag
            e = frames - lag
            ok = (e >= 0) & (e < t_len)
            mask[:, ok] |= hit[:, e[ok]]
        return mask

    out = {"after_wall_bounce": after(1), "after_block_bounce": after(2)}
    if blocks is not None:
        first = np.asarray(blocks)[:, 2]
        has = first >= 0
        out["before_block"] = has[:, None] & (frames[None, :] < first[:, None])
        out["after_block"] = has[:, None] & (frames[None, :] >= first[:, None])
    else:
        out["before_block"] = out["after_block"] = np.zeros((n, n_future), dtype=bool)
    return out


def masked_means(per_clip: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean of every metric over the (clip, frame) entries of each mask, with their count
    (``None`` means where a mask is empty). ``per_clip``: ``{name: [N, F]}``; masks ``[N, F]``."""
    out: dict[str, Any] = {}
    vals = {k: np.asarray(v, dtype=np.float64) for k, v in per_clip.items()}
    for group, m in masks.items():
        count = int(m.sum())
        out[group] = {**{k: float(v[m].mean()) if count else None for k, v in vals.items()}, "frames": count}
    return out


def derangement(n: int, seed: int) -> np.ndarray:
    """A fixed permutation of ``0..n-1`` with no fixed point (Sattolo's algorithm: one cycle),
    from ``seed``. ``n = 1`` has none: returns ``[0]``."""
    rng = np.random.default_rng(seed)
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))  # j < i: this is what makes a single cycle
        perm[i], perm[j] = perm[j], perm[i]
    return perm
