"""Evaluate a Sound2Sight checkpoint (or one of any trained method of methods.METHODS: the checkpoint
names its method): sample futures, score them, write numbers, curves and GIFs.

The work is done by ``evaluation.py`` (the library the demo and the training's validation
call too); this script parses the release's flags, checks them and writes the outputs.

Protocol (as released, docs/DESIGN.md): for every test clip, ``--nsample`` futures are sampled from the
learned prior given ``--n_past`` ground-truth frames and the whole clip's audio; every
future frame of every sample is scored against the ground truth with every metric of
``--metrics`` (SSIM and PSNR by default, equal to scikit-image as the release called it;
any of :data:`metrics.PAIR_METRICS`). Reported, per metric:

* ``paper``: per clip and frame the best over samples (each metric separately), then the
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

The GIFs also show a posterior row as the release's generation script drew it: the given
frames during the context, then frames decoded with the posterior's z (it sees the true
frames) while the predictor reads its own previous output. Its predictor was trained on
prior z, so the row bounds nothing and is not scored. A method without a posterior has no
such row.

Left out, ``--data_root`` and ``--n_past`` are the checkpoint's training's, and ``--n_future``
the clips' frames after the context, at most the release's 25; one line says what was taken.
The paper's command works unchanged (``--n_past 5 --n_future 25 --nsample 100 --N 1000``).
Under ``torchrun --nproc_per_node K`` the clips are shared out between processes and the
numbers are the same as in one process: every clip draws its noise from its own
generator, seeded from (``--seed``, clip index), whatever process or batch it lands in.

Outputs in ``--log_dir`` (default: a folder of its own per checkpoint and settings,
``<run folder>/eval/<checkpoint>_ep<E>_<n_past>+<n_future>_k<nsample>_N<clips>_<hash>``, so that
no evaluation replaces another): metrics.json, metrics.csv, curves.png, gifs/clip_XXXXX.gif
and, with ``--save_samples``, samples.npz. A folder that already holds an evaluation is refused
without ``--overwrite``.
"""
from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import evaluation
import metrics
import runtime
from checkpoints import resolve_checkpoint, load_model
from cli import ArgumentParser, plain_text
from data import DATASETS, PRESETS
from errors import InputError, run_cli
from files import atomic_write_json, atomic_write_text, check_output_folder, folder_problem

PROTOCOLS = tuple(metrics.PROTOCOLS)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=plain_text(__doc__))
    # the original evaluation script's flag names; --n_past, --n_future and --data_root now
    # default to what the checkpoint was trained with (the release's 30 and 60 fit no M3SO clip)
    ckpt = p.add_argument_group("checkpoint")
    ckpt.add_argument("--model_path", default="",
                      help="checkpoint file, or a training log folder (then checkpoints/best.pt, else "
                           "checkpoints/last.pt); required")
    ckpt.add_argument("--model_epoch", type=int, default=None,
                      help="with a checkpoint file as --model_path: a label for the outputs, as in the release; "
                           "with a log folder: use its checkpoints/epoch_<N>.pt")
    data = p.add_argument_group("data")
    data.add_argument("--data_root", default=None,
                      help="dataset folder (default: the one the checkpoint was trained on)")
    data.add_argument("--dataset", default=None, choices=DATASETS,
                      help="as in training; drums/painting also check that the checkpoint takes 64x64 colour "
                           "frames (shapes always come from the checkpoint and are checked against the data)")
    data.add_argument("--N", type=int, default=1000, help="at most this many test clips (all if fewer)")
    proto = p.add_argument_group("evaluation protocol")
    proto.add_argument("--n_past", type=int, default=None,
                       help="ground-truth context frames (default: the training's --n_past)")
    proto.add_argument("--n_future", type=int, default=None,
                       help=f"frames generated and scored (default: the clips' frames after the context, at most "
                            f"the release's {evaluation.RELEASE_N_FUTURE})")
    proto.add_argument("--nsample", type=int, default=100, help="prior samples per clip")
    proto.add_argument("--seed", type=int, default=1, help="seed of every clip's sampling noise")
    proto.add_argument("--protocol", default="both", choices=["paper", "best", "both"],
                       help="paper: per-frame max over samples (as published); best: one best-SSIM sample per clip")
    proto.add_argument("--metrics", default=",".join(metrics.DEFAULT_METRICS),
                       help=f"comma-separated frame metrics to report, from {','.join(metrics.PAIR_METRICS)} "
                            f"(the best-sample protocol selects by {metrics.SELECTION_METRIC})")
    proto.add_argument("--data_range", type=float, default=metrics.SSIM_DATA_RANGE,
                       help="SSIM data range. 2.0 (default) reproduces the published numbers: scikit-image 0.15 "
                            "assumed float images span [-1, 1]. 1.0 is the range frames really have; it gives "
                            "lower SSIM. PSNR always uses 1.0.")
    proto.add_argument("--event_window", type=int, default=3,
                       help="event-aligned metrics: frames counted after each wall/block bounce")
    proto.add_argument("--shuffle_audio", action="store_true",
                       help="also score the model with every clip's audio swapped for another test clip's (a fixed "
                            "derangement) and report the drop: how much the predictions rely on the sound")
    rt = p.add_argument_group("runtime")
    rt.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    rt.add_argument("--batch_size", type=int, default=100, help="test clips per batch")
    rt.add_argument("--chunk_size", type=int, default=2000,
                    help="at most this many clip x sample sequences per model call (memory bound; samples of a "
                         "clip are split over calls when batch_size x nsample exceeds it)")
    rt.add_argument("--num_workers", "--num_threads", dest="num_threads", type=int, default=0,
                    help="DataLoader worker processes (the original's --num_threads; capped at the CPU cores)")
    out = p.add_argument_group("output")
    out.add_argument("--log_dir", default="",
                     help="output folder (default: <run folder>/eval/<checkpoint>_ep<E>_<n_past>+<n_future>_k<nsample>"
                          "_N<clips>_<hash of the settings>: one per checkpoint and settings)")
    out.add_argument("--overwrite", action="store_true", help="redo an evaluation whose folder already holds one")
    out.add_argument("--log_path", default="",
                     help="a folder (as in the release): the headline numbers go to results_epoch_<label>.txt "
                          "and .json there; a file path (not an existing folder): one headline line appended")
    out.add_argument("--num_gifs", type=int, default=5,
                     help="GIFs for the first N clips: ground truth | posterior | best sample | 3 random samples")
    out.add_argument("--save_samples", action="store_true",
                     help="also write samples.npz: gt [N,T,C,H,W], samples [N,S,T,C,H,W] in [0,1], clip_index [N]")
    out.add_argument("--no_tensorboard", action="store_true", help="do not write TensorBoard event files")
    return p


# --------------------------------------------------------------------------- inputs
def resolve_data_root(data_root: str | None, ckpt_args: dict[str, Any]) -> tuple[str, bool]:
    """``--data_root``, else the data folder the checkpoint was trained on; and whether it was
    taken from the checkpoint."""
    if data_root:
        return data_root, False
    trained_on = ckpt_args.get("data_root")
    if not isinstance(trained_on, str) or not trained_on:
        raise InputError("--data_root is required: the checkpoint does not name the data it was trained on")
    if not Path(trained_on).is_dir():
        raise InputError(f"the checkpoint was trained on --data_root {trained_on}, which is not a folder here "
                         "(a path relative to where the training ran?); pass --data_root")
    return trained_on, True


def resolve_horizon(n_past: int | None, n_future: int | None, trained_n_past: int, num_frames: int,
                    data_root: str) -> tuple[int, int]:
    """``--n_past`` (default: the training's) and ``--n_future`` (default: the clips' frames after the
    context, at most :data:`evaluation.RELEASE_N_FUTURE`)."""
    n_past = trained_n_past if n_past is None else n_past
    if n_future is None:
        if num_frames - n_past < 1:
            raise InputError(f"--n_past {n_past} leaves no frame to predict: the clips in {data_root} have "
                             f"{num_frames} frames; lower --n_past")
        n_future = evaluation.default_n_future(num_frames, n_past)
    return n_past, n_future


def trained_n_past(ckpt_args: dict[str, Any], cfg) -> int:
    """The context length the checkpoint was trained with (its training's ``--n_past``)."""
    value = ckpt_args.get("n_past")
    return int(value) if isinstance(value, int) else int(cfg.n_past)


def apply_checkpoint_settings(args: argparse.Namespace, ckpt_args: dict[str, Any], cfg, rank: int) -> None:
    """Fill ``--data_root``, ``--n_past`` and ``--n_future`` left out from the checkpoint and its data,
    saying on one line what was taken; warn (stderr) when ``--n_past`` differs from the training's."""
    from data import dataset_info

    data_root, root_taken = resolve_data_root(args.data_root, ckpt_args)
    trained = trained_n_past(ckpt_args, cfg)
    num_frames = int(dataset_info(data_root)["num_frames"])
    taken = [f"--data_root {data_root}"] if root_taken else []
    if args.n_past is None:
        taken.append(f"--n_past {trained}")
    n_past, n_future = resolve_horizon(args.n_past, args.n_future, trained, num_frames, data_root)
    if rank == 0:
        said = [f"from the checkpoint's training: {' '.join(taken)}"] if taken else []
        if args.n_future is None:
            said.append(f"from the clips: --n_future {n_future} (the {num_frames}-frame clips' frames after the "
                        f"context, at most {evaluation.RELEASE_N_FUTURE})")
        if said:
            print("; ".join(said) + "; pass the flags to change them")
        if n_past != trained:
            print(f"warning: --n_past {n_past} differs from the {trained} context frames this model was trained "
                  f"with: its decoder's skip connections and its transformers' context were trained for {trained} "
                  "frames, so the numbers are not those of the trained setting", file=sys.stderr)
    args.data_root, args.n_past, args.n_future = data_root, n_past, n_future


def check_writable(log_dir: Path, flag: str = "--log_dir") -> None:
    """The output folder ``flag`` can be written (created when missing); InputError naming it and why."""
    check_output_folder(log_dir, flag)  # probes a real write, before any work
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{flag} {log_dir} cannot be written ({err.strerror or err}); "
                         "pass a writable folder") from None


def check_log_path(path: Path) -> None:
    """``--log_path`` must be an existing folder or a file in a writable folder (checked before the work)."""
    if path.is_dir():
        check_writable(path, "--log_path")
        return
    if path.exists() and not path.is_file():
        raise InputError(f"--log_path {path} is neither a folder nor a file; pass a folder or a file path")
    if not path.parent.is_dir():
        raise InputError(f"--log_path {path}: its folder {path.parent} does not exist; create it or pass an "
                         "existing folder")
    problem = folder_problem(path.parent)  # a real write: os.access says yes to root on a read-only folder
    if problem or not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"--log_path {path} cannot be written{f' ({problem})' if problem else ''}; pass a "
                         "writable folder or file")


def check_args(args: argparse.Namespace) -> None:
    for name, low in (("nsample", 1), ("batch_size", 1), ("N", 1), ("n_past", 1), ("n_future", 1),
                      ("chunk_size", 1), ("num_gifs", 0), ("num_threads", 0), ("event_window", 1)):
        if getattr(args, name) is not None and getattr(args, name) < low:
            raise InputError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if not args.data_range > 0:
        raise InputError(f"--data_range must be > 0, got {args.data_range}")


def check_checkpoint_preset(dataset: str, cfg: Any, ckpt_path: Path) -> None:
    """``--dataset drums|painting``: the checkpoint ``ckpt_path`` (its config ``cfg``) must take that preset's
    frames (:func:`data.check_preset` checks a data folder against a preset instead)."""
    want = PRESETS.get(dataset)
    if want and (cfg.image_width, cfg.channels) != (want["image_width"], want["channels"]):
        raise InputError(f"--dataset {dataset} takes {want['channels']}x{want['image_width']}x{want['image_width']} "
                         f"frames but checkpoint {ckpt_path} was trained on "
                         f"{cfg.channels}x{cfg.image_width}x{cfg.image_width}; drop --dataset or use a matching checkpoint")


# ------------------------------------------------------------------------------ main
def settings_from_args(args: argparse.Namespace) -> evaluation.EvalSettings:
    """The evaluation's settings from the flags (their checks already passed); a ``--n_past`` or
    ``--n_future`` still left to the checkpoint counts as 1 here."""
    try:
        return evaluation.EvalSettings(
            n_past=args.n_past or 1, n_future=args.n_future or 1, nsample=args.nsample, seed=args.seed, num_clips=args.N,
            batch_size=args.batch_size, metrics=tuple(args.metrics.split(",")),
            protocols=tuple(PROTOCOLS) if args.protocol == "both" else (args.protocol,),
            data_range=args.data_range, chunk_size=args.chunk_size, num_gifs=args.num_gifs,
            save_samples=args.save_samples, shuffle_audio=args.shuffle_audio, event_window=args.event_window,
            num_workers=args.num_threads)
    except ValueError as err:
        raise InputError(f"--metrics/--protocol: {err}") from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the evaluation; returns metrics.json's content (plus ``timing``) on every rank."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(args)
    settings_from_args(args)  # the flags' own checks, before the checkpoint is read
    ckpt_path = resolve_checkpoint(args.model_path, args.model_epoch)
    rank, world, device = runtime.setup_distributed(args.device)
    try:
        torch.manual_seed(args.seed)
        model, ckpt = load_model(ckpt_path, map_location=device)
        ckpt_args = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
        apply_checkpoint_settings(args, ckpt_args, model.cfg, rank)
        data_root, settings = args.data_root, settings_from_args(args)
        check_checkpoint_preset(args.dataset, model.cfg, ckpt_path)
        log_dir = Path(args.log_dir) if args.log_dir else evaluation.eval_dir(ckpt_path, ckpt, settings)
        if rank == 0:
            evaluation.check_not_evaluated(log_dir, args.overwrite)
            check_writable(log_dir)
            if args.log_path:
                check_log_path(Path(args.log_path))
        result = evaluation.evaluate_checkpoint(ckpt_path, data_root, log_dir, settings, device=device, rank=rank,
                                                world=world, tensorboard=not args.no_tensorboard, model=model,
                                                ckpt=ckpt)
        if rank == 0 and args.log_path:
            write_log_path(Path(args.log_path), result, evaluation.headline(result), ckpt_path, data_root,
                           args.model_epoch)
        return result
    finally:
        runtime.cleanup_distributed()


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


if __name__ == "__main__":
    run_cli(main)
