"""metrics.py against scikit-image itself, the valid-pooling argument, and the protocols."""
import itertools

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import metrics


def _noise_pairs(rng, n, c=1, size=48):
    gt = rng.random((n, c, size, size), dtype=np.float32)
    pred = np.clip(gt + 0.15 * rng.standard_normal(gt.shape, dtype=np.float32), 0, 1)
    return gt, pred


def _digit_like_pairs(rng, n, c=1, size=48):
    """Sparse blobs on black (as M3SO) and a shifted, blurred, noisy prediction of them."""
    gt = np.zeros((n, c, size, size), np.float32)
    blob = ndi.gaussian_filter(rng.random((n, c, 28, 28)), sigma=(0, 0, 2, 2))
    blob = np.clip((blob - blob.mean()) * 8, 0, 1)
    for i in range(n):  # test fixture only
        y, x = rng.integers(0, size - 28, 2)
        gt[i, :, y:y + 28, x:x + 28] = blob[i]
    pred = np.roll(gt, shift=(1, 2), axis=(2, 3))
    pred = np.clip(ndi.gaussian_filter(pred, sigma=(0, 0, 0.7, 0.7)) + 0.02 * rng.standard_normal(gt.shape), 0, 1)
    return gt, pred.astype(np.float32)


def _bright_flat_pairs(rng, n, c=1, size=48):
    """Near-constant bright frames with faint texture: the float32 cancellation worst case."""
    gt = (0.95 + 0.002 * rng.random((n, c, size, size))).astype(np.float32)
    return gt, (gt + 0.001 * rng.standard_normal(gt.shape)).astype(np.float32)


def _sk_ssim(gt, pred, data_range=2.0, dtype=np.float64, win_size=7):
    """scikit-image, one call per image and channel, channel mean (as the original)."""
    return np.array([[structural_similarity(g.astype(dtype), p.astype(dtype), data_range=data_range,
                                            win_size=win_size)
                      for g, p in zip(gi, pi)] for gi, pi in zip(gt, pred)]).mean(axis=1)


def _sk_psnr(gt, pred, data_range=1.0):
    return np.array([[peak_signal_noise_ratio(g, p, data_range=data_range) for g, p in zip(gi, pi)]
                     for gi, pi in zip(gt, pred)]).mean(axis=1)


@pytest.mark.parametrize("make", [_noise_pairs, _digit_like_pairs, _bright_flat_pairs])
@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_psnr_match_skimage(make, channels):
    rng = np.random.default_rng(channels)
    gt, pred = make(rng, 12, channels)
    ours_s, ours_p = metrics.score_pairs(gt, pred)
    assert ours_s.shape == (12,) and ours_s.dtype == torch.float64
    # float64 copies: what scikit-image 0.15 did internally; float32: today's skimage path.
    np.testing.assert_allclose(ours_s.numpy(), _sk_ssim(gt, pred), rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours_s.numpy(), _sk_ssim(gt, pred, dtype=np.float32), rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours_p.numpy(), _sk_psnr(gt, pred), rtol=0, atol=1e-5)
    np.testing.assert_allclose(metrics.ssim(gt, pred).numpy(), ours_s.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(metrics.psnr(gt, pred).numpy(), ours_p.numpy(), rtol=0, atol=1e-12)


def test_data_range_is_a_parameter_and_matters():
    gt, pred = _digit_like_pairs(np.random.default_rng(5), 6)
    s1 = metrics.ssim(gt, pred, data_range=1.0).numpy()
    np.testing.assert_allclose(s1, _sk_ssim(gt, pred, data_range=1.0), atol=1e-5)
    assert np.all(s1 < metrics.ssim(gt, pred).numpy())  # the original's range 2 reads higher
    p255 = metrics.psnr(gt, pred, data_range=255.0).numpy()
    np.testing.assert_allclose(p255, _sk_psnr(gt, pred, data_range=255.0), atol=1e-5)


def test_identical_pair_psnr_is_capped_not_inf():
    gt, _ = _noise_pairs(np.random.default_rng(1), 3, 3)
    pred = gt.copy()
    pred[1, 0, 0, 0] += 1e-3  # one channel slightly off: finite, below the cap
    with np.errstate(divide="ignore"):
        assert np.isinf(peak_signal_noise_ratio(gt[0, 0], pred[0, 0], data_range=1.0))
    p = metrics.psnr(gt, pred).numpy()
    assert p[0] == metrics.PSNR_CAP_DB and p[2] == metrics.PSNR_CAP_DB
    # image 1: two capped channels and one real value, averaged
    real = peak_signal_noise_ratio(gt[1, 0], pred[1, 0], data_range=1.0)
    assert real < metrics.PSNR_CAP_DB
    assert p[1] == pytest.approx((real + 2 * metrics.PSNR_CAP_DB) / 3, abs=1e-5)
    assert metrics.psnr(gt, pred, cap_db=60.0).numpy()[0] == 60.0
    np.testing.assert_allclose(metrics.ssim(gt, gt).numpy(), 1.0, atol=1e-6)


def test_valid_pooling_equals_padded_filter_then_crop():
    """After the 3-px crop every kept window lies inside the image: padding mode is irrelevant."""
    rng = np.random.default_rng(2)
    gt, pred = _digit_like_pairs(rng, 2)
    x, y = gt[:, 0].astype(np.float64), pred[:, 0].astype(np.float64)
    n, r = 49, 3
    maps, fulls = [], []
    for mode in ["reflect", "constant", "wrap", "nearest", "mirror"]:
        f = lambda a: ndi.uniform_filter(a, size=(1, 7, 7), mode=mode)  # noqa: E731
        ux, uy = f(x), f(y)
        vx = (f(x * x) - ux * ux) * n / (n - 1)
        vy = (f(y * y) - uy * uy) * n / (n - 1)
        vxy = (f(x * y) - ux * uy) * n / (n - 1)
        c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
        full = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
        maps.append(full[:, r:-r, r:-r])
        fulls.append(full)
    # control: the un-cropped border DOES depend on the mode; the crop is what removes it
    assert not np.allclose(fulls[0], fulls[1], rtol=0, atol=1e-6)
    for m in maps[1:]:
        np.testing.assert_allclose(m, maps[0], rtol=0, atol=1e-12)
    ours = metrics.ssim_map_valid(torch.from_numpy(x), torch.from_numpy(y), dtype=torch.float64).numpy()
    np.testing.assert_allclose(ours, maps[0], rtol=0, atol=1e-12)
    ours32 = metrics.ssim_map_valid(torch.from_numpy(gt[:, 0]), torch.from_numpy(pred[:, 0])).numpy()
    np.testing.assert_allclose(ours32, maps[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 8, 11])
def test_window_sum_any_width(k):
    a = torch.from_numpy(np.random.default_rng(k).random((2, 13, 12)))
    for dim in (1, 2):
        ref = torch.stack([a.narrow(dim, i, k).sum(dim) for i in range(a.shape[dim] - k + 1)], dim)
        torch.testing.assert_close(metrics._window_sum(a, k, dim), ref, rtol=0, atol=1e-12)


def test_leading_dims_chunking_and_threads(monkeypatch):
    rng = np.random.default_rng(4)
    gt, pred = _noise_pairs(rng, 2 * 3 * 4, 1, size=16)
    s_flat, p_flat = metrics.score_pairs(gt, pred)
    s, p = metrics.score_pairs(gt.reshape(2, 3, 4, 1, 16, 16), pred.reshape(2, 3, 4, 1, 16, 16))
    assert s.shape == (2, 3, 4) and p.shape == (2, 3, 4)
    torch.testing.assert_close(s.reshape(-1), s_flat, rtol=0, atol=0)
    # CPU kernel split over threads: the same numbers, bit for bit
    monkeypatch.setattr(metrics, "_MIN_PIXELS_PER_THREAD", 16 * 16 * 5)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert metrics._cpu_threads(24, 16, 16) == 3
        s3, p3 = metrics.score_pairs(gt, pred)
        torch.set_num_threads(1)
        assert metrics._cpu_threads(24, 16, 16) == 1  # torch's setting is the cap
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(s3, s_flat, rtol=0, atol=0)
    torch.testing.assert_close(p3, p_flat, rtol=0, atol=0)
    # torch path (the GPU path) in chunks of 5 images: the same numbers as in one chunk
    x, y = torch.from_numpy(gt[:, 0]), torch.from_numpy(pred[:, 0])
    s1, p1 = metrics._scores_torch(x, y, 2.0, 1.0, 100.0, 7)
    monkeypatch.setattr(metrics, "_CHUNK_PIXELS", 16 * 16 * 5)
    s5, p5 = metrics._scores_torch(x, y, 2.0, 1.0, 100.0, 7)
    torch.testing.assert_close(s5, s1, rtol=0, atol=1e-12)
    torch.testing.assert_close(p5, p1, rtol=0, atol=0)
    torch.testing.assert_close(s5, s_flat, rtol=0, atol=1e-6)
    torch.testing.assert_close(p5, p_flat, rtol=1e-12, atol=0)
    for bad in (1, 4, 17):
        with pytest.raises(ValueError):
            metrics.ssim(gt, pred, win_size=bad)
    with pytest.raises(ValueError):
        metrics.ssim(gt[:, :, :5, :5], pred[:, :, :5, :5])
    with pytest.raises(ValueError):
        metrics.ssim(gt, pred[:-1])
    assert metrics.psnr(gt[:, :, :5, :5], pred[:, :, :5, :5]).shape == (24,)  # no window in PSNR


def _hand_made():
    """2 clips, 3 samples, 2 future frames. Clip 0: sample 0 wins frame 0, sample 1 wins
    frame 1 (paper takes both maxima; best takes sample 1, the higher mean)."""
    ssim = np.array([[[0.9, 0.1], [0.5, 0.8], [0.2, 0.2]],
                     [[0.3, 0.3], [0.4, 0.6], [0.7, 0.1]]])
    psnr = np.array([[[20., 10.], [15., 30.], [40., 5.]],
                     [[11., 12.], [13., 14.], [15., 16.]]])
    return ssim, psnr


def _proto(name, ssim, psnr):
    return metrics.summarise(metrics.PROTOCOLS[name]({"ssim": ssim, "psnr": psnr}))


def test_paper_protocol_hand_made():
    out = _proto("paper", *_hand_made())
    # clip 0: max ssim per frame (0.9, 0.8), max psnr (40, 30); clip 1: (0.7, 0.6), (15, 16)
    assert out["ssim_per_frame"] == pytest.approx([0.8, 0.7])
    assert out["psnr_per_frame"] == pytest.approx([27.5, 23.0])
    assert out["ssim"] == pytest.approx(0.75) and out["psnr"] == pytest.approx(25.25)


def test_best_protocol_hand_made():
    ssim, psnr = _hand_made()
    per_clip, idx = metrics.per_clip_best({"ssim": ssim, "psnr": psnr})
    # clip 0 means: 0.5, 0.65, 0.2 -> sample 1; clip 1 means: 0.3, 0.5, 0.4 -> sample 1
    assert idx.tolist() == [1, 1]
    out = _proto("best", ssim, psnr)
    assert out["ssim_per_frame"] == pytest.approx([0.45, 0.7])
    assert out["psnr_per_frame"] == pytest.approx([14.0, 22.0])
    paper = _proto("paper", ssim, psnr)
    assert out["ssim"] < paper["ssim"] and out["psnr"] < paper["psnr"]  # best <= paper always


def test_protocols_on_random_against_loops():
    rng = np.random.default_rng(6)
    ssim, psnr = rng.random((5, 4, 3)), 30 * rng.random((5, 4, 3))
    best = _proto("best", ssim, psnr)
    paper = _proto("paper", ssim, psnr)
    for t in range(3):
        assert paper["ssim_per_frame"][t] == pytest.approx(np.mean([max(ssim[n, :, t]) for n in range(5)]))
        chosen = [int(np.argmax([np.mean(ssim[n, s]) for s in range(4)])) for n in range(5)]
        assert best["psnr_per_frame"][t] == pytest.approx(np.mean([psnr[n, chosen[n], t] for n in range(5)]))
    assert best["ssim"] <= paper["ssim"] + 1e-12
    with pytest.raises(ValueError):
        metrics.per_clip_paper({"ssim": ssim, "psnr": psnr[:, :, :2]})


def test_lower_is_better_metrics_take_the_minimum():
    """MSE is registered as lower-is-better: the paper protocol keeps each frame's smallest
    error, the best protocol selected by MSE keeps the sample of smallest mean error."""
    rng = np.random.default_rng(8)
    err = rng.random((4, 5, 3))  # [N, S, T]
    assert metrics.per_clip_paper({"mse": err})["mse"] == pytest.approx(err.min(axis=1))
    per_clip, idx = metrics.per_clip_best({"mse": err}, select="mse")
    assert idx.tolist() == err.mean(axis=2).argmin(axis=1).tolist()
    assert per_clip["mse"] == pytest.approx(err[np.arange(4), idx])


def test_registry_scores_equal_the_single_metric_functions():
    rng = np.random.default_rng(9)
    gt, pred = rng.random((2, 3, 1, 16, 16)), rng.random((2, 3, 1, 16, 16))
    got = metrics.score(gt, pred, ("psnr", "mse", "ssim"))
    assert list(got) == ["psnr", "mse", "ssim"]  # in the order asked for
    torch.testing.assert_close(got["ssim"], metrics.ssim(gt, pred), rtol=0, atol=0)
    torch.testing.assert_close(got["psnr"], metrics.psnr(gt, pred), rtol=0, atol=0)
    torch.testing.assert_close(got["mse"], torch.from_numpy(((gt - pred) ** 2).mean(axis=(2, 3, 4))))
    only = metrics.score(gt, pred, ("ssim",), metrics.ScoreSettings(ssim_range=1.0))
    torch.testing.assert_close(only["ssim"], metrics.ssim(gt, pred, data_range=1.0), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown metrics.*lpips"):
        metrics.score(gt, pred, ("ssim", "lpips"))


def test_set_metric_diversity_streams_over_chunks():
    rng = np.random.default_rng(10)
    samples = torch.from_numpy(rng.random((3, 6, 2, 1, 5, 5)))  # [B, S, F, C, H, W]
    div = metrics.SET_METRICS["diversity"]
    state = div.start(samples[:, 0])
    for s0 in (0, 2, 5):  # uneven chunks
        div.update(state, samples[:, s0:{0: 2, 2: 5, 5: 6}[s0]])
    torch.testing.assert_close(div.finish(state, 6), metrics.pairwise_diversity(samples))


def test_pairwise_diversity_against_explicit_pairs():
    rng = np.random.default_rng(7)
    samples = rng.random((3, 5, 2, 1, 6, 6))  # [B, S, T, C, H, W]
    ref = [np.mean([np.mean((samples[b, i] - samples[b, j]) ** 2)
                    for i, j in itertools.combinations(range(5), 2)]) for b in range(3)]
    np.testing.assert_allclose(metrics.pairwise_diversity(samples).numpy(), ref, rtol=1e-10)
    same = np.repeat(samples[:, :1], 4, axis=1)
    np.testing.assert_allclose(metrics.pairwise_diversity(same).numpy(), 0.0, atol=1e-15)
    with pytest.raises(ValueError):
        metrics.pairwise_diversity(samples[:, :1])


def test_diversity_from_streamed_sums_matches():
    rng = np.random.default_rng(8)
    samples = torch.from_numpy(rng.random((2, 6, 3, 1, 5, 5)))  # [B, S, T, C, H, W]
    sum_x = torch.zeros(2, 3, 1, 5, 5, dtype=torch.float64)
    sum_sq = torch.zeros(2, dtype=torch.float64)
    for chunk in samples.split(4, dim=1):  # streamed: 4 then 2 samples
        sum_x += chunk.sum(1)
        sum_sq += chunk.square().sum(dim=(1, 2, 3, 4, 5))
    torch.testing.assert_close(metrics.diversity_from_sums(sum_x, sum_sq, 6), metrics.pairwise_diversity(samples))


def test_thread_setting_restored():
    before = torch.get_num_threads()
    gt, pred = _noise_pairs(np.random.default_rng(9), 2)
    metrics.score_pairs(gt, pred)
    assert torch.get_num_threads() == before


def _score_in_child(args):
    return [t.numpy() for t in metrics.score_pairs(*args)]


def test_concurrent_callers_and_forked_child(monkeypatch):
    """Several Python threads at once, and a child forked after use (GNU OpenMP layers abort there)."""
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(metrics, "_MIN_PIXELS_PER_THREAD", 16 * 16 * 4)  # each call splits too
    batches = [_noise_pairs(np.random.default_rng(20 + i), 16, 1, size=16) for i in range(4)]
    alone = [metrics.score_pairs(*b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda b: metrics.score_pairs(*b), batches))
    for (s, p), (s2, p2) in zip(alone, together):
        torch.testing.assert_close(s2, s, rtol=0, atol=0)
        torch.testing.assert_close(p2, p, rtol=0, atol=0)
    if "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(1) as pool:
            s_child, p_child = pool.map(_score_in_child, [batches[0]])[0]
        np.testing.assert_array_equal(s_child, alone[0][0].numpy())
        np.testing.assert_array_equal(p_child, alone[0][1].numpy())


# ------------------------------------------------------------- CPU kernel vs torch path vs skimage
def _flat(a):
    return torch.from_numpy(a.reshape(-1, *a.shape[-2:]))


@pytest.mark.parametrize("shape,win", [((3, 1, 48, 48), 7), ((2, 3, 20, 33), 5), ((2, 2, 11, 9), 9),
                                       ((3, 1, 16, 16), 3), ((2, 1, 13, 40), 11)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_equals_torch_path_and_skimage(shape, win, dtype):
    """Odd windows, non-square frames, several channels, both float dtypes."""
    rng = np.random.default_rng(win)
    gt = rng.random(shape).astype(dtype)
    pred = np.clip(gt + 0.2 * rng.standard_normal(shape), 0, 1).astype(dtype)
    x, y = _flat(gt), _flat(pred)
    s_cpu, p_cpu = metrics._scores_cpu(x, y, 2.0, 1.0, 100.0, win)
    s_torch, p_torch = metrics._scores_torch(x, y, 2.0, 1.0, 100.0, win)
    assert s_cpu.dtype == p_cpu.dtype == torch.float64 and s_cpu.shape == (x.shape[0],)
    sk_s64 = _sk_ssim(gt.reshape(-1, 1, *shape[-2:]), pred.reshape(-1, 1, *shape[-2:]), win_size=win)
    sk_s = _sk_ssim(gt.reshape(-1, 1, *shape[-2:]), pred.reshape(-1, 1, *shape[-2:]), dtype=dtype, win_size=win)
    sk_p = _sk_psnr(gt.reshape(-1, 1, *shape[-2:]), pred.reshape(-1, 1, *shape[-2:]))
    np.testing.assert_allclose(s_cpu.numpy(), sk_s64, rtol=0, atol=1e-12)  # float64 kernel: float64 skimage
    np.testing.assert_allclose(s_cpu.numpy(), sk_s, rtol=0, atol=1e-5)
    np.testing.assert_allclose(p_cpu.numpy(), sk_p, rtol=1e-12, atol=0)  # same float32 squares as skimage
    np.testing.assert_allclose(s_torch.numpy(), s_cpu.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(p_torch.numpy(), p_cpu.numpy(), rtol=1e-12, atol=0)
    # and through the public functions, channel-averaged
    s, p = metrics.score_pairs(gt, pred, win_size=win)
    assert s.shape == shape[:1]
    np.testing.assert_allclose(s.numpy(), s_cpu.reshape(shape[:2]).mean(1).numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(metrics.ssim(gt, pred, win_size=win).numpy(), s.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(metrics.psnr(gt, pred).numpy(), p.numpy(), rtol=0, atol=0)


def test_kernel_on_nasty_frames():
    """All-zero, constant, identical, bright nearly-flat and saturated frames."""
    rng = np.random.default_rng(11)
    noise = rng.random((16, 16))
    bright = 0.95 + 0.002 * rng.random((16, 16))
    pairs = [(np.zeros((16, 16)), np.zeros((16, 16))), (np.zeros((16, 16)), noise),
             (np.full((16, 16), 0.5), np.full((16, 16), 0.7)), (noise, noise),
             (bright, bright + 0.001 * rng.standard_normal((16, 16))), (np.ones((16, 16)), (noise > 0.5) * 1.0)]
    for dtype in (np.float32, np.float64):
        gt = np.stack([g for g, _ in pairs])[:, None].astype(dtype)  # [6, 1, 16, 16]
        pred = np.stack([p for _, p in pairs])[:, None].astype(dtype)
        s, p = metrics.score_pairs(gt, pred)
        np.testing.assert_allclose(s.numpy(), _sk_ssim(gt, pred), rtol=0, atol=1e-12)
        with np.errstate(divide="ignore"):
            ref_p = np.minimum(_sk_psnr(gt, pred), metrics.PSNR_CAP_DB)
        np.testing.assert_allclose(p.numpy(), ref_p, rtol=1e-12, atol=0)
        assert s[0] == 1.0 and s[3] == 1.0 and p[0] == p[3] == metrics.PSNR_CAP_DB  # identical: exact
        s_torch, p_torch = metrics._scores_torch(_flat(gt), _flat(pred), 2.0, 1.0, 100.0, 7)
        np.testing.assert_allclose(s_torch.numpy(), s.numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(p_torch.numpy(), p.numpy(), rtol=1e-12, atol=0)
    nan = np.zeros((1, 1, 8, 8))
    nan[0, 0, 0, 0] = np.nan
    s, p = metrics.score_pairs(nan, np.zeros_like(nan))
    assert np.isnan(s[0]) and np.isnan(p[0])  # NaN is not hidden by the cap


def test_input_types_and_dtypes():
    """Narrow floats score as their exact float32 values, mixed pairs in float64, as scikit-image;
    grad-tracking and inference-mode tensors are accepted; results stay float64 [...]."""
    gt, pred = _noise_pairs(np.random.default_rng(12), 4, 2, size=12)
    for narrow in (torch.float16, torch.bfloat16):
        g, p = torch.from_numpy(gt).to(narrow), torch.from_numpy(pred).to(narrow)
        s, ps = metrics.score_pairs(g, p)
        s32, ps32 = metrics.score_pairs(g.float(), p.float())
        assert s.dtype == torch.float64 and s.shape == (4,)
        torch.testing.assert_close(s, s32, rtol=0, atol=0)
        torch.testing.assert_close(ps, ps32, rtol=0, atol=0)
    s_mixed, p_mixed = metrics.score_pairs(gt, pred.astype(np.float64))
    s64, p64 = metrics.score_pairs(gt.astype(np.float64), pred.astype(np.float64))
    torch.testing.assert_close(s_mixed, s64, rtol=0, atol=0)
    torch.testing.assert_close(p_mixed, p64, rtol=0, atol=0)
    s_ref, p_ref = metrics.score_pairs(gt, pred)
    g = torch.from_numpy(gt).requires_grad_()
    torch.testing.assert_close(metrics.score_pairs(g, torch.from_numpy(pred))[0], s_ref, rtol=0, atol=0)
    with torch.inference_mode():
        s_inf, p_inf = metrics.score_pairs(torch.from_numpy(gt), torch.from_numpy(pred))
    torch.testing.assert_close(s_inf, s_ref, rtol=0, atol=0)
    torch.testing.assert_close(p_inf, p_ref, rtol=0, atol=0)
    ro = np.broadcast_to(gt[:1], gt.shape)  # read-only, stride 0
    torch.testing.assert_close(metrics.score_pairs(ro, pred)[0],
                               metrics.score_pairs(np.ascontiguousarray(ro), pred)[0], rtol=0, atol=0)


def test_kernel_compiled_equals_plain_python():
    """numba must not change the arithmetic: the uncompiled function gives the same numbers."""
    gt, pred = _noise_pairs(np.random.default_rng(13), 2, 1, size=9)
    x, y = gt[:, 0], pred[:, 0]
    s_py, p_py, s_nb, p_nb = (np.zeros(2) for _ in range(4))
    args = (0, 2, 3, (0.01 * 2) ** 2, (0.03 * 2) ** 2, 1.0, 100.0)
    with np.errstate(all="ignore"):
        metrics._score_range(x, y, *args, s_py, p_py)
    metrics._kernel()(x, y, *args, s_nb, p_nb)
    np.testing.assert_allclose(s_nb, s_py, rtol=1e-14, atol=0)
    np.testing.assert_allclose(p_nb, p_py, rtol=1e-14, atol=0)


def test_kernel_without_cache_directory(monkeypatch):
    """No writable cache directory anywhere, or a failing save: warn at most, never crash."""
    import numba

    gt, pred = _noise_pairs(np.random.default_rng(14), 3, 1, size=10)
    gt, pred = gt.astype(np.float64), pred.astype(np.float64)
    ref = metrics.score_pairs(gt, pred)
    real_njit, asked = numba.njit, []

    def njit_without_locator(*args, cache=False, **kwargs):
        asked.append(cache)
        if cache:
            raise RuntimeError("cannot cache function '_score_range': no locator available for file 'metrics.py'")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit_without_locator)
    monkeypatch.setattr(metrics, "_KERNEL", None)
    torch.testing.assert_close(metrics.score_pairs(gt, pred), ref, rtol=0, atol=0)
    assert asked == [True, False]
    monkeypatch.setattr(numba, "njit", real_njit)

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics, "_KERNEL", disk_full)
    with pytest.warns(UserWarning, match="could not cache"):
        torch.testing.assert_close(metrics.score_pairs(gt, pred), ref, rtol=0, atol=0)


def test_without_numba_the_torch_path_scores(monkeypatch):
    """A missing numba warns and falls back to the torch path with the same numbers."""
    import builtins

    rng = np.random.default_rng(4)
    gt = rng.random((3, 1, 20, 20), dtype=np.float32)
    pred = np.clip(gt + 0.1 * rng.standard_normal(gt.shape, dtype=np.float32), 0, 1)
    want = metrics.score_pairs(gt, pred)
    real_import = builtins.__import__

    def no_numba(name, *args, **kwargs):
        if name == "numba":
            raise ImportError("No module named 'numba'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_numba)
    monkeypatch.setattr(metrics, "_NUMBA", None)
    with pytest.warns(UserWarning, match="numba"):
        got = metrics.score_pairs(gt, pred)
    assert metrics._NUMBA is False
    assert torch.allclose(got[0], want[0], atol=1e-6) and torch.allclose(got[1], want[1], atol=1e-6)
    monkeypatch.setattr(metrics, "_NUMBA", None)
