"""Where and how the computation runs: device, ``torchrun`` / DistributedDataParallel, autocast.

One home for the few lines every script needs: pick the device (CUDA when present),
join the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA), agree
on a stop across processes, average logged scalars over them, autocast for ``--amp``,
move loader batches to time-major tensors on the device, cap DataLoader workers at the
machine's cores, and open a TensorBoard writer. Also what a benchmark or a run needs to
know of the CPU (:func:`cpu_name`, :func:`native_bf16`) and to seed every generator
(:func:`seed_everything`).
"""
from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from errors import InputError


# ----------------------------------------------------------------------------- device
def get_device(name: str = "auto"):
    """``auto`` picks CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:N`` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return device


def cpu_name() -> str:
    """The CPU's model name (Linux), for benchmark reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def native_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX); without them bf16 is emulated, and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: bool):
    """bfloat16 autocast on CPU (pays off where the CPU has AMX), float16 on CUDA; a no-op without ``amp``."""
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and the same element order in memory (strides of size-1 dimensions do not matter)."""
    return a.shape == b.shape and all(sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride()) if n > 1)


def match_param_layout(optimizer: torch.optim.Optimizer, state: bool = False) -> None:
    """Give every gradient (and with ``state``, every per-parameter state tensor of the
    parameter's shape) its parameter's strides.

    Why: PyTorch's fused Adam reads a parameter, its gradient and its moments as flat memory
    and does not check that their strides agree: a contiguous gradient of a channels-last
    weight is silently applied to the wrong elements. Autograd and DDP already give
    gradients their parameter's layout, so in training this is a check that copies nothing;
    optimiser state loaded from a checkpoint written with another layout (older runs were
    NCHW) is re-laid out once on resume."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and not _same_layout(p.grad, p):
                p.grad = torch.empty_like(p).copy_(p.grad)
            if state:
                for key, value in optimizer.state.get(p, {}).items():
                    if torch.is_tensor(value) and value.shape == p.shape and not _same_layout(value, p):
                        optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


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


# ------------------------------------------------------------------------ distributed
def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """Initialise ``torch.distributed`` when launched by ``torchrun``; returns (rank, world, device).

    gloo on CPU, nccl on CUDA (one GPU per local rank). Single process: (0, 1, device).
    """
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


# ------------------------------------------------------------------------ TensorBoard
def tensorboard_writer(folder: str | os.PathLike, purge_step: int | None = None):
    """A ``torch.utils.tensorboard.SummaryWriter`` writing into ``folder`` (``tensorboard --logdir``
    of any parent shows it). ``purge_step``: on resume, events logged at or after this step by
    the interrupted run are hidden, so the curves continue without a duplicated stretch."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder), purge_step=purge_step)
