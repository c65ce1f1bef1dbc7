"""The training step and its bookkeeping, kept apart from the model (OpenSTL style).

``train_sound2sight.py`` is the flat script; this module holds what it and the tests
share: the generator-loss and learning-rate schedules, one optimisation step, BatchNorm
re-estimation, validation on a fixed batch, sample grids, and the per-epoch metrics log
with its plot. Devices and ``torchrun`` live in :mod:`runtime`, checkpoints in
:mod:`checkpoints`, scoring in :mod:`evaluation`.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines import BASELINES
from methods import PosteriorReconstruction
from runtime import autocast, match_param_layout
from files import atomic_write_text
from media import KEY_HEIGHT, LABEL_HEIGHT, framed_row, gif_colours, key_strip, label_columns


# ------------------------------------------------------------------ loss schedule
def adv_weight(epoch: int, beta_gen_loss: float) -> float:
    """Weight of the generator's adversarial terms at ``epoch`` (0-based), as released.

    Off during the first epoch, then ``beta_gen_loss`` x1 through epoch 300, x5 through
    600, x10 through 900 and x100 after (boundaries inclusive, as the released script).
    """
    if epoch < 1:
        return 0.0
    if epoch <= 300:
        scale = 1.0
    elif epoch <= 600:
        scale = 5.0
    elif epoch <= 900:
        scale = 10.0
    else:
        scale = 100.0
    return beta_gen_loss * scale


LR_SCHEDULES = ("constant", "cosine")


def lr_scale(epoch: int, epochs: int, schedule: str) -> float:
    """Factor on the learning rates during ``epoch`` (0-based) of ``epochs``: 1 for
    ``constant``; ``0.5 * (1 + cos(pi * epoch / epochs))`` for ``cosine`` (1 at epoch 0, on
    its way to 0 after the last epoch). A function of the epoch only, so a resumed run
    gets the same rates."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of {list(LR_SCHEDULES)}")


def warmup(epoch: int, iteration: int, iters: int, epochs: float) -> float:
    """A linear ramp from 0 to 1 over the first ``epochs`` epochs of ``iters`` iterations, evaluated at
    ``iteration`` (0-based) of ``epoch`` (0-based): ``min(1, (epoch * iters + iteration + 1) / (epochs * iters))``;
    1 throughout when ``epochs <= 0`` (no warm-up). A function of the position only, so a resumed
    run gets the same factors."""
    if epochs <= 0:
        return 1.0
    return min(1.0, (epoch * iters + iteration + 1) / (epochs * iters))


# ------------------------------------------------------------ what training logs
#: The logged training figures, on the release's scale and under the names of its epoch line
#: ("train mse loss", "kld loss", "disc loss", "gen loss"): the release's ``train()`` returned
#: its per-step MSE and KL summed over the T-1 predicted steps and divided by the clip's T
#: frames, its discriminator loss divided by T, and ``syn_loss / T`` (the discriminator's
#: loss on the generated frames), which it printed as "gen loss". ``g_adv`` (the generator's
#: unweighted adversarial term) and ``loss`` (the one scalar backpropagated here) have no
#: counterpart in the release's log and keep their own names.
RELEASE_FIGURES = ("train_mse_loss", "kld_loss", "disc_loss", "gen_loss")


def logged_figures(out: dict[str, float], frames: int) -> dict[str, float]:
    """The model's per-iteration terms (``Sound2Sight.forward``: ``mse``/``kld`` per predicted step,
    ``d_loss``/``syn_loss`` summed over windows) as training logs them, for clips of ``frames`` frames:
    :data:`RELEASE_FIGURES` on the release's scale, plus ``g_adv`` and ``loss``. A method without
    a latent or a discriminator leaves ``kld`` / ``g_adv`` / ``d_loss`` / ``syn_loss`` out: 0 here
    (:class:`methods.TrainedModel`)."""
    steps = frames - 1
    term = lambda k: out.get(k, 0.0)  # noqa: E731
    return {"train_mse_loss": out["mse"] * steps / frames, "kld_loss": term("kld") * steps / frames,
            "disc_loss": term("d_loss") / frames, "gen_loss": term("syn_loss") / frames,
            "g_adv": term("g_adv"), "loss": out["loss"]}


# --------------------------------------------------------------------- one step
def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, frames: torch.Tensor,
               audio: torch.Tensor, adv_w: float, *, scaler: torch.amp.GradScaler | None = None,
               amp: bool = False, kl_scale: float = 1.0, noise_scale: float = 1.0) -> dict[str, float]:
    """One optimisation step of generator and discriminator together; returns :func:`logged_figures`.

    frames: [T, B, C, H, W]; audio: [T, B, 1, F, S]. The model's ``forward`` returns a
    single ``loss`` whose gradients are already routed to the right player (generated
    frames detached for the discriminator, discriminator weights detached for the
    generator's adversarial terms), so one backward and one optimiser step make the
    whole iteration; that is what lets DDP, AMP and ``torch.compile`` wrap it unchanged.
    ``kl_scale`` / ``noise_scale``: the warm-up factors of the model's ``forward`` (1: none).
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(frames.device, amp):
        if kl_scale == 1.0 and noise_scale == 1.0:
            out = model(frames, audio, adv_w)
        else:
            out = model(frames, audio, adv_w, kl_scale=kl_scale, noise_scale=noise_scale)
    loss = out["loss"]
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss {loss.item()} (terms: "
                                 + ", ".join(f"{k}={float(v):.4g}" for k, v in out.items()
                                             if torch.is_tensor(v) and v.numel() == 1) + ")")
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        match_param_layout(optimizer)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        match_param_layout(optimizer)
        optimizer.step()
    return logged_figures({k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1},
                          frames.shape[0])


# ------------------------------------------------------------------- BatchNorm
def batchnorm_layers(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` that keeps running statistics."""
    return [m for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
    """Replace every BatchNorm's running statistics by their average over ``batches`` under
    the current weights ("precise BN"), without touching any RNG or parameter.

    batches: time-major ``(frames [T, B, C, H, W], audio [T, B, 1, F, S] or None)``, run
    through the training computation in train mode (dropout on, as when the statistics
    are gathered during training), adversarial terms off. Why: the release called each
    encoder and the decoder once per time step, so the running statistics (momentum 0.1)
    moved 14-38 times per iteration and tracked the current weights closely; the
    vectorised pass moves them once per iteration, so after a short run they lag the
    weights by ~10 iterations and eval mode (validation, sampling) normalises with stale
    statistics. Averaging over a few batches just before validation removes the lag.
    Empty ``batches``: nothing changes."""
    if not batches:
        return
    norms = batchnorm_layers(model)
    momenta = [m.momentum for m in norms]
    was_training = model.training
    devices = [batches[0][0].device] if batches[0][0].device.type == "cuda" else []
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: equal weight per batch
        model.train()
        with torch.random.fork_rng(devices=devices):
            for frames, audio in batches:
                model(frames, audio, 0.0)
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        model.train(was_training)


# --------------------------------------------------------------------- validation
def validates(epoch: int, niter: int, every: int) -> bool:
    """Whether epoch ``epoch`` (0-based) ends with a validation: every ``every``-th epoch counted
    from 1 (``--val_every``), and the last of ``niter`` always, so that the final checkpoint
    carries re-estimated BatchNorm statistics and a validation row."""
    return (epoch + 1) % every == 0 or epoch + 1 == niter


#: The validation's frame metrics: the paper's two, and MSE for the original's model-selection figure.
VALIDATION_METRICS = ("ssim", "psnr", "mse")


@torch.no_grad()
def validate(model: torch.nn.Module, frames: torch.Tensor, audio: torch.Tensor | None, n_past: int,
             n_future: int, nsample: int, seed: int) -> dict[str, float]:
    """Score ``nsample`` prior samples of a fixed batch with :func:`evaluation.evaluate_batch`.

    frames: [T, B, C, H, W] with T >= n_past + n_future. Every clip draws its noise from its
    own generator (seeded from ``seed`` and its index), so the training RNG is untouched.
    Returns ``val_<metric>`` under the paper protocol for each of :data:`VALIDATION_METRICS`,
    every baseline of :data:`baselines.BASELINES` as ``val_<column>_<metric>`` (copy-last-frame:
    ``val_copy_last_<metric>``), and ``val_min_mse``: the
    original's model-selection figure (mean over clips of the min over samples of the
    sample's MSE over the future frames).
    """
    from evaluation import EvalSettings, evaluate_batch

    was_training = model.training
    model.eval()
    settings = EvalSettings(n_past=n_past, n_future=n_future, nsample=nsample, seed=seed,
                            metrics=VALIDATION_METRICS, protocols=("paper",))
    try:
        res = evaluate_batch(model, frames, audio, list(range(frames.shape[1])), settings)
    finally:
        model.train(was_training)
    out = {"val_min_mse": float(res.sample_scores["mse"].min(axis=1).mean())}  # [B, S] -> best sample per clip
    paper = res.model.under("paper")  # {metric: [B, F]}
    for m in VALIDATION_METRICS:
        if m != "mse":
            out[f"val_{m}"] = float(paper[m].mean())
    for name in settings.baselines:
        scores = res.predictors[name].under("paper")  # {metric: [B, F]}
        for m in VALIDATION_METRICS:
            out[f"val_{BASELINES[name].column}_{m}"] = float(scores[m].mean())
    return out


def grid_labels(model: torch.nn.Module, nsample: int) -> list[str]:
    """The columns of :func:`sample_grid` for ``model``: truth, posterior (only for a model with a
    posterior reconstruction, :class:`methods.PosteriorReconstruction`), then the samples."""
    posterior = ["posterior"] if isinstance(model, PosteriorReconstruction) else []
    return ["truth", *posterior] + [f"sample {s + 1}" for s in range(nsample)]


def describe_rows(labels: list[str]) -> str:
    """:func:`grid_labels` in a few words: ``truth, posterior, 3 samples``."""
    samples = sum(label.startswith("sample") for label in labels)
    return ", ".join([label for label in labels if not label.startswith("sample")] + [f"{samples} samples"])


@torch.no_grad()
def sample_grid(model: torch.nn.Module, frames: torch.Tensor, audio: torch.Tensor, n_past: int,
                n_future: int, nsample: int = 3, max_clips: int = 4, seed: int = 0) -> np.ndarray:
    """A GIF-ready grid: one row per clip, columns ground truth | posterior | ``nsample`` prior samples,
    under a header naming the columns (:func:`grid_labels`; no posterior column for a model
    without a posterior reconstruction).

    Returns uint8 ``[T, 14 + rows*(H+4), cols*(W+4), 3]`` framed as the evaluation's GIFs
    (:func:`media.gif_colours`: green = given to the model, red = generated, grey = real future).
    The posterior column is drawn as the release's training script drew it: the given frames
    during the context, then the teacher-forced posterior reconstruction.
    """
    was_training = model.training
    model.eval()
    t = n_past + n_future
    frames, audio = frames[:t, :max_clips], audio[:t, :max_clips]
    labels = grid_labels(model, nsample)
    devices = [frames.device] if frames.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        post = model.reconstruct(frames, audio) if "posterior" in labels else None  # [t, B, C, H, W]
        prior = model.sample(frames[:n_past], audio, nsample, n_future)  # [t, B, S, C, H, W]
    model.train(was_training)
    prior = prior.float().cpu()
    frames = frames.float().cpu()
    shown = []  # [t, B, C, H, W] each: the columns before the samples
    if post is not None:
        post = post.float().cpu()
        post[:n_past] = frames[:n_past]
        shown = [post]
    kinds = ["gt"] + ["posterior"] * len(shown) + ["sample"] * nsample
    colours = [gif_colours(t, n_past, k) for k in kinds]
    rows = [framed_row([frames[:, b]] + [p[:, b] for p in shown] + [prior[:, b, s] for s in range(nsample)], colours)
            for b in range(frames.shape[1])]
    # rows stacked, a header naming the columns and a footer with the frame number and the colours' key:
    # [t, 14 + B*(H+4) + 12, K*(W+4), 3]
    return key_strip(label_columns(np.concatenate(rows, axis=1), labels))


def clip_strips(grid: np.ndarray, clips: int, kinds: int, header: int = LABEL_HEIGHT,
                footer: int = KEY_HEIGHT) -> list[np.ndarray]:
    """One still image per clip of a :func:`sample_grid` grid (uint8 ``[T, header + clips*h + footer, kinds*w, 3]``):
    its rows (truth, posterior, samples) stacked vertically, each with time running left to
    right: ``[kinds*h, T*w, 3]``. A whole clip at a glance, legible as a TensorBoard thumbnail."""
    t, height, width, _ = grid.shape
    ph, pw = (height - header - footer) // clips, width // kinds
    out = []
    for b in range(clips):
        row = grid[:, header + b * ph:header + (b + 1) * ph]                     # [T, h, kinds*w, 3]
        out.append(np.concatenate([np.concatenate(list(row[:, :, k * pw:(k + 1) * pw]), axis=1)
                                   for k in range(kinds)], axis=0))             # [kinds*h, T*w, 3]
    return out


# ------------------------------------------------------------------ metrics log
class MetricsLog:
    """``metrics.csv``: one row per epoch, rewritten atomically (it is small), resumable."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                self.rows = [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def truncate(self, epochs: int) -> None:
        """Drop rows past ``epochs`` completed epochs (a run killed after logging, before its checkpoint)."""
        self.rows = [r for r in self.rows if int(r["epoch"]) < epochs]

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())

    def plot(self, png: str | os.PathLike) -> None:
        """``losses.png``: training losses and validation figures per epoch, a 2 x 4 grid that reads at
        its natural size (1296 x 612 px): each curve named in words, y labels, whole-epoch ticks, and
        validation points drawn large enough to see when only every ``--val_every``-th epoch has one."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        if not self.rows:
            return
        ep = [int(r["epoch"]) + 1 for r in self.rows]  # epochs done, as the console and the checkpoints count
        model = "the model (best of its samples)"
        base = [(b.column, b.label) for b in BASELINES.values()]
        # (title, y label, [(column, name in the legend)], log scale)
        panels = [
            ("Training reconstruction", "MSE per frame (as the release)", [("train_mse_loss", "train MSE")], False),
            ("Training KL (prior vs posterior)", "KL per step", [("kld_loss", "KL")], False),
            ("Adversarial terms", "loss", [("disc_loss", "discriminator"), ("gen_loss", "generator"),
                                           ("g_adv", "generator, adversarial term")], False),
            ("Validation min-MSE (picks best.pt)", "MSE",
             [("val_min_mse", model)] + [(f"val_{c}_mse", label) for c, label in base], False),
            ("Validation SSIM (higher is better)", "SSIM",
             [("val_ssim", model)] + [(f"val_{c}_ssim", label) for c, label in base], False),
            ("Validation PSNR (higher is better)", "PSNR (dB)",
             [("val_psnr", model)] + [(f"val_{c}_psnr", label) for c, label in base], False),
            ("Does the prior read the sound?", "",
             [("prior_audio_change", "prior mean's change, swapped audio"),
              ("prior_mu_spread", "prior mean's spread over clips")], True),
        ]
        # a fixed layout: tight_layout would draw the figure once more to measure it, which made
        # this plot most of the cost of an epoch's end in the demo
        fig, axes = plt.subplots(2, 4, figsize=(14.4, 6.8))
        fig.subplots_adjust(left=0.05, right=0.99, bottom=0.08, top=0.94, wspace=0.32, hspace=0.42)
        flat = axes.ravel()
        for ax, (title, ylabel, curves, log) in zip(flat, panels):
            for k, name in curves:
                # only the epochs that have the column (validation runs every --val_every epochs)
                xy = [(e, r[k]) for e, r in zip(ep, self.rows) if isinstance(r.get(k), float)]
                if xy:
                    ax.plot(*zip(*xy), marker="o", markersize=4 if len(xy) < 40 else 2, lw=1.5, label=name)
            ax.set_title(title, fontsize=10)
            ax.set_ylabel(ylabel, fontsize=9)
            ax.set_xlabel("epochs done", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            if log and any(isinstance(r.get(k), float) and r[k] > 0 for r in self.rows for k, _ in curves):
                ax.set_yscale("log")  # a collapse is a drop by orders of magnitude
            if ax.lines:  # a method without a prior or a discriminator leaves some panels empty
                ax.legend(fontsize=7, framealpha=0.6)
        flat[-1].axis("off")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        from files import atomic_write_bytes

        atomic_write_bytes(png, buf.getvalue())


def _num(v: str) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


