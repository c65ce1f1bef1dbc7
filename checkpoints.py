"""Checkpoints: writing, reading and migrating them, in one place.

A checkpoint is a dict of state dicts plus config (nanoGPT style), never pickled modules:
``{"method", "model_config", "model", "optimizer", "scaler", "epoch", "best_val", "rng", "args"}``
(and ``"partial_epoch"`` for a run stopped mid-epoch). ``method`` names the trained method
(:data:`methods.METHODS`) whose config and model the rest belong to; a checkpoint without it
is a Sound2Sight one. Files are read with ``torch.load(..., weights_only=True)``, so a
checkpoint cannot run code. Files written by older versions keep loading: module names are
migrated (the method's ``migrate_state``, :func:`migrate_optimizer_state`) and config fields
(the method's ``migrate_config``, through :func:`saved_config`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import pickle
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import methods
from models.latent import migrate_state_dict
from errors import InputError
from files import atomic_torch_save
from runtime import match_param_layout


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
def save_checkpoint(path: str | os.PathLike, *, method: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, epoch: int, best_val: float,
                    args: dict[str, Any], partial_epoch: dict[str, Any] | None = None,
                    iterations: int | None = None) -> None:
    """Write a resumable checkpoint atomically: state dicts plus config, never pickled modules.

    ``method`` is the trained method's :data:`methods.METHODS` name, ``model`` its unwrapped module.
    ``epoch`` is the number of completed epochs.
    ``partial_epoch`` (a run stopped mid-epoch): ``{"iteration": steps done in epoch
    ``epoch``, "sums": the epoch's running loss sums, "seconds": its time so far}``.
    ``iterations``: training iterations done in all (TensorBoard's step, for training and
    evaluation alike; :func:`trained_iterations` reads it back).
    """
    ckpt = {
        "method": method,
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
    if iterations is not None:
        ckpt["iterations"] = int(iterations)
    atomic_torch_save(ckpt, path)


#: What a shipped model keeps of a training checkpoint: enough to rebuild, describe and evaluate it.
SHIPPED_KEYS = ("method", "model_config", "model", "epoch", "iterations", "args")


def export_weights(src: str | os.PathLike, dest: str | os.PathLike) -> dict[str, Any]:
    """Write the weights-only copy of checkpoint ``src`` that the repository ships: the model's
    state, config and method with its training's settings, epoch and iterations; no optimiser,
    scaler or RNG state, and no discriminator (``disc.*``: training only; ``model_config.use_disc``
    becomes False, while ``args`` still say how it was trained). Sampling and evaluation compute
    exactly what ``src`` computes. Loadable by :func:`load_model` (``torch.load(weights_only=True)``)
    and by ``generate_sound2sight.py`` / ``predict_sound2sight.py`` like any checkpoint. Returns it."""
    ckpt = read_checkpoint(src)
    out = {k: ckpt[k] for k in SHIPPED_KEYS if k in ckpt}
    out["model_config"] = {**ckpt["model_config"]}
    if out["model_config"].get("use_disc"):
        out["model_config"]["use_disc"] = False
    # clone: a view would drag its whole storage along
    out["model"] = {k: v.clone() for k, v in ckpt["model"].items() if not k.startswith("disc.")}
    out["shipped_from"] = {"checkpoint": Path(src).name, "dropped": "the discriminator (training only)"}
    atomic_torch_save(out, dest)
    return out


def trained_iterations(ckpt: dict[str, Any]) -> int | None:
    """Training iterations behind a checkpoint: its ``iterations``; for a checkpoint written before
    that entry, ``epoch`` x ``--epoch_size`` from its args when the cap was set (else None)."""
    if "iterations" in ckpt:
        return int(ckpt["iterations"])
    epoch, size = ckpt.get("epoch"), (ckpt.get("args") or {}).get("epoch_size")
    if isinstance(epoch, int) and isinstance(size, int) and size > 0:
        return epoch * size
    return None


@dataclass
class Progress:
    """Where a training run stands, as its checkpoint records it.

    ``epoch``: completed epochs; ``best_val``: the lowest validation min-MSE so far. A run
    stopped mid-epoch also records ``iteration`` (steps done in epoch ``epoch``), ``sums``
    (that epoch's running loss sums) and ``seconds`` (its time so far); all zero/empty at an
    epoch boundary. The checkpoint's ``partial_epoch`` entry holds those three (written only
    for a partial epoch, so an epoch-boundary checkpoint has none)."""

    epoch: int = 0
    best_val: float = math.inf
    iteration: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def partial_epoch(self) -> dict[str, Any] | None:
        """The checkpoint's ``partial_epoch`` entry (None at an epoch boundary)."""
        if not self.iteration:
            return None
        return {"iteration": self.iteration, "sums": dict(self.sums), "seconds": self.seconds}

    @classmethod
    def of(cls, ckpt: dict[str, Any]) -> "Progress":
        """The progress a checkpoint dict records (its ``epoch``, ``best_val``, ``partial_epoch``)."""
        partial = ckpt.get("partial_epoch") or {}
        return cls(epoch=int(ckpt["epoch"]), best_val=float(ckpt["best_val"]),
                   iteration=int(partial.get("iteration", 0)), sums=dict(partial.get("sums", {})),
                   seconds=float(partial.get("seconds", 0.0)))


def save_training(path: str | os.PathLike, method: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  scaler: torch.amp.GradScaler | None, progress: Progress, args: dict[str, Any],
                  iters_per_epoch: int | None = None) -> None:
    """Write a resumable training checkpoint of ``method``'s ``model`` at ``progress`` (see
    :func:`save_checkpoint`); with ``iters_per_epoch``, also the iterations done in all."""
    done = None if iters_per_epoch is None else progress.epoch * iters_per_epoch + progress.iteration
    save_checkpoint(path, method=method, model=model, optimizer=optimizer, scaler=scaler, epoch=progress.epoch,
                    best_val=progress.best_val, args=args, partial_epoch=progress.partial_epoch(), iterations=done)


def resume_training(path: str | os.PathLike, method: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, device: torch.device) -> Progress:
    """Continue a run of ``method`` from its checkpoint ``path``: refuse a checkpoint of another
    method or configuration (naming the fields), load the model, optimiser and scaler states
    (migrating older names), restore every RNG, and return where the run stood. ``model`` is
    the unwrapped module, already built from this run's config."""
    ckpt = read_checkpoint(path, map_location=device)
    saved = methods.of_checkpoint(ckpt, path)
    if saved.name != method:
        raise InputError(f"checkpoint {path} was made by --method {saved.name}, this run asks for --method {method}; "
                         "pass the same flags, or a fresh --log_dir to start a new run")
    check_config(path, saved_config(ckpt), model.cfg)
    model.load_state_dict(saved.migrate_state(ckpt["model"]))
    optimizer.load_state_dict(migrate_optimizer_state(ckpt["optimizer"], ckpt["model"], model, saved.migrate_state))
    match_param_layout(optimizer, state=True)  # a state saved NCHW must not meet a fused kernel
    if ckpt.get("scaler") and scaler is not None:
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return Progress.of(ckpt)


def migrate_optimizer_state(opt_state: dict[str, Any], saved_model: dict[str, torch.Tensor],
                            model: torch.nn.Module,
                            migrate: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = migrate_state_dict
                            ) -> dict[str, Any]:
    """Re-index an optimiser state saved with a model whose parameters had other names/order.

    ``saved_model``: the checkpoint's model state dict as saved (its key order is the saved
    parameter order); ``model``: today's model, whose ``configure_optimizer`` groups are
    generator parameters then trainable discriminator parameters. Adam/RMSprop/SGD state is
    per parameter, so moving each parameter's state to its new index restores it exactly.
    ``migrate``: the method's state-dict migration (Sound2Sight's by default). A state saved
    with today's names is returned unchanged."""
    renamed = list(migrate(dict(saved_model)))
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


# --------------------------------------------------------------------- reading
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


def run_folder_of(ckpt_path: str | os.PathLike) -> Path:
    """The training run a checkpoint file belongs to: the folder holding its ``checkpoints/``, else
    the checkpoint's own folder (a file copied elsewhere)."""
    folder = Path(ckpt_path).parent
    return folder.parent if folder.name == "checkpoints" else folder


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True`` (no arbitrary unpickling) and check its form.

    Training's resumable checkpoints and :func:`load_model` both read through here. Bad
    files raise ``errors.InputError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist; pass a checkpoint written by train_sound2sight.py "
                         "(or its log folder)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle / zip / format errors all mean "not our checkpoint"
        raise InputError(f"checkpoint {path} {_unreadable(path, err)}") from None
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or "model" not in ckpt:
        raise InputError(f"checkpoint {path} lacks 'model_config'/'model' keys; it was not written by this project")
    return ckpt


def _unreadable(path: Path, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, and what to do (one line, no torch advice
    to load it unsafely)."""
    import re

    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as os_err:
        return f"cannot be read ({os_err.strerror or os_err}); check the file's permissions"
    if not head:
        return "is empty (a copy or a save that never finished); use another checkpoint (best.pt, epoch_N.pt)"
    if head != b"PK\x03\x04":  # every checkpoint written here is a torch zip archive
        return ("is not a torch checkpoint (no zip archive header: damaged, or another kind of file); pass a "
                "checkpoint written by train_sound2sight.py")
    blocked = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", str(err), re.IGNORECASE)
    if isinstance(err, pickle.UnpicklingError) and blocked:
        return (f"holds pickled objects (it refers to {blocked.group(1)}), which could run code and are never "
                "loaded; pass a checkpoint written by train_sound2sight.py (state dicts only)")
    if isinstance(err, RuntimeError) and "zip archive" in str(err):
        return "is truncated or damaged (its zip archive is incomplete); use another checkpoint (best.pt, epoch_N.pt)"
    return (f"could not be read as a weights-only torch file ({type(err).__name__}); pass a checkpoint written "
            "by train_sound2sight.py")


def saved_config(ckpt: dict[str, Any], path: str | Path = "") -> dict[str, Any]:
    """A checkpoint's ``model_config`` migrated to today's fields by its method's ``migrate_config``
    (for Sound2Sight: :func:`models.sound2sight.migrate_config`)."""
    return methods.of_checkpoint(ckpt, path).migrate_config(dict(ckpt["model_config"]))


def check_config(path: str | Path, saved: Any, want: Any) -> None:
    """Refuse a checkpoint made for another configuration, naming every field that differs
    (``saved``, ``want``: config dataclasses or dicts of their fields)."""
    have = asdict(saved) if dataclasses.is_dataclass(saved) else dict(saved)
    want = asdict(want) if dataclasses.is_dataclass(want) else dict(want)
    diffs = [f"{k} {_norm(have[k])!r}, this run asks for {_norm(want[k])!r}" for k in want
             if k in have and _norm(want[k]) != _norm(have[k])]
    if diffs:
        raise InputError(f"checkpoint {path} was made for " + "; ".join(diffs)
                         + "; pass the same flags, or a fresh --log_dir to start a new run")


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               expect: Any = None) -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from a checkpoint ``{"method": ..., "model_config": ..., "model": state_dict}``
    through :data:`methods.METHODS` (no ``method``: ``sound2sight``).

    Reads through :func:`read_checkpoint` and loads strictly. ``expect`` (a config or dict
    of fields) is compared with the checkpoint's config first, so a mismatch names the
    field instead of failing on tensor shapes. Returns the model (in eval mode) and the
    whole checkpoint dict. Bad files (an unknown method included) raise ``errors.InputError``.
    """
    ckpt = read_checkpoint(path, map_location)
    method = methods.of_checkpoint(ckpt, path)
    raw = saved_config(ckpt, path)
    known = {f.name for f in dataclasses.fields(method.config)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"checkpoint {path} has unknown config fields {unknown}; it was written by another version")
    try:
        cfg = method.config(**raw)
    except (TypeError, ValueError) as err:
        raise InputError(f"checkpoint {path} has an invalid model_config: {err}") from None
    if expect is not None:
        check_config(path, cfg, expect)
    model = method.build(cfg)
    try:
        model.load_state_dict(method.migrate_state(ckpt["model"]), strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
        raise InputError(f"checkpoint {path}: weights do not fit its model_config ({detail[:300]})") from None
    model.to(map_location).eval()
    return model, ckpt


def _norm(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


# --------------------------------------------------------------------- continuing a run
#: Settings a continued run may change: how long it trains, where and how fast it runs, what it
#: logs and how often it looks; never the model, the data's shape, the optimisation or the validation set.
CONTINUE_MAY_CHANGE = frozenset({
    "niter", "device", "data_threads", "no_tensorboard", "compile", "compile_backend", "save_every", "val_every",
    "eval_nsample", "data_root", "demo"})
#: What names the run (and so is never read from it) or only says how to start this process.
_NOT_SETTINGS = frozenset({"log_dir", "name", "model_dir", "resume", "redo_eval", "explicit", "continued",
                           "method"})  # the method picks the parser: train_sound2sight.parse_args reads it first


def _flag_value(v: Any) -> str:
    return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def run_args(folder: str | Path) -> dict[str, Any] | None:
    """The settings (``args``) the training run in ``folder`` was made with, read from its
    ``checkpoints/last.pt``; None when the folder holds no run yet."""
    last = Path(folder) / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    return dict(read_checkpoint(last).get("args") or {})


def continue_settings(args: Any, explicit: set[str], saved: dict[str, Any], folder: str | Path) -> list[str]:
    """Make ``args`` (an argparse namespace) the settings ``saved`` (a run's checkpoint ``args``) with
    which the run in ``folder`` was made, so that a continued run needs no flag repeated.

    A flag in ``explicit`` (given on this command line) whose value differs from the run's is kept
    when it is one a continued run may change (:data:`CONTINUE_MAY_CHANGE`) and listed in the
    returned lines; any other difference raises :class:`errors.InputError` naming each one and
    how to proceed, before anything is written. Settings the run did not record (flags newer
    than the run) keep this command line's values."""
    refused, changed = [], []
    for key, was in saved.items():
        if not hasattr(args, key) or key in _NOT_SETTINGS:
            continue  # a flag this version no longer has, or one that names the run
        now = getattr(args, key)
        if key in explicit and _norm(now) != _norm(was):
            if key in CONTINUE_MAY_CHANGE:
                changed.append(f"--{key} {_flag_value(now)} (the run: {_flag_value(was)})")
                continue
            refused.append(f"--{key} {_flag_value(now)} (the run: {_flag_value(was)})")
            continue
        if key not in CONTINUE_MAY_CHANGE or key not in explicit:
            setattr(args, key, was)
    if refused:
        raise InputError(f"{folder} was made with other settings: " + ", ".join(refused)
                         + "; drop these flags to continue the run as it was made (its own settings are read "
                           "from it), or give another --log_dir/--name to start a new run")
    return changed
