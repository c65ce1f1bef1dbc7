"""Evaluate a Sound2Sight checkpoint: sample futures, score them, write numbers, curves and GIFs.

Protocol (as released, docs/DESIGN.md): for every test clip, ``--nsample`` futures are sampled from the
learned prior given ``--n_past`` ground-truth frames and the whole clip's audio; every
future frame of every sample is scored against the ground truth with SSIM and PSNR
(:mod:`metrics`, equal to scikit-image as the release called it). Reported:

* ``paper``: per clip and frame the max over samples (SSIM and PSNR separately), then the
  mean over clips -- what the paper reported;
* ``best``: per clip the ONE sample with the highest mean SSIM, its whole sequence;
* ``copy_last_frame``: the last context frame repeated (a deterministic baseline);
* ``diversity``: mean over clips of the mean pairwise per-pixel MSE between samples;
* ``events`` (datasets with ``bounces.npy`` / ``blocks.npy``, i.e. M3SO / M3SO-NB): the
  same numbers over the future frames within ``--event_window`` frames after a wall
  bounce, after a block bounce, and before / after the block appears, for the model and
  for copy-last-frame (``events.png``);
* ``audio_shuffled`` (``--shuffle_audio``): the same model scored again, same noise, with
  each clip's audio replaced by another test clip's (a fixed derangement of the clips),
  and the drop that causes: what says whether the predictions use the sound. A model
  trained without audio ignores it, so its drop is zero by construction (not re-run).

The GIFs also show the posterior reconstruction (the model sees the target frames
through the posterior, but its predictor was trained on prior z), as the release did; it
is not scored.

The paper's command works unchanged (``--n_past 5 --n_future 25 --nsample 100 --N 1000``).
Under ``torchrun --nproc_per_node K`` the clips are shared out between processes and the
numbers are the same as in one process: every clip draws its noise from its own
generator, seeded from (``--seed``, clip index), whatever process or batch it lands in.

Outputs in ``--log_dir`` (default ``<run folder>/eval``): metrics.json, metrics.csv,
curves.png, gifs/clip_XXXXX.gif and, with ``--save_samples``, samples.npz.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from torch.utils.data import DataLoader
from tqdm import tqdm

import metrics
import training
from data import DATASETS, PRESETS, dataset_info, open_dataset
from models.sound2sight import load_model
from utils import (InputError, RunLock, StopSignals, atomic_file, atomic_write_bytes, atomic_write_json, atomic_write_text, framed_row,
                   gif_colours, run_cli, save_gif)

PROTOCOLS = ("paper", "best")
# Noise streams of one clip: independent generators, so e.g. changing --num_gifs or
# skipping the posterior never shifts the prior samples.
_STREAM_PRIOR, _STREAM_POSTERIOR, _STREAM_GIF = 0, 1, 2
_GIF_RANDOM = 3  # random samples shown per GIF beside the best one


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # --- the original evaluation script's flags, names and defaults unchanged
    p.add_argument("--batch_size", type=int, default=100, help="test clips per batch")
    p.add_argument("--data_root", default="data",
                   help="dataset folder; when left at 'data' and missing, the checkpoint's training data_root is used")
    p.add_argument("--model_path", default="",
                   help="checkpoint file, or a training log folder (then checkpoints/best.pt, else "
                        "checkpoints/last.pt)")
    p.add_argument("--log_dir", default="", help="output folder (default: <run folder>/eval)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--n_past", type=int, default=30, help="ground-truth context frames")
    p.add_argument("--n_future", type=int, default=60, help="frames generated and scored")
    p.add_argument("--num_workers", "--num_threads", dest="num_threads", type=int, default=0,
                   help="DataLoader worker processes (the original's --num_threads; capped at the CPU cores)")
    p.add_argument("--nsample", type=int, default=100, help="prior samples per clip")
    p.add_argument("--N", type=int, default=1000, help="at most this many test clips (all if fewer)")
    p.add_argument("--model_epoch", type=int, default=None,
                   help="with a checkpoint file as --model_path: a label for the outputs, as in the release; "
                        "with a log folder: use its checkpoints/epoch_<N>.pt")
    p.add_argument("--log_path", default="",
                   help="a folder (as in the release): the headline numbers go to results_epoch_<label>.txt "
                        "and .json there; a file path (not an existing folder): one headline line appended")
    # --- new
    p.add_argument("--dataset", default="", choices=["", *DATASETS],
                   help="as in training; drums/painting also check that the checkpoint takes 64x64 colour frames "
                        "(shapes always come from the checkpoint and are checked against the data)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--save_samples", action="store_true",
                   help="also write samples.npz: gt [N,T,C,H,W], samples [N,S,T,C,H,W] in [0,1], clip_index [N]")
    p.add_argument("--num_gifs", type=int, default=5,
                   help="GIFs for the first N clips: ground truth | posterior | best sample | 3 random samples")
    p.add_argument("--protocol", default="both", choices=["paper", "best", "both"],
                   help="paper: per-frame max over samples (as published); best: one best-SSIM sample per clip")
    p.add_argument("--data_range", type=float, default=metrics.SSIM_DATA_RANGE,
                   help="SSIM data range. 2.0 (default) reproduces the published numbers: scikit-image 0.15 "
                        "assumed float images span [-1, 1]. 1.0 is the range frames really have; it gives "
                        "lower SSIM. PSNR always uses 1.0.")
    p.add_argument("--no_tensorboard", action="store_true", help="do not write TensorBoard event files")
    p.add_argument("--event_window", type=int, default=3,
                   help="event-aligned metrics: frames counted after each wall/block bounce")
    p.add_argument("--shuffle_audio", action="store_true",
                   help="also score the model with every clip's audio swapped for another test clip's (a fixed "
                        "derangement) and report the drop: how much the predictions rely on the sound")
    p.add_argument("--chunk_size", type=int, default=2000,
                   help="at most this many clip x sample sequences per model call (memory bound; samples of a "
                        "clip are split over calls when batch_size x nsample exceeds it)")
    return p


# --------------------------------------------------------------------------- inputs
def resolve_checkpoint(model_path: str, model_epoch: int | None) -> Path:
    """The checkpoint file named by ``--model_path`` (file or training log folder)."""
    if not model_path:
        raise InputError("--model_path is required: pass a checkpoint file or a training log folder")
    path = Path(model_path)
    if path.is_file():
        return path  # --model_epoch is then only a label, as in the release
    if not path.is_dir():
        raise InputError(f"--model_path {path} does not exist; pass a checkpoint file or a training log folder")
    folders = [path / "checkpoints", path]  # a run folder, or its checkpoints/ folder itself
    names = [f"epoch_{model_epoch}.pt"] if model_epoch is not None else ["best.pt", "last.pt"]
    for name in names:
        for folder in folders:
            if (folder / name).is_file():
                return folder / name
    raise InputError(f"--model_path {path}: no {' or '.join(names)} under {path / 'checkpoints'}; "
                     "train first, or pick an existing --model_epoch / checkpoint file")


def resolve_data_root(data_root: str, ckpt_args: dict[str, Any] | None, parser_default: str) -> str:
    """``--data_root``; if left at its default and missing, the checkpoint's training data_root."""
    if data_root == parser_default and not Path(data_root).exists():
        trained_on = (ckpt_args or {}).get("data_root")
        if isinstance(trained_on, str) and Path(trained_on).is_dir():
            print(f"--data_root {data_root} does not exist; using the checkpoint's data_root {trained_on}")
            return trained_on
    return data_root


def default_log_dir(ckpt_path: Path) -> Path:
    """``<run folder>/eval``: the folder holding ``checkpoints/``, else the checkpoint's folder."""
    folder = ckpt_path.parent
    return (folder.parent if folder.name == "checkpoints" else folder) / "eval"


def check_writable(log_dir: Path) -> None:
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=log_dir, prefix=".write_test."):
            pass
    except OSError as err:
        raise InputError(f"--log_dir {log_dir} cannot be written ({err.strerror or err}); "
                         "pass a writable folder") from None


def check_log_path(path: Path) -> None:
    """``--log_path`` must be an existing folder or a file in a writable folder (checked before the work)."""
    if path.is_dir():
        check_writable(path)
        return
    if path.exists() and not path.is_file():
        raise InputError(f"--log_path {path} is neither a folder nor a file; pass a folder or a file path")
    if not path.parent.is_dir():
        raise InputError(f"--log_path {path}: its folder {path.parent} does not exist; create it or pass an "
                         "existing folder")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"--log_path {path} cannot be written; pass a writable folder or file")


def check_args(args: argparse.Namespace) -> None:
    for name, low in (("nsample", 1), ("batch_size", 1), ("N", 1), ("n_past", 1), ("n_future", 1),
                      ("chunk_size", 1), ("num_gifs", 0), ("num_threads", 0), ("event_window", 1)):
        if getattr(args, name) < low:
            raise InputError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if not args.data_range > 0:
        raise InputError(f"--data_range must be > 0, got {args.data_range}")


def check_model_fits_data(cfg, info: dict[str, Any], ckpt_path: Path, data_root: str, seq_len: int) -> None:
    """Image size, channels and audio shape of the checkpoint against the data; clip length."""
    where = f"checkpoint {ckpt_path} vs --data_root {data_root}"
    if info.get("layout") != "legacy":  # the legacy loader resizes; the .npy layout never does
        if info["image_size"] != cfg.image_width or info["channels"] != cfg.channels:
            raise InputError(f"{where}: the model takes {cfg.channels}x{cfg.image_width}x{cfg.image_width} frames, "
                             f"the data holds {info['channels']}x{info['image_size']}x{info['image_size']}; "
                             "evaluate on data of the size it was trained on")
    if cfg.use_audio and tuple(info["audio_shape"]) != tuple(cfg.audio_shape):
        raise InputError(f"{where}: the model reads audio features {list(cfg.audio_shape)}, the data has "
                         f"{list(info['audio_shape'])}; evaluate on data made with the same STFT settings")
    if seq_len > info["num_frames"]:
        raise InputError(f"--n_past + --n_future = {seq_len} but the clips in {data_root} have {info['num_frames']} "
                         f"frames; lower them to fit (the paper: --n_past 5 --n_future 25 on 30-frame clips)")


def check_preset(dataset: str, cfg, ckpt_path: Path) -> None:
    """``--dataset drums|painting``: the checkpoint must take that preset's frames."""
    want = PRESETS.get(dataset)
    if want and (cfg.image_width, cfg.channels) != (want["image_width"], want["channels"]):
        raise InputError(f"--dataset {dataset} takes {want['channels']}x{want['image_width']}x{want['image_width']} "
                         f"frames but checkpoint {ckpt_path} was trained on "
                         f"{cfg.channels}x{cfg.image_width}x{cfg.image_width}; drop --dataset or use a matching checkpoint")


# ---------------------------------------------------------------------------- noise
def clip_generator(seed: int, clip: int, stream: int) -> torch.Generator:
    """A CPU generator owned by one clip and one use: the same numbers in any process/batch."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, clip, stream]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def batch_noise(seed: int, clips: list[int], stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal ``[B, *shape]``, row b from clip ``clips[b]``'s own generator.

    A loop over the batch's clips, each a single ``randn`` call: per-clip seeding is what
    makes the result independent of batching and sharding."""
    return torch.stack([torch.randn(shape, generator=clip_generator(seed, c, stream)) for c in clips])


# ------------------------------------------------------------------------------- GIF
# ------------------------------------------------------------------------ evaluation
class Timer:
    """Wall time per named phase (synchronising CUDA so the split is honest)."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


@torch.inference_mode()
def evaluate_batch(model, frames: torch.Tensor, audio: torch.Tensor, clips: list[int], args: argparse.Namespace,
                   timer: Timer) -> dict[str, Any]:
    """Score one batch. frames ``[T, B, C, H, W]``, audio ``[T, B, 1, F, S]`` (time-major, on
    the model's device); ``clips``: their global indices. Returns per-clip arrays (numpy,
    leading dim B) and, for clips below ``--num_gifs``, their GIFs. Samples are generated
    ``--chunk_size // B`` per clip and model call and only their scores are kept (all of
    them only with ``--save_samples``)."""
    n_past, n_future, nsample = args.n_past, args.n_future, args.nsample
    total, batch = n_past + n_future, frames.shape[1]
    device, z = frames.device, model.cfg.z_dim
    gt = frames[n_past:].transpose(0, 1)  # [B, F, C, H, W]
    ctx = frames[:n_past]
    # prior noise of every sample of every clip, for steps 1..T-1
    noise = batch_noise(args.seed, clips, _STREAM_PRIOR, (total - 1, nsample, z))  # [B, T-1, S, z]
    ssim = torch.empty(batch, nsample, n_future, dtype=torch.float64)  # [B, S, F]
    psnr = torch.empty_like(ssim)
    sum_x = torch.zeros(gt.shape, dtype=torch.float64, device=device)  # [B, F, C, H, W] over samples
    sum_sq = torch.zeros(batch, dtype=torch.float64, device=device)
    gif_rows = [b for b, c in enumerate(clips) if c < args.num_gifs]
    gif_pick = {b: torch.randperm(nsample, generator=clip_generator(args.seed, clips[b], _STREAM_GIF))[:_GIF_RANDOM]
                .sort().values.tolist() for b in gif_rows}
    gif_best = {b: (-float("inf"), None) for b in gif_rows}  # running (mean SSIM, sequence [T, C, H, W])
    gif_random: dict[int, dict[int, torch.Tensor]] = {b: {} for b in gif_rows}
    kept = torch.empty(batch, nsample, *frames.shape[:1], *frames.shape[2:]) if args.save_samples else None

    per_call = max(1, args.chunk_size // batch)
    for s0 in range(0, nsample, per_call):
        s1 = min(nsample, s0 + per_call)
        eps = noise[:, :, s0:s1].permute(1, 0, 2, 3).reshape(noise.shape[1], batch * (s1 - s0), z).to(device)
        with timer("sampling"):
            gen = model.sample(ctx, audio, s1 - s0, n_future, eps=eps)
        with timer("scoring"):
            seq = gen.float().clamp_(0, 1).permute(1, 2, 0, 3, 4, 5)  # [B, s, T, C, H, W]
            fut = seq[:, :, n_past:]  # [B, s, F, C, H, W]
            s, p = metrics.score_pairs(gt[:, None].expand_as(fut), fut, ssim_range=args.data_range)
            ssim[:, s0:s1], psnr[:, s0:s1] = s.cpu(), p.cpu()
            fut64 = fut.to(torch.float64)
            sum_x += fut64.sum(1)
            sum_sq += fut64.square().sum(dim=(1, 2, 3, 4, 5))
            if kept is not None:
                kept[:, s0:s1] = seq.cpu()
            for b in gif_rows:
                means = s[b].mean(-1)  # [s]
                k = int(means.argmax())  # first maximum, as the best protocol's argmax
                if float(means[k]) > gif_best[b][0]:
                    gif_best[b] = (float(means[k]), seq[b, k].cpu())
                for j in gif_pick[b]:
                    if s0 <= j < s1:
                        gif_random[b][j] = seq[b, j - s0].cpu()

    post = {}
    if gif_rows:  # the posterior reconstruction is shown in the GIFs only
        with timer("sampling"):
            eps_post = batch_noise(args.seed, [clips[b] for b in gif_rows], _STREAM_POSTERIOR, (total - 1, z))
            rows = torch.as_tensor(gif_rows, device=device)
            rec = model.reconstruct(frames[:, rows], None if audio is None else audio[:, rows],
                                    eps=eps_post.transpose(0, 1).to(device)).float().clamp_(0, 1)  # [T, G, ...]
            post = {b: rec[:, i].cpu() for i, b in enumerate(gif_rows)}
    with timer("scoring"):
        last = frames[n_past - 1][:, None].expand_as(gt)  # [B, F, C, H, W]
        copy_s, copy_p = metrics.score_pairs(gt, last, ssim_range=args.data_range)  # [B, F]
        paper_s, paper_p = metrics.per_clip_paper(ssim, psnr)
        best_s, best_p, best_idx = metrics.per_clip_best(ssim, psnr)
        diversity = (metrics.diversity_from_sums(sum_x, sum_sq, nsample).cpu().numpy() if nsample > 1
                     else np.full(batch, np.nan))
    gifs = {}
    for b in gif_rows:
        panels = [frames[:, b].cpu(), post[b], gif_best[b][1]] + [gif_random[b][j] for j in gif_pick[b]]
        kinds = ["gt", "posterior"] + ["sample"] * (len(panels) - 2)
        gifs[clips[b]] = framed_row(panels, [gif_colours(total, n_past, k) for k in kinds])
    result = {
        "clip": np.asarray(clips, dtype=np.int64),
        "paper_ssim": paper_s, "paper_psnr": paper_p, "best_ssim": best_s, "best_psnr": best_p,
        "best_index": best_idx,
        "copy_ssim": copy_s.cpu().numpy(), "copy_psnr": copy_p.cpu().numpy(),
        "diversity": diversity, "gifs": gifs,
    }
    if kept is not None:
        result["gt"] = frames.transpose(0, 1).float().cpu().numpy()  # [B, T, C, H, W]
        result["samples"] = kept.numpy()  # [B, S, T, C, H, W]
    return result


class SwappedAudio(torch.utils.data.Dataset):
    """Clip ``i``'s frames with clip ``source[i]``'s audio (``--shuffle_audio``)."""

    def __init__(self, base: torch.utils.data.Dataset, source: np.ndarray):
        self.base, self.source = base, source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base[index][0], self.base[int(self.source[index])][1]


class Stopped(Exception):
    """A SIGTERM/SIGINT stopped the evaluation between two batches (finished batches are kept)."""


class BatchStore:
    """Finished batches of one evaluation, kept in ``<log_dir>/.partial/`` until it completes.

    Every batch's per-clip results are written atomically as one ``.npz`` (numbers, GIF
    frames; no pickles) when it finishes; the same command run again loads them instead of
    recomputing. Every clip draws its noise from its own generator, so a resumed
    evaluation gives the numbers of an uninterrupted one. ``fingerprint`` (checkpoint,
    data, every setting that changes a number) must match, else the stale batches are
    discarded, saying so.
    """

    def __init__(self, folder: Path, fingerprint: dict[str, Any], rank: int, world: int):
        self.folder = folder
        if rank == 0:
            fp_path = folder / "fingerprint.json"
            if folder.is_dir():
                old = json.loads(fp_path.read_text()) if fp_path.is_file() else None
                if old != fingerprint:
                    print(f"{folder}: finished batches of a different evaluation; starting afresh")
                    shutil.rmtree(folder)
                else:
                    done = len(list(folder.glob("*.npz")))
                    if done:
                        print(f"{folder}: continuing after {done} finished batches")
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(fp_path, fingerprint)
        if world > 1:
            torch.distributed.barrier()

    def _path(self, tag: str, clips: list[int]) -> Path:
        return self.folder / f"{tag}_{clips[0]:06d}_{clips[-1]:06d}.npz"

    def load(self, tag: str, clips: list[int]) -> dict[str, Any] | None:
        path = self._path(tag, clips)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):  # written atomically, so only an outside hand breaks one
            print(f"{path} is unreadable; scoring that batch again")
            return None
        gifs = {int(k[4:]): arrays.pop(k) for k in list(arrays) if k.startswith("gif_")}
        return {**arrays, "gifs": gifs}

    def save(self, tag: str, clips: list[int], result: dict[str, Any]) -> None:
        arrays = {k: v for k, v in result.items() if k != "gifs"}
        arrays.update({f"gif_{c}": g for c, g in result["gifs"].items()})
        with atomic_file(self._path(tag, clips)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    def finish(self, rank: int) -> None:
        if rank == 0:
            shutil.rmtree(self.folder, ignore_errors=True)


def score_split(model, dataset, mine: list[list[int]], args: argparse.Namespace, timer: Timer, device: torch.device,
                world: int, desc: str, rank: int, store: BatchStore | None = None, tag: str = "main",
                stop: Any = None) -> dict[str, Any]:
    """Evaluate this process's batches of clip indices ``mine``; all processes' results merged, in clip order.

    With a ``store``, finished batches are loaded instead of recomputed and new ones saved;
    a requested ``stop`` (``utils.StopSignals``, one process only) raises :class:`Stopped` between batches."""
    done = {} if store is None else {i: store.load(tag, c) for i, c in enumerate(mine)}
    parts = [p for p in done.values() if p is not None]
    todo = [c for i, c in enumerate(mine) if done.get(i) is None]
    workers = training.cap_workers(args.num_threads, world, say=False)
    loader = DataLoader(dataset, batch_sampler=todo, num_workers=workers) if todo else []
    with tqdm(total=len(mine), initial=len(parts), desc=desc, unit="batch", disable=rank != 0) as bar:
        for clips, (frames, audio) in zip(todo, loader):  # the bar closes on an error too
            if stop is not None and stop.requested:
                raise Stopped
            frames, audio = training.to_time_major((frames, audio), device)
            part = evaluate_batch(model, frames, audio, clips, args, timer)
            if store is not None:
                store.save(tag, clips, part)
            parts.append(part)
            bar.update(1)
    if world > 1:
        gathered: list[list[dict[str, Any]] | None] = [None] * world
        torch.distributed.all_gather_object(gathered, parts)
        parts = [p for rank_parts in gathered for p in rank_parts]
    return merge(parts)


def fingerprint(args: argparse.Namespace, ckpt_path: Path, data_root: str) -> dict[str, Any]:
    """What an evaluation's finished batches depend on: the checkpoint file, the data and every number-changing flag."""
    st = ckpt_path.stat()
    keep = ("n_past", "n_future", "nsample", "N", "batch_size", "seed", "data_range", "chunk_size", "num_gifs",
            "save_samples", "shuffle_audio")
    return {"checkpoint": str(ckpt_path.resolve()), "checkpoint_size": st.st_size, "checkpoint_mtime_ns": st.st_mtime_ns,
            "data_root": str(Path(data_root).resolve()), **{k: getattr(args, k) for k in keep}}


def read_events(data_root: str, info: dict[str, Any], num_clips: int):
    """``(bounces, blocks)`` of the test split when the dataset carries them, else None."""
    if info.get("layout") != "m3so":
        return None
    from data.m3so import read_events as read

    return read(data_root, "test", num_clips)


def event_summary(res: dict[str, Any], masks: dict[str, np.ndarray], protocols: list[str],
                  window: int) -> dict[str, Any]:
    """Event-aligned means (:func:`metrics.masked_means`) for the model under each protocol and for copy-last-frame."""
    return {"window": window,
            "model": {proto: metrics.masked_means(res[f"{proto}_ssim"], res[f"{proto}_psnr"], masks)
                      for proto in protocols},
            "copy_last_frame": metrics.masked_means(res["copy_ssim"], res["copy_psnr"], masks)}


def shuffle_summary(summary: dict[str, Any], shuffled: dict[str, Any] | None, protocols: list[str]) -> dict[str, Any]:
    """Headline numbers with swapped audio and the drop (matched minus swapped). ``shuffled`` None: the
    model reads no audio, so the numbers are the matched ones and the drop is zero by construction."""
    out: dict[str, Any] = {"by_construction": shuffled is None}
    for proto in protocols:
        out[proto] = (summary[proto] if shuffled is None
                      else metrics.summarise(shuffled[f"{proto}_ssim"], shuffled[f"{proto}_psnr"]))
    out["drop"] = {proto: {m: summary[proto][m] - out[proto][m] for m in ("ssim", "psnr")} for proto in protocols}
    return out


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-batch (and per-rank) results -> one dict in clip order."""
    parts = [p for p in parts if len(p["clip"])]
    merged: dict[str, Any] = {"gifs": {}}
    for p in parts:
        merged["gifs"].update(p["gifs"])
    order = np.argsort(np.concatenate([p["clip"] for p in parts]), kind="stable")
    for key in parts[0]:
        if key != "gifs":
            merged[key] = np.concatenate([p[key] for p in parts])[order]
    return merged


# --------------------------------------------------------------------------- outputs
def summarise(res: dict[str, Any], protocols: list[str]) -> dict[str, Any]:
    """metrics.json's numbers from the per-clip arrays."""
    out: dict[str, Any] = {}
    for proto in protocols:
        out[proto] = metrics.summarise(res[f"{proto}_ssim"], res[f"{proto}_psnr"])
    # the baseline is one deterministic "sample": both protocols give the same numbers
    out["copy_last_frame"] = {proto: metrics.summarise(res["copy_ssim"], res["copy_psnr"]) for proto in protocols}
    div = res["diversity"]
    out["diversity"] = None if np.isnan(div).any() else float(div.mean())
    return out


def write_csv(path: Path, summary: dict[str, Any], protocols: list[str], n_past: int) -> None:
    """One row per future frame: the model's and the baselines' SSIM/PSNR under each protocol."""
    cols = {}
    for proto in protocols:
        for who, block in (("model", summary[proto]), ("copy_last_frame", summary["copy_last_frame"][proto])):
            cols[f"{who}_{proto}_ssim"] = block["ssim_per_frame"]
            cols[f"{who}_{proto}_psnr"] = block["psnr_per_frame"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "frame", *cols])
    for i in range(len(next(iter(cols.values())))):
        writer.writerow([i + 1, n_past + i, *(f"{v[i]:.6f}" for v in cols.values())])
    atomic_write_text(path, buf.getvalue())


def plot_curves(path: Path, summary: dict[str, Any], protocols: list[str], n_past: int, title: str) -> None:
    """SSIM and PSNR per future frame: model vs copy-last-frame (and shuffled audio), per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, len(protocols), figsize=(5.5 * len(protocols), 7), squeeze=False)
    for j, proto in enumerate(protocols):
        for i, metric in enumerate(("ssim", "psnr")):
            ax = axes[i, j]
            key = f"{metric}_per_frame"
            steps = np.arange(n_past, n_past + len(summary[proto][key]))
            ax.plot(steps, summary[proto][key], "o-", ms=3, label="Sound2Sight (samples)")
            ax.plot(steps, summary["copy_last_frame"][proto][key], "s--", ms=3, label="copy last frame")
            if "audio_shuffled" in summary:
                ax.plot(steps, summary["audio_shuffled"][proto][key], ":", label="Sound2Sight, shuffled audio")
            ax.set_title(f"{metric.upper()} - {proto} protocol")
            ax.set_xlabel("frame index")
            ax.set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_events(path: Path, summary: dict[str, Any], proto: str) -> None:
    """Bars per event group: the model (``proto`` protocol), copy-last-frame and, if scored, shuffled audio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = summary["events"]
    series = [("Sound2Sight", ev["model"][proto]), ("copy last frame", ev["copy_last_frame"])]
    if "events" in summary.get("audio_shuffled", {}):
        series.append(("shuffled audio", summary["audio_shuffled"]["events"][proto]))
    groups = [g for g in metrics.EVENT_GROUPS if ev["copy_last_frame"][g]["frames"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    width = 0.8 / len(series)
    for ax, metric in zip(axes, ("ssim", "psnr")):
        for i, (label, block) in enumerate(series):
            ax.bar(np.arange(len(groups)) + i * width, [block[g][metric] for g in groups], width, label=label)
        ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2)
        ax.set_xticklabels([f"{g.replace('_', ' ')}\n({ev['copy_last_frame'][g]['frames']} frames)" for g in groups],
                           fontsize=7)
        ax.set_title(f"{metric.upper()} by event ({proto} protocol, window {ev['window']})")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def headline(m: dict[str, Any], protocols: list[str]) -> str:
    parts = [f"clips={m['num_clips']} nsample={m['nsample']} n_past={m['n_past']} n_future={m['n_future']}"]
    for proto in protocols:
        base = m["copy_last_frame"][proto]
        parts.append(f"{proto}: SSIM {m[proto]['ssim']:.4f} PSNR {m[proto]['psnr']:.2f} "
                     f"(copy-last {base['ssim']:.4f} / {base['psnr']:.2f})")
    if "audio_shuffled" in m:
        drop = m["audio_shuffled"]["drop"]["paper" if "paper" in protocols else protocols[0]]
        parts.append(f"shuffled audio costs SSIM {drop['ssim']:.4f} PSNR {drop['psnr']:.2f}")
    if m["diversity"] is not None:
        parts.append(f"diversity {m['diversity']:.5f}")
    return " | ".join(parts)


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the evaluation; returns metrics.json's content (plus ``timing``) on every rank."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(args)
    protocols = list(PROTOCOLS) if args.protocol == "both" else [args.protocol]
    ckpt_path = resolve_checkpoint(args.model_path, args.model_epoch)
    rank, world, device = training.setup_distributed(args.device)
    try:
        return _evaluate(args, protocols, ckpt_path, rank, world, device, parser)
    finally:
        training.cleanup_distributed()


def _evaluate(args, protocols, ckpt_path, rank, world, device, parser):

    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    model, ckpt = load_model(ckpt_path, map_location=device)
    model.eval()
    ckpt_args = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
    data_root = resolve_data_root(args.data_root, ckpt_args, parser.get_default("data_root"))
    seq_len = args.n_past + args.n_future
    info = dataset_info(data_root)
    check_model_fits_data(model.cfg, info, ckpt_path, data_root, seq_len)
    check_preset(args.dataset, model.cfg, ckpt_path)
    log_dir = Path(args.log_dir) if args.log_dir else default_log_dir(ckpt_path)
    if rank == 0:
        check_writable(log_dir)
        if args.log_path:
            check_log_path(Path(args.log_path))
    # one evaluation per output folder (rank 0 writes it)
    with RunLock(log_dir, "evaluation") if rank == 0 else contextlib.nullcontext():
        return _evaluate_into(args, protocols, ckpt_path, rank, world, device, model, ckpt, data_root, seq_len,
                              info, log_dir, t_start)


def _evaluate_into(args, protocols, ckpt_path, rank, world, device, model, ckpt, data_root, seq_len, info, log_dir,
                   t_start):
    dataset = open_dataset(data_root, "test", seq_len, image_width=model.cfg.image_width, channels=model.cfg.channels)
    num_clips = min(args.N, len(dataset))
    if rank == 0 and num_clips < args.N:
        print(f"--N {args.N}: the test split of {data_root} has {len(dataset)} clips; evaluating all {num_clips}")
    # Batches are fixed globally (clip order), then dealt round-robin to the processes.
    batches = [list(range(i, min(i + args.batch_size, num_clips))) for i in range(0, num_clips, args.batch_size)]
    mine = batches[rank::world]
    timer = Timer(device)
    store = BatchStore(log_dir / ".partial", fingerprint(args, ckpt_path, data_root), rank, world)
    # Under torchrun the processes would have to agree on a stop; there the signals keep their
    # default action (finished batches are on disk either way).
    with timer("total"), (StopSignals() if world == 1 else contextlib.nullcontext()) as stop:
        try:
            res = score_split(model, dataset, mine, args, timer, device, world, "evaluating", rank, store, "main", stop)
            shuffled = None
            if args.shuffle_audio and model.cfg.use_audio:
                swapped = SwappedAudio(dataset, metrics.derangement(num_clips, args.seed))
                plain = argparse.Namespace(**{**vars(args), "num_gifs": 0, "save_samples": False})
                shuffled = score_split(model, swapped, mine, plain, timer, device, world, "shuffled audio", rank,
                                       store, "shuffled", stop)
        except Stopped:
            if rank == 0:
                print(f"stopped by {signal.Signals(stop.requested).name}; finished batches are kept in "
                      f"{store.folder}. Run the same command again to continue.", file=sys.stderr)
            raise SystemExit(128 + stop.requested) from None
    summary = summarise(res, protocols)
    events = read_events(data_root, info, len(dataset))
    if events is not None:
        masks = metrics.event_masks(events[0][:num_clips], None if events[1] is None else events[1][:num_clips],
                                    args.n_past, args.n_future, args.event_window)
        summary["events"] = event_summary(res, masks, protocols, args.event_window)
    if args.shuffle_audio:
        summary["audio_shuffled"] = shuffle_summary(summary, shuffled, protocols)
        if shuffled is not None and events is not None:
            summary["audio_shuffled"]["events"] = event_summary(shuffled, masks, protocols, args.event_window)["model"]
    result = {
        **summary,
        "num_clips": int(num_clips), "nsample": args.nsample, "n_past": args.n_past, "n_future": args.n_future,
        "checkpoint": str(ckpt_path), "model_epoch": ckpt.get("epoch"), "use_audio": bool(model.cfg.use_audio),
        "data_root": str(data_root), "data_range": args.data_range, "psnr_data_range": metrics.PSNR_DATA_RANGE,
        "psnr_cap_db": metrics.PSNR_CAP_DB, "seed": args.seed, "protocols": protocols, "world_size": world,
        "timing": {k: round(v, 3) for k, v in timer.seconds.items()},
    }
    if rank == 0:
        write_outputs(log_dir, result, res, protocols, args)
    store.finish(rank)
    if rank == 0:
        line = headline(result, protocols)
        print(line)
        print(f"wrote {log_dir}/ (metrics.json, metrics.csv, curves.png, gifs/"
              + (", samples.npz)" if args.save_samples else ")"))
        if args.log_path:
            write_log_path(Path(args.log_path), result, line, ckpt_path, data_root, args.model_epoch)
    # the returned copy also counts loading and writing
    return {**result, "timing": {**result["timing"], "all": round(time.perf_counter() - t_start, 3)}}


def write_log_path(log_path: Path, result: dict[str, Any], line: str, ckpt_path: Path, data_root: str,
                   label: int | None) -> None:
    """``--log_path``: a folder gets ``results_epoch_<label>.{txt,json}`` (label: ``--model_epoch``, else
    the checkpoint's epoch); anything else is a file that gets one headline line appended."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"{stamp} {ckpt_path} {data_root} {line}\n"
    if log_path.is_dir() or str(log_path).endswith(("/", "\\")):
        tag = label if label is not None else result.get("model_epoch")
        name = f"results_epoch_{tag if tag is not None else 'unknown'}"
        atomic_write_text(log_path / f"{name}.txt", text)
        atomic_write_json(log_path / f"{name}.json", {k: v for k, v in result.items() if k != "timing"})
        return
    try:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        raise InputError(f"--log_path {log_path} cannot be written ({err.strerror or err}); pass a writable "
                         "folder or file") from None


def write_tensorboard(folder: Path, result: dict[str, Any], protocols: list[str]) -> None:
    """Headline numbers (step = the checkpoint's epoch) and per-frame curves (step = frame index)."""
    step = int(result.get("model_epoch") or 0)
    with training.tensorboard_writer(folder) as tb:
        for proto in protocols:
            for who, block in (("model", result[proto]), ("copy_last_frame", result["copy_last_frame"][proto])):
                for m in ("ssim", "psnr"):
                    tb.add_scalar(f"eval/{proto}/{who}_{m}", block[m], step)
                    for i, v in enumerate(block[f"{m}_per_frame"]):
                        tb.add_scalar(f"eval_per_frame/{proto}/{who}_{m}", v, result["n_past"] + i)
        if "audio_shuffled" in result:
            for m in ("ssim", "psnr"):
                tb.add_scalar(f"eval/audio_shuffle_drop_{m}", result["audio_shuffled"]["drop"][protocols[0]][m], step)


def write_outputs(log_dir: Path, result: dict[str, Any], res: dict[str, Any], protocols: list[str],
                  args: argparse.Namespace) -> None:
    atomic_write_json(log_dir / "metrics.json", result)
    write_csv(log_dir / "metrics.csv", result, protocols, args.n_past)
    plot_curves(log_dir / "curves.png", result, protocols, args.n_past,
                f"{result['checkpoint']} on {result['data_root']} ({result['num_clips']} clips, "
                f"{result['nsample']} samples)")
    if "events" in result:
        plot_events(log_dir / "events.png", result, protocols[0])
    if not args.no_tensorboard:
        write_tensorboard(log_dir / "tensorboard", result, protocols)
    for clip, grid in sorted(res["gifs"].items()):
        save_gif(log_dir / "gifs" / f"clip_{clip:05d}.gif", grid)
    if args.save_samples:
        with atomic_file(log_dir / "samples.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, gt=res["gt"].astype(np.float32), samples=res["samples"].astype(np.float32),
                         clip_index=res["clip"])


if __name__ == "__main__":
    run_cli(main)
