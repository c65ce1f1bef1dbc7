"""Exact, batched SSIM / PSNR and the two evaluation protocols.

The numbers reproduce what the original release reported with scikit-image 0.15
(``compare_ssim`` / ``compare_psnr`` on float frames, no ``data_range``; see SPEC §7), i.e.
today's ``skimage.metrics.structural_similarity(gt, pred, data_range=2.0)`` and
``skimage.metrics.peak_signal_noise_ratio(gt, pred, data_range=1.0)``, one channel at a
time and averaged over channels -- but for a whole batch in a few torch ops instead of
one Python call per frame.

Why valid pooling is exact: scikit-image filters the whole image with a 7x7 uniform
window (scipy ``uniform_filter``, mode 'reflect') and then drops a 3-px border before the
mean. Every SSIM value that survives the crop comes from a window lying entirely inside
the image, so the padding never enters the result; a "valid" 7x7 box sum (computed here
by doubling: 4 additions per pixel and axis) yields exactly the kept values.

Identical frames: scikit-image returns PSNR = +inf (MSE 0). One infinite value would make
every mean infinite, so this project caps PSNR at :data:`PSNR_CAP_DB` (100 dB, the PSNR
of an MSE of 1e-10 at data range 1) and records the cap as ``"psnr_cap_db"`` in
``metrics.json``. Below the cap the values are scikit-image's.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch

#: PSNR reported for (near-)identical pairs instead of +inf.
PSNR_CAP_DB = 100.0
#: SSIM data range of the original evaluation: skimage 0.15 gave float images the range (-1, 1).
SSIM_DATA_RANGE = 2.0
#: PSNR data range of the original: float ground truth with minimum >= 0 -> dtype max 1.
PSNR_DATA_RANGE = 1.0

# Images per chunk inside ssim(): on CPU a chunk's ~10 working maps must stay in the
# L2 cache (measured: 28 grey 48x48 pairs per chunk run ~6x faster than 4096); on a GPU
# bigger chunks just amortise kernel launches.
_CHUNK_PIXELS_CPU = 1 << 16
_CHUNK_PIXELS_GPU = 1 << 22


def _as_images(gt: Any, pred: Any) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Both inputs as tensors ``[M, H, W]`` (M = prod(lead) * C) on gt's device + the lead shape."""
    # read-only arrays (np.broadcast_to, read-only memmaps) are copied: torch refuses to wrap them
    gt_t = torch.as_tensor(np.require(gt, requirements="W") if isinstance(gt, np.ndarray) else gt)
    pred_t = torch.as_tensor(np.require(pred, requirements="W") if isinstance(pred, np.ndarray) else pred,
                             device=gt_t.device)
    if gt_t.shape != pred_t.shape:
        raise ValueError(f"gt {tuple(gt_t.shape)} and pred {tuple(pred_t.shape)} must have the same shape")
    if gt_t.ndim < 3:
        raise ValueError(f"expected images [..., C, H, W], got shape {tuple(gt_t.shape)}")
    lead = tuple(gt_t.shape[:-2])  # (..., C)
    h, w = gt_t.shape[-2:]
    return gt_t.reshape(-1, h, w), pred_t.reshape(-1, h, w), lead


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
                   win_size: int = 7, k1: float = 0.01, k2: float = 0.03,
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


@contextlib.contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run a CPU chunk loop with one intra-op thread, then restore the setting.

    Each op here touches one cache-sized chunk (~15 us of work); splitting it over
    threads costs more than it saves, and on a busy machine far more (measured on 2
    shared cores: 2 threads 25x slower than 1 for the same scores).
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _chunk_size(x: torch.Tensor) -> int:
    budget = _CHUNK_PIXELS_CPU if x.device.type == "cpu" else _CHUNK_PIXELS_GPU
    return max(1, budget // (x.shape[-2] * x.shape[-1]))


def _check_window(x: torch.Tensor, win_size: int) -> None:
    h, w = x.shape[-2:]
    if win_size % 2 != 1 or min(h, w) < win_size:
        raise ValueError(f"images {h}x{w} need an odd win_size <= their smaller side (got {win_size})")


def _ssim_chunk(x: torch.Tensor, y: torch.Tensor, data_range: float, win_size: int) -> torch.Tensor:
    """``[m, H, W]`` pairs -> float64 ``[m]``: float32 map, float64 mean over the kept pixels."""
    smap = ssim_map_valid(x, y, data_range, win_size)
    return smap.sum(dim=(-2, -1), dtype=torch.float64) / (smap.shape[-2] * smap.shape[-1])


def _psnr_chunk(x: torch.Tensor, y: torch.Tensor, data_range: float, cap_db: float) -> torch.Tensor:
    """``[m, H, W]`` pairs -> float64 ``[m]``: difference in the inputs' dtype (as scikit-image),
    squares and mean in float64, +inf (MSE 0) capped at ``cap_db``."""
    d = (x - y).to(torch.float64)
    mse = (d * d).mean(dim=(-2, -1))
    return (10.0 * torch.log10(data_range ** 2 / mse)).clamp_(max=cap_db)


def _per_image(score, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``score(x_chunk, y_chunk) -> [m]`` over ``[M, H, W]`` pairs in cache-sized chunks -> float64 ``[M]``."""
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)  # [M]
    step = _chunk_size(x)
    with _one_thread(x.device):
        for i in range(0, x.shape[0], step):
            out[i:i + step] = score(x[i:i + step], y[i:i + step])
    return out


def score_pairs(gt: Any, pred: Any, ssim_range: float = SSIM_DATA_RANGE, psnr_range: float = PSNR_DATA_RANGE,
                cap_db: float = PSNR_CAP_DB, win_size: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and PSNR of every pair in one pass: ``[..., C, H, W]`` -> two float64 ``[...]``.

    Same values as :func:`ssim` and :func:`psnr`; the batch is walked once in
    cache-sized chunks, which is what the evaluation uses.
    """
    x, y, lead = _as_images(gt, pred)
    _check_window(x, win_size)
    s = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)  # [M]
    p = torch.empty_like(s)
    step = _chunk_size(x)
    with _one_thread(x.device):
        for i in range(0, x.shape[0], step):
            xc, yc = x[i:i + step], y[i:i + step]
            s[i:i + step] = _ssim_chunk(xc, yc, ssim_range, win_size)
            p[i:i + step] = _psnr_chunk(xc, yc, psnr_range, cap_db)
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
    (7x7 uniform window, sample covariance, K1 0.01, K2 0.03, 3-px border cropped) to
    ~1e-6 or better: maps in float32 on mean-centred images, means in float64.
    """
    x, y, lead = _as_images(gt, pred)
    _check_window(x, win_size)
    out = _per_image(lambda a, b: _ssim_chunk(a, b, data_range, win_size), x, y)
    return out.reshape(lead).mean(dim=-1)


def psnr(gt: Any, pred: Any, data_range: float = PSNR_DATA_RANGE, cap_db: float = PSNR_CAP_DB) -> torch.Tensor:
    """PSNR per image (per channel, then averaged over channels), capped at ``cap_db``.

    gt, pred: ``[..., C, H, W]``; returns float64 ``[...]``. Per channel this is
    ``skimage.metrics.peak_signal_noise_ratio(gt[c], pred[c], data_range=data_range)`` =
    ``10 log10(data_range**2 / MSE)`` with the MSE accumulated in float64, except that a
    channel whose PSNR would exceed ``cap_db`` (identical pair: +inf) counts as ``cap_db``.
    """
    x, y, lead = _as_images(gt, pred)
    out = _per_image(lambda a, b: _psnr_chunk(a, b, data_range, cap_db), x, y)
    return out.reshape(lead).mean(dim=-1)


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


# ------------------------------------------------------------------------------ protocols
def _pair(ssim_nst: Any, psnr_nst: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(torch.as_tensor(ssim_nst).detach().cpu(), dtype=np.float64)
    p = np.asarray(torch.as_tensor(psnr_nst).detach().cpu(), dtype=np.float64)
    if s.shape != p.shape or s.ndim != 3:
        raise ValueError(f"expected ssim and psnr of one shape [N, S, T], got {s.shape} and {p.shape}")
    return s, p


def per_clip_paper(ssim_nst: Any, psnr_nst: Any) -> tuple[np.ndarray, np.ndarray]:
    """Paper protocol, per clip: for each frame the max over samples, SSIM and PSNR separately.

    ``[N, S, T]`` each -> ``(ssim [N, T], psnr [N, T])``. The two maxima may come from
    different samples (and different frames from different samples), as in the release.
    """
    s, p = _pair(ssim_nst, psnr_nst)
    return s.max(axis=1), p.max(axis=1)


def per_clip_best(ssim_nst: Any, psnr_nst: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best-sample protocol, per clip: the ONE sample with the highest mean SSIM over frames.

    ``[N, S, T]`` each -> ``(ssim [N, T], psnr [N, T], chosen sample index [N])``; both
    metrics are that sample's whole sequence (ties -> the lowest index).
    """
    s, p = _pair(ssim_nst, psnr_nst)
    best = s.mean(axis=2).argmax(axis=1)  # [N]
    rows = np.arange(s.shape[0])
    return s[rows, best], p[rows, best], best


def summarise(ssim_nt: np.ndarray, psnr_nt: np.ndarray) -> dict[str, Any]:
    """Per-clip curves ``[N, T]`` -> mean over clips per frame, and the mean of that curve."""
    s_curve = np.asarray(ssim_nt, dtype=np.float64).mean(axis=0)
    p_curve = np.asarray(psnr_nt, dtype=np.float64).mean(axis=0)
    return {"ssim": float(s_curve.mean()), "psnr": float(p_curve.mean()),
            "ssim_per_frame": s_curve.tolist(), "psnr_per_frame": p_curve.tolist()}


def paper_protocol(ssim_nst: Any, psnr_nst: Any) -> dict[str, Any]:
    """Per-frame max over samples, then mean over clips: ``[N, S, T]`` -> curves ``[T]`` and means."""
    return summarise(*per_clip_paper(ssim_nst, psnr_nst))


def best_protocol(ssim_nst: Any, psnr_nst: Any) -> dict[str, Any]:
    """One best-mean-SSIM sample per clip, its whole sequence, mean over clips -> curves and means."""
    s, p, _ = per_clip_best(ssim_nst, psnr_nst)
    return summarise(s, p)
