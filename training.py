"""The training step and its bookkeeping, kept apart from the model (OpenSTL style).

``train_sound2sight.py`` is the flat script; this module holds what it and the tests
share: the generator-loss schedule, one optimisation step, checkpoints that resume
exactly, validation on a fixed batch, sample grids and the loss plot, and the few lines
of ``torchrun`` / DistributedDataParallel setup.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from utils import atomic_torch_save, atomic_write_text, framed_row, gif_colours


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


# --------------------------------------------------------------------- one step
def autocast(device: torch.device, amp: bool):
    """bfloat16 autocast on CPU (pays off where the CPU has AMX), float16 on CUDA; a no-op without ``amp``."""
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, frames: torch.Tensor,
               audio: torch.Tensor, adv_w: float, *, scaler: torch.amp.GradScaler | None = None,
               amp: bool = False) -> dict[str, float]:
    """One optimisation step of generator and discriminator together.

    frames: [T, B, C, H, W]; audio: [T, B, 1, F, S]. The model's ``forward`` returns a
    single ``loss`` whose gradients are already routed to the right player (generated
    frames detached for the discriminator, discriminator weights detached for the
    generator's adversarial terms), so one backward and one optimiser step make the
    whole iteration; that is what lets DDP, AMP and ``torch.compile`` wrap it unchanged.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(frames.device, amp):
        out = model(frames, audio, adv_w)
    loss = out["loss"]
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss {loss.item()} (terms: "
                                 + ", ".join(f"{k}={float(v):.4g}" for k, v in out.items()
                                             if torch.is_tensor(v) and v.numel() == 1) + ")")
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}


def to_time_major(batch: tuple[torch.Tensor, torch.Tensor],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Loader batches ``([B, T, C, H, W], [B, T, 1, F, S])`` -> time-major tensors on ``device``."""
    frames, audio = batch
    frames = frames.to(device, non_blocking=True).transpose(0, 1).contiguous()
    audio = audio.to(device, non_blocking=True).transpose(0, 1).contiguous()
    return frames, audio


def cap_workers(requested: int, world: int = 1, say: bool = True) -> int:
    """DataLoader workers: ``requested``, at most the CPU cores this process may use divided
    among the ``world`` processes (the release's default of 5 on a 2-core machine only adds
    contention and a warning from PyTorch). Says so once when it lowers the number."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    cap = max(cores // max(world, 1), 1)
    if requested > cap:
        if say:
            print(f"--num_workers {requested}: this machine gives this process {cores} CPU core(s); using {cap}")
        return cap
    return requested


# ------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Every RNG a training run draws from, as tensors/plain types (loadable with weights_only)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": repr(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    random.setstate(ast.literal_eval(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------ checkpoints
def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, epoch: int, best_val: float,
                    args: dict[str, Any], partial_epoch: dict[str, Any] | None = None) -> None:
    """Write a resumable checkpoint atomically: state dicts plus config, never pickled modules.

    ``epoch`` is the number of completed epochs. ``model`` is the unwrapped module.
    ``partial_epoch`` (a run stopped mid-epoch): ``{"iteration": steps done in epoch
    ``epoch``, "sums": the epoch's running loss sums, "seconds": its time so far}``.
    """
    ckpt = {
        "model_config": asdict(model.cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": epoch,
        "best_val": best_val,
        "rng": rng_state(),
        "args": args,
    }
    if partial_epoch is not None:
        ckpt["partial_epoch"] = partial_epoch
    atomic_torch_save(ckpt, path)


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


def migrate_optimizer_state(opt_state: dict[str, Any], saved_model: dict[str, torch.Tensor],
                            model: torch.nn.Module) -> dict[str, Any]:
    """Re-index an optimiser state saved with a model whose parameters had other names/order.

    ``saved_model``: the checkpoint's model state dict as saved (its key order is the saved
    parameter order); ``model``: today's model, whose ``configure_optimizer`` groups are
    generator parameters then trainable discriminator parameters. Adam/RMSprop/SGD state is
    per parameter, so moving each parameter's state to its new index restores it exactly.
    A state saved with today's names is returned unchanged."""
    from models.latent import migrate_state_dict

    renamed = list(migrate_state_dict(dict(saved_model)))
    if renamed == list(saved_model):
        return opt_state
    params = dict(model.named_parameters())
    new_groups = [[n for n in params if not n.startswith("disc.")],
                  [n for n in params if n.startswith("disc.") and params[n].requires_grad]]
    old_groups = [[n for n in renamed if n in params and not n.startswith("disc.")],
                  [n for n in renamed if n in params and n.startswith("disc.") and params[n].requires_grad]]
    new_index = {n: i for i, n in enumerate(new_groups[0] + new_groups[1])}
    groups = opt_state["param_groups"]
    old_of_index: dict[int, str] = {}
    for group, names in zip(groups, old_groups):
        if len(group["params"]) != len(names):
            raise ValueError(f"optimiser group {group.get('name', '?')} has {len(group['params'])} parameters, "
                             f"the saved model {len(names)}")
        old_of_index.update(zip(group["params"], names))
    state = {new_index[old_of_index[i]]: v for i, v in opt_state["state"].items()}
    new_param_groups = [{**g, "params": [new_index[old_of_index[i]] for i in g["params"]]} for g in groups]
    for g in new_param_groups:  # keep each group's indices in today's parameter order
        g["params"] = sorted(g["params"])
    return {"state": state, "param_groups": new_param_groups}


# --------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: torch.nn.Module, frames: torch.Tensor, audio: torch.Tensor, n_past: int,
             n_future: int, nsample: int, seed: int) -> dict[str, float]:
    """Score ``nsample`` prior samples of a fixed batch, without disturbing the training RNG.

    frames: [T, B, C, H, W] with T >= n_past + n_future. Returns the original's model
    selection figure (mean over clips of the min over samples of the MSE of the future
    frames), SSIM/PSNR under the paper protocol, and the copy-last-frame baseline.
    """
    from metrics import score_pairs

    was_training = model.training
    model.eval()
    t = n_past + n_future
    frames, audio = frames[:t], audio[:t]
    devices = [frames.device] if frames.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        gen = model.sample(frames[:n_past], audio, nsample, n_future)  # [t, B, S, C, H, W]
    model.train(was_training)
    gt = frames[n_past:]  # [F, B, C, H, W]
    pred = gen[n_past:].float().clamp(0, 1)  # [F, B, S, C, H, W]
    fut, b, s = pred.shape[:3]
    mse = ((pred - gt[:, :, None]) ** 2).mean(dim=(3, 4, 5))  # [F, B, S]
    min_mse = mse.mean(0).min(dim=1).values.mean()
    flat_gt = gt[:, :, None].expand_as(pred).reshape(-1, *pred.shape[3:])
    flat_pred = pred.reshape(-1, *pred.shape[3:])
    ss, ps = (m.reshape(fut, b, s) for m in score_pairs(flat_gt, flat_pred))
    last = frames[n_past - 1][None].expand_as(gt).reshape(-1, *gt.shape[2:])
    base_ss, base_ps = (m.reshape(fut, b) for m in score_pairs(gt.reshape(-1, *gt.shape[2:]), last))
    base_mse = ((gt - frames[n_past - 1][None]) ** 2).mean()
    return {
        "val_min_mse": float(min_mse),
        "val_ssim": float(ss.max(dim=2).values.mean()),
        "val_psnr": float(ps.max(dim=2).values.mean()),
        "val_copy_last_mse": float(base_mse),
        "val_copy_last_ssim": float(base_ss.mean()),
        "val_copy_last_psnr": float(base_ps.mean()),
    }


@torch.no_grad()
def sample_grid(model: torch.nn.Module, frames: torch.Tensor, audio: torch.Tensor, n_past: int,
                n_future: int, nsample: int = 3, max_clips: int = 4, seed: int = 0) -> np.ndarray:
    """A GIF-ready grid: one row per clip, columns ground truth | posterior | ``nsample`` prior samples.

    Returns uint8 ``[T, rows*(H+4), cols*(W+4), 3]`` framed as the evaluation's GIFs
    (:func:`utils.gif_colours`: green = given to the model, red = generated, grey = real future).
    """
    was_training = model.training
    model.eval()
    t = n_past + n_future
    frames, audio = frames[:t, :max_clips], audio[:t, :max_clips]
    devices = [frames.device] if frames.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        post = model.reconstruct(frames, audio)  # [t, B, C, H, W]
        prior = model.sample(frames[:n_past], audio, nsample, n_future)  # [t, B, S, C, H, W]
    model.train(was_training)
    post, prior = post.float().cpu(), prior.float().cpu()
    frames = frames.float().cpu()
    kinds = ["gt", "posterior"] + ["sample"] * nsample
    colours = [gif_colours(t, n_past, k) for k in kinds]
    rows = [framed_row([frames[:, b], post[:, b]] + [prior[:, b, s] for s in range(nsample)], colours)
            for b in range(frames.shape[1])]
    return np.concatenate(rows, axis=1)  # rows stacked vertically: [t, B*(H+4), K*(W+4), 3]


# ------------------------------------------------------------------ TensorBoard
def tensorboard_writer(folder: str | os.PathLike, purge_step: int | None = None):
    """A ``torch.utils.tensorboard.SummaryWriter`` writing into ``folder`` (``tensorboard --logdir``
    of any parent shows it). ``purge_step``: on resume, events logged at or after this step by
    the interrupted run are hidden, so the curves continue without a duplicated stretch."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder), purge_step=purge_step)


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
        """``losses.png``: training losses and validation figures per epoch."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if not self.rows:
            return
        ep = [r["epoch"] for r in self.rows]
        panels = [("reconstruction MSE (per step)", ["mse"]), ("KL", ["kld"]),
                  ("adversarial", ["g_adv", "d_loss"]),
                  ("validation min-MSE", ["val_min_mse", "val_copy_last_mse"]),
                  ("validation SSIM", ["val_ssim", "val_copy_last_ssim"])]
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
        for ax, (title, keys) in zip(axes, panels):
            for k in keys:
                ys = [r.get(k) for r in self.rows]
                if any(isinstance(y, float) for y in ys):
                    ax.plot(ep, [y if isinstance(y, float) else np.nan for y in ys], marker="o", label=k)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        from utils import atomic_write_bytes

        atomic_write_bytes(png, buf.getvalue())


def _num(v: str) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


# -------------------------------------------------------------------- distributed
def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """Initialise ``torch.distributed`` when launched by ``torchrun``; returns (rank, world, device).

    gloo on CPU, nccl on CUDA (one GPU per local rank). Single process: (0, 1, device).
    """
    from utils import get_device

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, get_device(device_name)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = get_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def stop_agreed(stop: Any, device: torch.device, world: int) -> bool:
    """Whether to stop now: a signal arrived (``stop.requested``) in any process. Under
    torchrun every process must take the same decision at the same step, so the flag is
    all-reduced (max); in one process it is read directly."""
    if world <= 1:
        return bool(stop.requested)
    flag = torch.tensor([float(stop.requested)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and not stop.requested:
        stop.requested = int(flag.item())
    return bool(flag.item())


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_across_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average logged scalars over ranks (identity in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))
