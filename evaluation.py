"""Evaluation as a library: sample futures, score them by metric name, summarise, write reports.

``generate_sound2sight.py`` (the CLI), the ``--demo`` of ``train_sound2sight.py`` and the
training's validation all call this module; nothing here parses flags.

Protocol (as released): for every test clip, ``nsample`` futures are sampled from the
learned prior given ``n_past`` ground-truth frames and the whole clip's audio; every future
frame of every sample is scored against the ground truth with each metric of
``metrics`` (:data:`metrics.PAIR_METRICS`; SSIM and PSNR by default, equal to
scikit-image as the release called it). Reported, for every metric:

* ``paper``: per clip and frame the best over samples (each metric separately), then the
  mean over clips -- what the paper reported;
* ``best``: per clip the ONE sample with the best mean SSIM, its whole sequence;
* every baseline of :data:`baselines.BASELINES` (deterministic predictors, e.g.
  ``copy_last_frame``: the last context frame repeated) under its own name, with one entry
  per protocol (the same numbers under each);
* set-level metrics (:data:`metrics.SET_METRICS`: ``diversity``), per clip then averaged;
* ``events`` (datasets with ``bounces.npy`` / ``blocks.npy``): the same numbers over the
  future frames within ``event_window`` frames after a wall bounce, after a block bounce,
  and before / after the block appears, for the model and for every baseline;
* ``audio_shuffled``: the same model scored again, same noise, with each clip's audio
  replaced by another test clip's (a fixed derangement), and the drop that causes. A
  model trained without audio ignores it: its drop is zero by construction (not re-run).
* ``prior``: whether the learned prior reads the sound (:mod:`prior_monitor`: its mean's
  spread over clips, its change under swapped audio, sigma, KL) on the first
  :data:`PRIOR_CLIPS` test clips.

Every clip draws its noise from its own generator, seeded from (``seed``, clip index), so
the numbers do not depend on batching, on sharding over ``torchrun`` processes, or on
resuming an interrupted evaluation (:class:`BatchStore`).

Per-clip results are typed records: :func:`evaluate_batch` returns a :class:`BatchResult`
(one :class:`PredictorScores` for the model and for each baseline, plus the model's
per-sample scores, best-sample index, set metrics and GIFs), merged in clip order by
:meth:`BatchResult.concat` and stored or exchanged between processes as plain arrays
(:meth:`BatchResult.to_arrays` / :meth:`BatchResult.from_arrays`).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import methods
import metrics
import prior_monitor
from baselines import BASELINES
import runtime
from errors import InputError
from files import atomic_file, atomic_write_bytes, atomic_write_json, atomic_write_text
from html_report import write_html_report
from media import framed_row, gif_colours, key_strip, label_columns, save_gif, write_video
from runlock import RunLock
from signals import StopSignals

# Noise streams of one clip: independent generators, so e.g. changing num_gifs or
# skipping the posterior never shifts the prior samples.
_STREAM_PRIOR, _STREAM_POSTERIOR, _STREAM_GIF = 0, 1, 2
_GIF_RANDOM = 3  # random samples shown per GIF beside the best one
PRIOR_CLIPS = 64  # test clips for the prior's figures (prior_monitor), as the training's validation batch
#: Frames the paper generated and scored after the context (5 + 25 on 30-frame clips): the
#: most :func:`default_n_future` gives, so longer clips are scored over the published horizon.
RELEASE_N_FUTURE = 25


def default_n_future(num_frames: int, n_past: int) -> int:
    """Frames to generate and score when none are asked for: the clip's frames after the
    ``n_past`` context, at most :data:`RELEASE_N_FUTURE`."""
    return max(0, min(num_frames - n_past, RELEASE_N_FUTURE))


#: metrics.json's (and its ``events``') own keys, which no baseline may be named.
RESERVED_NAMES = frozenset({*metrics.PROTOCOLS, *metrics.SET_METRICS, "model", "window", "events", "audio_shuffled",
                            "prior", "baselines", "num_clips", "nsample", "n_past", "n_future", "metrics", "protocols",
                            "seed", "data_range", "psnr_data_range", "psnr_cap_db", "use_audio", "world_size",
                            "checkpoint", "model_epoch", "model_iterations", "data_root", "timing"})


# (the settings' field "metrics" shadows the module inside the class body)
_DEFAULT_METRICS, _ALL_PROTOCOLS, _SSIM_RANGE = metrics.DEFAULT_METRICS, tuple(metrics.PROTOCOLS), metrics.SSIM_DATA_RANGE


@dataclass(frozen=True)
class EvalSettings:
    """Everything that decides an evaluation's numbers (and, last, how it runs)."""

    n_past: int
    n_future: int
    nsample: int
    seed: int = 1
    num_clips: int | None = None      # at most this many test clips (None: all)
    batch_size: int = 100
    metrics: tuple[str, ...] = _DEFAULT_METRICS
    protocols: tuple[str, ...] = _ALL_PROTOCOLS
    data_range: float = _SSIM_RANGE  # SSIM's; PSNR always uses metrics.PSNR_DATA_RANGE
    chunk_size: int = 2000            # clip x sample sequences per model call (memory bound)
    num_gifs: int = 0                 # GIFs for the clips with index below this
    save_samples: bool = False        # keep every sample (samples.npz)
    shuffle_audio: bool = False
    event_window: int = 3
    baselines: tuple[str, ...] = tuple(BASELINES)  # scored beside the model (baselines.BASELINES)
    num_workers: int = 0              # DataLoader workers (not part of the numbers)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", metrics.check_metrics(self.metrics))
        unknown = [p for p in self.protocols if p not in metrics.PROTOCOLS]
        if unknown or not self.protocols:
            raise ValueError(f"unknown protocols {unknown}; choose from {list(metrics.PROTOCOLS)}")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {list(BASELINES)}")
        clash = [b for b in self.baselines if b in RESERVED_NAMES]
        if clash:  # a baseline's block sits beside these keys in metrics.json and its events
            raise ValueError(f"baselines {clash} are named as a key of metrics.json; rename them")
        if "best" in self.protocols and metrics.SELECTION_METRIC not in self.metrics:
            raise ValueError(f"the best-sample protocol selects by {metrics.SELECTION_METRIC}; include it in metrics")
        for name, low in (("nsample", 1), ("batch_size", 1), ("n_past", 1), ("n_future", 1), ("chunk_size", 1),
                          ("num_gifs", 0), ("num_workers", 0), ("event_window", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.num_clips is not None and self.num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {self.num_clips}")
        if not self.data_range > 0:
            raise ValueError(f"data_range must be > 0, got {self.data_range}")

    @property
    def score_settings(self) -> metrics.ScoreSettings:
        return metrics.ScoreSettings(ssim_range=self.data_range)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change a number (or a file) of the evaluation."""
        d = dataclasses.asdict(self)
        d.pop("num_workers")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


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


# ------------------------------------------------------------------- typed results
#: The model's entry in :attr:`BatchResult.predictors` (a baseline may not take the name: RESERVED_NAMES).
MODEL = "model"


@dataclass
class PredictorScores:
    """One predictor's per-clip, per-future-frame scores under each protocol.

    ``by_protocol[protocol][metric]``: ``[B, F]`` (float64). The model's differ by protocol
    (best over samples per frame, or the best sample's sequence); a baseline makes one
    deterministic prediction, so each protocol holds the same numbers (:meth:`deterministic`).
    """

    by_protocol: dict[str, dict[str, np.ndarray]]  # {protocol: {metric: [B, F]}}

    @classmethod
    def deterministic(cls, scores: dict[str, np.ndarray], protocols: Sequence[str]) -> "PredictorScores":
        """The scores ``{metric: [B, F]}`` of a single prediction, the same under every protocol."""
        return cls({proto: scores for proto in protocols})

    def under(self, protocol: str) -> dict[str, np.ndarray]:
        """``{metric: [B, F]}`` under ``protocol``."""
        return self.by_protocol[protocol]

    @classmethod
    def concat(cls, parts: Sequence["PredictorScores"], order: np.ndarray) -> "PredictorScores":
        """The parts' clips one after another, then reordered by ``order`` (indices into the concatenation)."""
        first = parts[0].by_protocol
        return cls({proto: {m: np.concatenate([p.by_protocol[proto][m] for p in parts])[order] for m in first[proto]}
                    for proto in first})


@dataclass
class BatchResult:
    """The per-clip results of some clips (one batch, or merged in clip order): what every
    report is made from, what :class:`BatchStore` keeps and what torchrun processes exchange.

    ``predictors`` holds the model under :data:`MODEL` first, then every baseline under its
    :data:`baselines.BASELINES` name, all scored on the same clips and future frames. The
    other fields belong to the model's samples alone.
    """

    clips: np.ndarray                                  # [B] int64 global clip indices
    predictors: dict[str, PredictorScores]             # MODEL, then each baseline by name
    sample_scores: dict[str, np.ndarray]               # {metric: [B, S]} each sample's mean over the future frames
    set_metrics: dict[str, np.ndarray]                 # {name: [B]} every SET_METRICS entry, NaN where not computable
    gifs: dict[int, np.ndarray]                        # {clip: uint8 [T, H', W', 3]} for clips below num_gifs
    best_index: np.ndarray | None = None               # [B] the best-sample protocol's sample, when that protocol ran
    gt: np.ndarray | None = None                       # [B, T, C, H, W] with save_samples
    samples: np.ndarray | None = None                  # [B, S, T, C, H, W] with save_samples

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def model(self) -> PredictorScores:
        return self.predictors[MODEL]

    @classmethod
    def concat(cls, parts: Sequence["BatchResult"]) -> "BatchResult":
        """Per-batch (and per-process) results -> one result in clip order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no clips to merge")
        order = np.argsort(np.concatenate([p.clips for p in parts]), kind="stable")

        def cat(arrays: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(arrays)[order]

        first = parts[0]
        optional = {name: (None if getattr(first, name) is None else cat([getattr(p, name) for p in parts]))
                    for name in ("best_index", "gt", "samples")}
        return cls(clips=cat([p.clips for p in parts]),
                   predictors={who: PredictorScores.concat([p.predictors[who] for p in parts], order)
                               for who in first.predictors},
                   sample_scores={m: cat([p.sample_scores[m] for p in parts]) for m in first.sample_scores},
                   set_metrics={n: cat([p.set_metrics[n] for p in parts]) for n in first.set_metrics},
                   gifs={c: g for p in parts for c, g in p.gifs.items()}, **optional)

    # Flat arrays for np.savez (no pickles) and for gathering across processes. The names are
    # paths of the fields above ("predictors/<who>/<protocol>/<metric>", ...); only
    # to_arrays and from_arrays read them.
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as ``{path: array}``, the inverse of :meth:`from_arrays`."""
        out = {"clips": self.clips}
        for who, scores in self.predictors.items():
            for proto, by_metric in scores.by_protocol.items():
                out.update({f"predictors/{who}/{proto}/{m}": v for m, v in by_metric.items()})
        out.update({f"sample_scores/{m}": v for m, v in self.sample_scores.items()})
        out.update({f"set_metrics/{n}": v for n, v in self.set_metrics.items()})
        out.update({f"gifs/{c}": g for c, g in self.gifs.items()})
        out.update({name: getattr(self, name) for name in ("best_index", "gt", "samples")
                    if getattr(self, name) is not None})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "BatchResult":
        """The result :meth:`to_arrays` flattened; ValueError when ``arrays`` is not such a flattening."""
        fields: dict[str, Any] = {"predictors": {}, "sample_scores": {}, "set_metrics": {}, "gifs": {}}
        for path, value in arrays.items():
            head, *rest = path.split("/")
            if head == "predictors" and len(rest) == 3:
                who, proto, m = rest
                fields["predictors"].setdefault(who, {}).setdefault(proto, {})[m] = value
            elif head in ("sample_scores", "set_metrics") and len(rest) == 1:
                fields[head][rest[0]] = value
            elif head == "gifs" and len(rest) == 1:
                fields["gifs"][int(rest[0])] = value
            elif head in ("clips", "best_index", "gt", "samples") and not rest:
                fields[head] = value
            else:
                raise ValueError(f"not a field of BatchResult: {path!r}")
        if "clips" not in fields or MODEL not in fields["predictors"]:
            raise ValueError("a BatchResult needs its clips and the model's scores")
        fields["predictors"] = {who: PredictorScores(by) for who, by in fields["predictors"].items()}
        return cls(**fields)


# ------------------------------------------------------------------------- one batch
@dataclass
class _Futures:
    """What :func:`sample_and_score` keeps of the model's samples (they are not kept whole
    unless asked): every sample's scores, the set metrics, the samples a GIF shows."""

    scores: dict[str, torch.Tensor]              # {metric: float64 [B, S, F]}
    set_metrics: dict[str, np.ndarray]           # {name: [B]}
    gif_best: dict[int, torch.Tensor]            # {row b: [T, C, H, W]} the sample with the best mean selection score
    gif_random: dict[int, list[torch.Tensor]]    # {row b: [_GIF_RANDOM x [T, C, H, W]]} random samples, index order
    kept: torch.Tensor | None                    # [B, S, T, C, H, W] with save_samples


def gif_rows(clips: Sequence[int], settings: EvalSettings) -> list[int]:
    """The batch rows whose clips get a GIF (global index below ``num_gifs``)."""
    return [b for b, c in enumerate(clips) if c < settings.num_gifs]


def sample_and_score(model, frames: torch.Tensor, audio: torch.Tensor | None, clips: list[int],
                     settings: EvalSettings, timer: Timer, progress: Callable[[int], Any] | None = None) -> _Futures:
    """Sample ``nsample`` futures per clip from the prior (``chunk_size // B`` per clip and
    model call) and score each against the ground truth, keeping only the scores, the set
    metrics' running state and the samples the GIFs show. ``progress(n)`` is told after each
    model call how many clip x sample sequences it finished (a progress bar that moves within a batch).

    frames ``[T, B, C, H, W]``, audio ``[T, B, 1, F, S]`` with T = n_past + n_future."""
    st = settings
    n_past, n_future, nsample = st.n_past, st.n_future, st.nsample
    total, batch = frames.shape[0], frames.shape[1]
    device, z = frames.device, model.noise_dim  # z 0: a deterministic method, empty noise
    gt = frames[n_past:].transpose(0, 1)  # [B, F, C, H, W]
    ctx = frames[:n_past]
    noise = batch_noise(st.seed, clips, _STREAM_PRIOR, (total - 1, nsample, z))  # [B, T-1, S, z] prior noise
    scores = {m: torch.empty(batch, nsample, n_future, dtype=torch.float64) for m in st.metrics}  # [B, S, F] each
    set_metrics = {name: m for name, m in metrics.SET_METRICS.items() if nsample >= m.min_samples}
    set_state = {name: m.start(gt) for name, m in set_metrics.items()}
    rows = gif_rows(clips, st)
    gif_pick = {b: torch.randperm(nsample, generator=clip_generator(st.seed, clips[b], _STREAM_GIF))[:_GIF_RANDOM]
                .sort().values.tolist() for b in rows}
    gif_best = {b: (-float("inf"), None) for b in rows}  # running (mean selection score, sequence [T, C, H, W])
    gif_random: dict[int, dict[int, torch.Tensor]] = {b: {} for b in rows}
    kept = torch.empty(batch, nsample, total, *frames.shape[2:]) if st.save_samples else None
    select = metrics.SELECTION_METRIC if metrics.SELECTION_METRIC in st.metrics else st.metrics[0]
    sign = 1.0 if metrics.PAIR_METRICS[select].higher_is_better else -1.0

    per_call = max(1, st.chunk_size // batch)
    for s0 in range(0, nsample, per_call):
        s1 = min(nsample, s0 + per_call)
        eps = noise[:, :, s0:s1].permute(1, 0, 2, 3).reshape(noise.shape[1], batch * (s1 - s0), z).to(device)
        with timer("sampling"):
            gen = model.sample(ctx, audio, s1 - s0, n_future, eps=eps)
        with timer("scoring"):
            seq = gen.float().clamp_(0, 1).permute(1, 2, 0, 3, 4, 5)  # [B, s, T, C, H, W]
            fut = seq[:, :, n_past:]  # [B, s, F, C, H, W]
            chunk = metrics.score(gt[:, None].expand_as(fut), fut, st.metrics, st.score_settings)
            for m, v in chunk.items():
                scores[m][:, s0:s1] = v.cpu()
            for name, m in set_metrics.items():
                m.update(set_state[name], fut)
            if kept is not None:
                kept[:, s0:s1] = seq.cpu()
            for b in rows:
                means = sign * chunk[select][b].mean(-1)  # [s]
                k = int(means.argmax())  # first maximum, as the best protocol's argmax
                if float(means[k]) > gif_best[b][0]:
                    gif_best[b] = (float(means[k]), seq[b, k].cpu())
                for j in gif_pick[b]:
                    if s0 <= j < s1:
                        gif_random[b][j] = seq[b, j - s0].cpu()
        if progress is not None:
            progress(batch * (s1 - s0))
    with timer("scoring"):
        finished = {name: (m.finish(set_state[name], nsample).cpu().numpy() if name in set_state
                           else np.full(batch, np.nan)) for name, m in metrics.SET_METRICS.items()}
    return _Futures(scores, finished, {b: seq for b, (_, seq) in gif_best.items()},
                    {b: [gif_random[b][j] for j in gif_pick[b]] for b in rows}, kept)


def apply_protocols(scores: dict[str, torch.Tensor], settings: EvalSettings) -> tuple[PredictorScores, np.ndarray | None]:
    """The model's per-clip scores under each protocol from every sample's ``{metric: [B, S, F]}``,
    and the best-sample protocol's chosen sample ``[B]`` (None when that protocol is not run)."""
    by_protocol, best_index = {}, None
    for proto in settings.protocols:
        if proto == "best":
            by_protocol[proto], best_index = metrics.per_clip_best(scores)
        else:
            by_protocol[proto] = metrics.PROTOCOLS[proto](scores)
    return PredictorScores(by_protocol), best_index


def score_baselines(frames: torch.Tensor, settings: EvalSettings) -> dict[str, PredictorScores]:
    """Every baseline of ``settings.baselines`` predicted from the context of ``frames``
    ``[T, B, C, H, W]`` and scored against its future frames, by name."""
    ctx, gt = frames[:settings.n_past], frames[settings.n_past:].transpose(0, 1)  # [n_past, B, ...], [B, F, ...]
    out = {}
    for name in settings.baselines:
        pred = BASELINES[name].predict(ctx, settings.n_future).transpose(0, 1)  # [B, F, C, H, W]
        scores = {m: v.cpu().numpy() for m, v in metrics.score(gt, pred, settings.metrics, settings.score_settings).items()}
        out[name] = PredictorScores.deterministic(scores, settings.protocols)
    return out


def reconstruct_posterior(model, frames: torch.Tensor, audio: torch.Tensor | None, clips: list[int],
                          rows: list[int], settings: EvalSettings) -> dict[int, torch.Tensor]:
    """The posterior row of the GIFs ``{row b: [T, C, H, W]}`` of batch rows ``rows``, as the release's
    generation script drew it (:meth:`Sound2Sight.reconstruct_generated`: the given frames, then the
    predictor fed its own frames with the posterior's z). Shown only: it is not a bound, so it is not scored.
    Empty for a model without one (not a :class:`methods.PosteriorReconstruction`): its GIFs have no such row."""
    if not rows or not isinstance(model, methods.PosteriorReconstruction):
        return {}
    eps = batch_noise(settings.seed, [clips[b] for b in rows], _STREAM_POSTERIOR,
                      (frames.shape[0] - 1, model.noise_dim))
    index = torch.as_tensor(rows, device=frames.device)
    rec = model.reconstruct_generated(frames[:, index], None if audio is None else audio[:, index], settings.n_past,
                                      eps=eps.transpose(0, 1).to(frames.device)).float().clamp_(0, 1)  # [T, G, C, H, W]
    return {b: rec[:, i].cpu() for i, b in enumerate(rows)}


def build_gifs(frames: torch.Tensor, clips: list[int], futures: _Futures, posterior: dict[int, torch.Tensor],
               settings: EvalSettings) -> dict[int, np.ndarray]:
    """``{clip: uint8 grid}``: columns truth | posterior | best sample | random samples, framed and
    labelled; no posterior column where ``posterior`` has no row (a model without one)."""
    total, n_past = frames.shape[0], settings.n_past
    gifs = {}
    for b, best in futures.gif_best.items():
        truth = frames[:, b].float().cpu()  # [T, C, H, W]
        # as the release drew it: given frames first
        shown = [torch.cat([truth[:n_past], posterior[b][n_past:]])] if b in posterior else []
        panels = [truth, *shown, best, *futures.gif_random[b]]
        kinds = ["gt"] + ["posterior"] * len(shown) + ["sample"] * (len(panels) - 1 - len(shown))
        labels = ["truth"] + ["posterior"] * len(shown) + ["best"] + ["random"] * (len(panels) - 2 - len(shown))
        gifs[clips[b]] = key_strip(label_columns(framed_row(panels, [gif_colours(total, n_past, k) for k in kinds]),
                                                 labels))
    return gifs


@torch.inference_mode()
def evaluate_batch(model, frames: torch.Tensor, audio: torch.Tensor | None, clips: list[int], settings: EvalSettings,
                   timer: Timer | None = None, progress: Callable[[int], Any] | None = None) -> BatchResult:
    """Score one batch of clips: the model's samples, every baseline, the GIFs.

    frames ``[T, B, C, H, W]``, audio ``[T, B, 1, F, S]`` (time-major, on the model's
    device, T >= n_past + n_future); ``clips``: their global indices (they pick the noise).
    """
    st, timer = settings, timer or Timer(frames.device)
    total = st.n_past + st.n_future
    frames = frames[:total]
    audio = None if audio is None else audio[:total]
    futures = sample_and_score(model, frames, audio, clips, st, timer, progress)
    with timer("sampling"):
        posterior = reconstruct_posterior(model, frames, audio, clips, gif_rows(clips, st), st)
    with timer("scoring"):
        baseline_scores = score_baselines(frames, st)
        model_scores, best_index = apply_protocols(futures.scores, st)
        sample_scores = {m: v.mean(-1).numpy() for m, v in futures.scores.items()}  # [B, S] each
    kept = futures.kept
    return BatchResult(clips=np.asarray(clips, dtype=np.int64), predictors={MODEL: model_scores, **baseline_scores},
                       sample_scores=sample_scores, set_metrics=futures.set_metrics,
                       gifs=build_gifs(frames, clips, futures, posterior, st), best_index=best_index,
                       gt=None if kept is None else frames.transpose(0, 1).float().cpu().numpy(),  # [B, T, C, H, W]
                       samples=None if kept is None else kept.numpy())  # [B, S, T, C, H, W]


# ------------------------------------------------------------------------ a data set
class SwappedAudio(torch.utils.data.Dataset):
    """Clip ``i``'s frames with clip ``source[i]``'s audio (the audio-shuffle test)."""

    def __init__(self, base: torch.utils.data.Dataset, source: np.ndarray):
        self.base, self.source = base, source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base[index][0], self.base[int(self.source[index])][1]


class Stopped(Exception):
    """A SIGTERM/SIGINT stopped the evaluation between two batches (finished batches are kept)."""


class BatchStore:
    """Finished batches of one evaluation, kept in a folder (``<log_dir>/.partial/``) until it completes.

    Every batch's :class:`BatchResult` is written atomically as one ``.npz``
    (:meth:`BatchResult.to_arrays`: numbers, GIF frames; no pickles) when it finishes; the
    same evaluation run again loads them instead of recomputing. Every clip draws its noise
    from its own generator, so a resumed evaluation gives the numbers of an uninterrupted
    one. ``fingerprint`` (checkpoint, data, every setting that changes a number) and the
    store's :data:`FORMAT` must match, else the stale batches are discarded, saying so.
    """

    #: The layout of the batch files; a folder written in another is discarded, never misread.
    FORMAT = 2

    def __init__(self, folder: Path, fingerprint: dict[str, Any], rank: int = 0, world: int = 1):
        self.folder = folder
        fingerprint = {**fingerprint, "store_format": self.FORMAT}
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

    def load(self, tag: str, clips: list[int]) -> BatchResult | None:
        """The finished batch of ``clips`` (None when not finished, or unreadable)."""
        path = self._path(tag, clips)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return BatchResult.from_arrays({k: z[k] for k in z.files})
        except (OSError, ValueError, EOFError):  # written atomically, so only an outside hand breaks one
            print(f"{path} is unreadable; scoring that batch again")
            return None

    def save(self, tag: str, clips: list[int], result: BatchResult) -> None:
        with atomic_file(self._path(tag, clips)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **result.to_arrays())

    def finish(self, rank: int = 0) -> None:
        if rank == 0:
            shutil.rmtree(self.folder, ignore_errors=True)


def batches_of(num_clips: int, batch_size: int) -> list[list[int]]:
    """The evaluation's batches of clip indices, fixed globally in clip order (processes take every world-th)."""
    return [list(range(i, min(i + batch_size, num_clips))) for i in range(0, num_clips, batch_size)]


def score_dataset(model, dataset, mine: list[list[int]], settings: EvalSettings, device: torch.device, *,
                  timer: Timer | None = None, world: int = 1, rank: int = 0, desc: str = "evaluating",
                  store: BatchStore | None = None, tag: str = "main", stop: Any = None,
                  progress: bool = True) -> BatchResult:
    """Evaluate this process's batches of clip indices ``mine``; all processes' results merged, in clip order.

    With a ``store``, finished batches are loaded instead of recomputed and new ones saved;
    a requested ``stop`` (``signals.StopSignals``, one process only) raises :class:`Stopped` between batches."""
    timer = timer or Timer(device)
    done = {} if store is None else {i: store.load(tag, c) for i, c in enumerate(mine)}
    parts = [p for p in done.values() if p is not None]
    todo = [c for i, c in enumerate(mine) if done.get(i) is None]
    workers = runtime.cap_workers(settings.num_workers, world, say=False)
    loader = DataLoader(dataset, batch_sampler=todo, num_workers=workers) if todo else []
    # the bar counts clip x sample sequences (with a time estimate), so it moves within a batch
    seqs = settings.nsample
    with tqdm(total=sum(map(len, mine)) * seqs, initial=sum(map(len, parts)) * seqs, desc=desc, unit="seq",
              disable=rank != 0 or not progress, smoothing=0.1) as bar:
        for clips, (frames, audio) in zip(todo, loader):  # the bar closes on an error too
            if stop is not None and stop.requested:
                raise Stopped
            frames, audio = runtime.to_time_major((frames, audio), device)
            part = evaluate_batch(model, frames, audio, clips, settings, timer, progress=bar.update)
            if store is not None:
                store.save(tag, clips, part)
            parts.append(part)
    if world > 1:  # exchanged as plain arrays (BatchResult.to_arrays), each process's batches merged first
        mine_arrays = BatchResult.concat(parts).to_arrays() if any(len(p) for p in parts) else None
        gathered: list[dict[str, np.ndarray] | None] = [None] * world
        torch.distributed.all_gather_object(gathered, mine_arrays)
        parts = [BatchResult.from_arrays(a) for a in gathered if a is not None]
    return BatchResult.concat(parts)


# ------------------------------------------------------------------------- summaries
def summarise(res: BatchResult, settings: EvalSettings) -> dict[str, Any]:
    """metrics.json's numbers from the per-clip arrays: each protocol, each baseline under its
    name with an entry per protocol (one deterministic "sample": the same numbers), ``baselines``
    (name -> label), each set metric's mean (None when it could not be computed, e.g.
    diversity of one sample)."""
    out: dict[str, Any] = {proto: metrics.summarise(res.model.under(proto)) for proto in settings.protocols}
    for name in settings.baselines:
        out[name] = {proto: metrics.summarise(res.predictors[name].under(proto)) for proto in settings.protocols}
    out["baselines"] = {name: BASELINES[name].label for name in settings.baselines}
    for name in metrics.SET_METRICS:
        v = res.set_metrics[name]  # [N]
        out[name] = None if np.isnan(v).any() else float(v.mean())
    return out


def event_summary(res: BatchResult, masks: dict[str, np.ndarray], settings: EvalSettings) -> dict[str, Any]:
    """Event-aligned means (:func:`metrics.masked_means`) for the model under each protocol and for
    each baseline (once: the same under every protocol)."""
    return {"window": settings.event_window,
            "model": {proto: metrics.masked_means(res.model.under(proto), masks) for proto in settings.protocols},
            **{name: metrics.masked_means(res.predictors[name].under(settings.protocols[0]), masks)
               for name in settings.baselines}}


def shuffle_summary(summary: dict[str, Any], shuffled: BatchResult | None, settings: EvalSettings) -> dict[str, Any]:
    """Headline numbers with swapped audio and the drop (matched minus swapped, so a positive drop
    means the sound helped, whatever the metric's direction is shown as). ``shuffled`` None: the
    model reads no audio, so the numbers are the matched ones and the drop is zero by construction."""
    out: dict[str, Any] = {"by_construction": shuffled is None}
    for proto in settings.protocols:
        out[proto] = (summary[proto] if shuffled is None
                      else metrics.summarise(shuffled.model.under(proto)))
    out["drop"] = {proto: {m: (summary[proto][m] - out[proto][m]) * (1 if metrics.PAIR_METRICS[m].higher_is_better
                                                                     else -1)
                           for m in settings.metrics} for proto in settings.protocols}
    return out


def events_of(data_root: str, info: dict[str, Any], split_clips: int):
    """``(bounces, blocks)`` of the test split (``split_clips`` clips) when the dataset carries them, else None."""
    if info.get("layout") != "m3so":
        return None
    from data.m3so import read_events

    return read_events(data_root, "test", split_clips)


@dataclass
class Evaluation:
    """What :func:`evaluate` returns: ``summary`` (metrics.json's numbers), ``per_clip`` (every clip's
    results, in clip order) and ``timing`` (seconds per phase)."""

    summary: dict[str, Any]
    per_clip: BatchResult
    timing: dict[str, float]


def evaluate(model, dataset, settings: EvalSettings, device: torch.device, *, rank: int = 0, world: int = 1,
             events: tuple[np.ndarray, np.ndarray | None] | None = None, store: BatchStore | None = None,
             stop: Any = None, progress: bool = True) -> Evaluation:
    """Evaluate ``model`` on the first ``settings.num_clips`` clips of ``dataset`` (time-major
    batches of ``(frames, audio)`` items). Batches are fixed in clip order and dealt round-robin
    to the ``world`` processes; every process gets the merged result. ``events``: the clips'
    ``(bounces, blocks)`` for the event-aligned numbers. Raises :class:`Stopped` when ``stop``
    is requested between two batches (finished ones stay in ``store``)."""
    num_clips = min(settings.num_clips or len(dataset), len(dataset))
    mine = batches_of(num_clips, settings.batch_size)[rank::world]
    timer = Timer(device)
    common = dict(timer=timer, world=world, rank=rank, store=store, stop=stop, progress=progress)
    with timer("total"):
        res = score_dataset(model, dataset, mine, settings, device, desc="evaluating", tag="main", **common)
        shuffled = None
        if settings.shuffle_audio and model.cfg.use_audio:
            swapped = SwappedAudio(dataset, metrics.derangement(num_clips, settings.seed))
            plain = dataclasses.replace(settings, num_gifs=0, save_samples=False)
            shuffled = score_dataset(model, swapped, mine, plain, device, desc="shuffled audio", tag="shuffled",
                                     **common)
    summary = summarise(res, settings)
    with timer("prior"):
        summary["prior"] = prior_figures(model, dataset, num_clips, device)
    if events is not None:
        masks = metrics.event_masks(events[0][:num_clips], None if events[1] is None else events[1][:num_clips],
                                    settings.n_past, settings.n_future, settings.event_window)
        summary["events"] = event_summary(res, masks, settings)
    if settings.shuffle_audio:
        summary["audio_shuffled"] = shuffle_summary(summary, shuffled, settings)
        if shuffled is not None and events is not None:
            summary["audio_shuffled"]["events"] = event_summary(shuffled, masks, settings)["model"]
    summary.update({"num_clips": int(num_clips), "nsample": settings.nsample, "n_past": settings.n_past,
                    "n_future": settings.n_future, "metrics": list(settings.metrics),
                    "protocols": list(settings.protocols), "seed": settings.seed, "data_range": settings.data_range,
                    "psnr_data_range": metrics.PSNR_DATA_RANGE, "psnr_cap_db": metrics.PSNR_CAP_DB,
                    "use_audio": bool(model.cfg.use_audio), "world_size": world})
    return Evaluation(summary, res, {k: round(v, 3) for k, v in timer.seconds.items()})


def prior_figures(model, dataset, num_clips: int, device: torch.device) -> dict[str, float] | None:
    """:func:`prior_monitor.prior_stats` on the first ``min(PRIOR_CLIPS, num_clips)`` clips of ``dataset``
    (None with fewer than 2 clips, or for a model without a learned prior). Deterministic, so every
    torchrun process gets the same figures."""
    n = min(PRIOR_CLIPS, num_clips)
    if n < 2 or not methods.has_latent_prior(model):
        return None
    frames, audio = runtime.to_time_major(torch.utils.data.default_collate([dataset[i] for i in range(n)]), device)
    return prior_monitor.prior_stats(model, frames, audio if model.cfg.use_audio else None).as_dict()


# --------------------------------------------------------------------------- reports
def _label(name: str) -> str:
    unit = metrics.PAIR_METRICS[name].unit
    return name.upper() + (f" ({unit})" if unit else "")


def write_csv(path: Path, summary: dict[str, Any]) -> None:
    """One row per future frame: the model's and every baseline's every metric under each protocol."""
    cols = {}
    for proto in summary["protocols"]:
        for who, block in _blocks(summary, proto):
            for m in summary["metrics"]:
                cols[f"{who}_{proto}_{m}"] = block[f"{m}_per_frame"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "frame", *cols])
    for i in range(len(next(iter(cols.values())))):
        writer.writerow([i + 1, summary["n_past"] + i, *(f"{v[i]:.6f}" for v in cols.values())])
    atomic_write_text(path, buf.getvalue())


def _blocks(summary: dict[str, Any], proto: str) -> list[tuple[str, dict[str, Any]]]:
    """``("model", the model's numbers under proto)`` then ``(name, its numbers)`` for every baseline."""
    return [("model", summary[proto])] + [(name, summary[name][proto]) for name in summary["baselines"]]


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def plot_curves(path: Path, summary: dict[str, Any], title: str, label: str = "Sound2Sight") -> None:
    """Every metric per future frame: the model (``label``: its method's) vs every baseline (and
    shuffled audio), one column per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    protocols, names = summary["protocols"], summary["metrics"]
    fig, axes = plt.subplots(len(names), len(protocols), figsize=(5.5 * len(protocols), 3.5 * len(names)),
                             squeeze=False)
    for j, proto in enumerate(protocols):
        for i, metric in enumerate(names):
            ax = axes[i, j]
            key = f"{metric}_per_frame"
            steps = np.arange(summary["n_past"], summary["n_past"] + len(summary[proto][key]))
            ax.plot(steps, summary[proto][key], "o-", ms=3, lw=2.5, alpha=0.8, zorder=2, label=f"{label} (samples)")
            for (name, base_label), marker in zip(summary["baselines"].items(), "sd^vx+"):
                ax.plot(steps, summary[name][proto][key], marker + "--", ms=3, label=base_label)
            if "audio_shuffled" in summary:  # drawn on top, thin with crosses: visible where it equals the model's
                ax.plot(steps, summary["audio_shuffled"][proto][key], "x:", ms=6, lw=1.2, color="black", zorder=3,
                        label=f"{label}, shuffled audio")
            ax.set_title(f"{metric.upper()} - {proto} protocol")
            ax.set_xlabel("frame index")
            ax.set_ylabel(_label(metric))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(path, _png(fig))


def plot_events(path: Path, summary: dict[str, Any], proto: str, label: str = "Sound2Sight") -> None:
    """Bars per event group and metric: the model (``label``, ``proto`` protocol), every baseline and,
    if scored, shuffled audio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev, names = summary["events"], summary["metrics"]
    series = [(label, ev["model"][proto])] + [(base, ev[name]) for name, base in summary["baselines"].items()]
    if "events" in summary.get("audio_shuffled", {}):
        series.append(("shuffled audio", summary["audio_shuffled"]["events"][proto]))
    frames = ev["model"][proto]
    groups = [g for g in metrics.EVENT_GROUPS if frames[g]["frames"]]
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.6), squeeze=False)
    width = 0.8 / len(series)
    for ax, metric in zip(axes[0], names):
        for i, (series_label, block) in enumerate(series):
            ax.bar(np.arange(len(groups)) + i * width, [block[g][metric] for g in groups], width, label=series_label)
        ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2)
        ax.set_xticklabels([f"{g.replace('_', ' ')}\n({frames[g]['frames']} frames)" for g in groups],
                           fontsize=7)
        ax.set_title(f"{metric.upper()} by event ({proto} protocol, window {ev['window']})")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write_bytes(path, _png(fig))


def headline(m: dict[str, Any]) -> str:
    """One line: every protocol's metrics against every baseline, the audio-shuffle drop, the set metrics."""
    parts = [f"clips={m['num_clips']} nsample={m['nsample']} n_past={m['n_past']} n_future={m['n_future']}"]
    fmt = {"psnr": "{:.2f}"}
    for proto in m["protocols"]:
        vals = " ".join(f"{n.upper()} {fmt.get(n, '{:.4f}').format(m[proto][n])}" for n in m["metrics"])
        bases = "; ".join(label + " " + " / ".join(fmt.get(n, "{:.4f}").format(m[name][proto][n]) for n in m["metrics"])
                          for name, label in m["baselines"].items())
        parts.append(f"{proto}: {vals}" + (f" ({bases})" if bases else ""))
    if "audio_shuffled" in m:
        drop = m["audio_shuffled"]["drop"][m["protocols"][0]]
        parts.append("shuffled audio costs " + " ".join(f"{n.upper()} {fmt.get(n, '{:.4f}').format(drop[n])}"
                                                         for n in m["metrics"]))
    for name in metrics.SET_METRICS:
        if m.get(name) is not None:
            parts.append(f"{name} {m[name]:.5f}")
    if m.get("prior"):
        parts.append(prior_monitor.describe(prior_monitor.PriorStats(**m["prior"])))
    return " | ".join(parts)


def write_tensorboard(folder: Path, result: dict[str, Any]) -> None:
    """Headline numbers at step = the training iterations behind the checkpoint (the step of the
    training's own curves, so both runs share one x-axis; its epoch where that is unknown) and
    per-frame curves (step = frame index)."""
    step = int(result.get("model_iterations") or result.get("model_epoch") or 0)
    with runtime.tensorboard_writer(folder) as tb:
        for proto in result["protocols"]:
            for who, block in _blocks(result, proto):
                for m in result["metrics"]:
                    tb.add_scalar(f"eval/{proto}/{who}_{m}", block[m], step)
                    for i, v in enumerate(block[f"{m}_per_frame"]):
                        tb.add_scalar(f"eval_per_frame/{proto}/{who}_{m}", v, result["n_past"] + i)
        for k, v in (result.get("prior") or {}).items():
            tb.add_scalar(f"eval/prior_{k}", v, step)
        if "audio_shuffled" in result:
            for m in result["metrics"]:
                tb.add_scalar(f"eval/audio_shuffle_drop_{m}", result["audio_shuffled"]["drop"][result["protocols"][0]][m],
                              step)


def write_outputs(log_dir: Path, result: dict[str, Any], res: BatchResult, *, save_samples: bool = False,
                  tensorboard: bool = True, label: str = "Sound2Sight",
                  sound: Callable[[int], tuple[np.ndarray, int] | None] | None = None, fps: float = 10.0,
                  command: str = "") -> None:
    """metrics.csv, curves.png, events.png (with events), TensorBoard, gifs/ (each GIF with a twin MP4
    carrying the clip's sound, ``sound(clip)``: its waveform and rate, when the data keeps one),
    report.html (:mod:`html_report`; ``command`` made it), samples.npz, and metrics.json last; ``label`` names the model in the plots (its method's label). Each file is
    written atomically, and metrics.json comes after the rest, so a write failing part-way never
    leaves a new metrics.json beside older curves and GIFs."""
    write_csv(log_dir / "metrics.csv", result)
    plot_curves(log_dir / "curves.png", result,
                f"{result.get('checkpoint', 'model')} on {result.get('data_root', 'data')} ({result['num_clips']} clips, "
                f"{result['nsample']} samples)", label)
    if "events" in result:
        plot_events(log_dir / "events.png", result, result["protocols"][0], label)
    if tensorboard:
        write_tensorboard(log_dir / "tensorboard" / "eval", result)  # the run is named after what it is
    for clip, grid in sorted(res.gifs.items()):
        save_gif(log_dir / "gifs" / f"clip_{clip:05d}.gif", grid)
        clip_audio = sound(clip) if sound is not None else None
        if clip_audio is not None:  # the same frames, with the sound the model heard
            write_video(log_dir / "gifs" / f"clip_{clip:05d}.mp4", grid, fps, *clip_audio)
    write_html_report(log_dir, result, command or " ".join(["python", *sys.argv]), label)
    if save_samples:
        with atomic_file(log_dir / "samples.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, gt=res.gt.astype(np.float32), samples=res.samples.astype(np.float32),
                         clip_index=res.clips)
    atomic_write_json(log_dir / "metrics.json", result)


# ------------------------------------------------------------------ a checkpoint file
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
                         f"{list(info['audio_shape'])}; evaluate on data made with the same audio features")
    if seq_len > info["num_frames"]:
        raise InputError(f"--n_past + --n_future = {seq_len} but the clips in {data_root} have {info['num_frames']} "
                         f"frames; lower them to fit (the paper: --n_past 5 --n_future 25 on 30-frame clips)")


def eval_dir(ckpt_path: Path, ckpt: dict[str, Any], settings: EvalSettings) -> Path:
    """The folder of one evaluation of one checkpoint with one set of settings, so that no
    evaluation replaces another: ``<run folder>/eval/<checkpoint>_ep<E>_<n_past>+<n_future>_k<nsample>_N<clips>``
    and a short hash of every setting that changes a number (:meth:`EvalSettings.fingerprint`),
    e.g. ``logs/demo/eval/last_ep30_5+10_k20_N256_3f9a1c``. The run folder is the one holding
    ``checkpoints/``, else the checkpoint's own folder."""
    import hashlib

    from checkpoints import run_folder_of

    run = run_folder_of(ckpt_path)
    digest = hashlib.sha1(json.dumps(settings.fingerprint(), sort_keys=True).encode()).hexdigest()[:6]
    epoch = (ckpt or {}).get("epoch")
    name = (f"{ckpt_path.stem}" + (f"_ep{epoch}" if epoch is not None else "")
            + f"_{settings.n_past}+{settings.n_future}_k{settings.nsample}_N{settings.num_clips or 'all'}_{digest}")
    return run / "eval" / name


def check_not_evaluated(log_dir: Path, overwrite: bool) -> None:
    """Refuse (one InputError line) an output folder that already holds a finished evaluation, unless
    ``overwrite``: an evaluation never silently replaces another's results."""
    if (log_dir / "metrics.json").is_file() and not overwrite:
        raise InputError(f"{log_dir} already holds an evaluation (metrics.json); its results stay there. Pass "
                         "--overwrite to redo it, or another --log_dir")


def evaluate_checkpoint(ckpt_path: Path, data_root: str, log_dir: Path, settings: EvalSettings, *,
                        device: torch.device, rank: int = 0, world: int = 1, tensorboard: bool = True,
                        resumable: bool = True, model=None, ckpt: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint file on ``data_root``'s test split and write every output into ``log_dir``.

    One evaluation per output folder (:class:`runlock.RunLock`); with ``resumable``, finished
    batches are kept in ``<log_dir>/.partial/`` and a SIGTERM/SIGINT (one process) stops
    between batches with exit 128 + signal, so the same call continues. Returns
    metrics.json's content plus ``timing`` on every rank. ``model``/``ckpt``: already loaded."""
    from checkpoints import load_model, trained_iterations
    from data import clip_sound, dataset_info, open_dataset

    t_start = time.perf_counter()
    if model is None:
        model, ckpt = load_model(ckpt_path, map_location=device)
    model.eval()
    method = methods.of_checkpoint(ckpt, ckpt_path) if ckpt else methods.of_model(model)
    seq_len = settings.n_past + settings.n_future
    info = dataset_info(data_root)
    check_model_fits_data(model.cfg, info, ckpt_path, data_root, seq_len)
    with RunLock(log_dir, "evaluation") if rank == 0 else contextlib.nullcontext():
        dataset = open_dataset(data_root, "test", seq_len, image_width=model.cfg.image_width,
                               channels=model.cfg.channels)
        num_clips = min(settings.num_clips or len(dataset), len(dataset))
        if rank == 0 and settings.num_clips and num_clips < settings.num_clips:
            print(f"N={settings.num_clips}: the test split of {data_root} has {len(dataset)} clips; "
                  f"evaluating all {num_clips}")
        st = ckpt_path.stat()
        fp = {"checkpoint": str(ckpt_path.resolve()), "checkpoint_size": st.st_size,
              "checkpoint_mtime_ns": st.st_mtime_ns, "data_root": str(Path(data_root).resolve()),
              **settings.fingerprint()}
        store = BatchStore(log_dir / ".partial", fp, rank, world) if resumable else None
        # Under torchrun the processes would have to agree on a stop; there the signals keep their
        # default action (finished batches are on disk either way).
        with (StopSignals() if world == 1 and resumable else contextlib.nullcontext()) as stop:
            try:
                ev = evaluate(model, dataset, settings, device, rank=rank, world=world,
                              events=events_of(data_root, info, len(dataset)), store=store, stop=stop)
            except Stopped:
                if rank == 0:
                    print(f"stopped by {signal.Signals(stop.requested).name}; finished batches are kept in "
                          f"{store.folder}. Run the same command again to continue.", file=sys.stderr)
                raise SystemExit(128 + stop.requested) from None
        result = {**ev.summary, "checkpoint": str(ckpt_path), "model_epoch": (ckpt or {}).get("epoch"),
                  "model_iterations": trained_iterations(ckpt or {}),
                  "data_root": str(data_root), "timing": ev.timing}
        if rank == 0:
            write_outputs(log_dir, result, ev.per_clip, save_samples=settings.save_samples, tensorboard=tensorboard,
                          label=method.label(model.cfg), fps=float(info.get("fps") or 10),
                          sound=lambda clip: clip_sound(data_root, "test", clip, seq_len))
        if store is not None:
            store.finish(rank)
    if rank == 0:
        print(headline(result))
        print(f"wrote {log_dir}/ (metrics.json, metrics.csv, curves.png, gifs/"
              + (", samples.npz)" if settings.save_samples else ")"))
        print(f"report: {log_dir / 'report.html'} (open it in a browser)")
    # the returned copy also counts loading and writing
    return {**result, "timing": {**result["timing"], "all": round(time.perf_counter() - t_start, 3)},
            "log_dir": str(log_dir)}
