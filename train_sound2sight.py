"""Train Sound2Sight (or its no-audio ablation) on M3SO / M3SO-NB or prepared real videos.

The paper's command keeps working with this script's name (same flags, same defaults).
The quickest start, on any machine:

    python train_sound2sight.py --demo

makes a small M3SO-NB on the spot, trains a small configuration, evaluates it against a
copy-last-frame baseline and prints where the GIFs, curves and numbers are.

Distributed: ``torchrun --nproc_per_node K train_sound2sight.py ...`` (gloo on CPU, nccl
on CUDA); ``--batch_size`` stays the global batch.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, default_collate
from tqdm import tqdm

import checkpoints
from cli import ArgumentParser, plain_text
import prior_monitor
import runtime
import training
from data import DATASETS, PRESETS, check_preset, dataset_info, dataset_shapes, open_dataset
from models.sound2sight import OPTIMIZERS, Sound2SightConfig
from utils import (InputError, RunLock, StopSignals, add_config_flags, atomic_write_json, config_kwargs, native_bf16, run_cli,
                   save_gif, seed_everything)


# The main job on a fresh 2-core machine: small enough to finish well inside 10 minutes, and
# chosen by bench/learning.py to beat copy-last-frame in that time (README, "Time to
# quality"): the paper's model at width 16, 1,500 iterations of batch 16 on 4,096 clips, the
# decoder's output bias started dark (M3SO frames are 93% black) and a cosine learning rate.
DEMO_DEFAULTS = {
    "dataset": "m3so_nb", "log_dir": "logs/demo", "n_past": 5, "n_future": 10, "n_eval": 15,
    "batch_size": 16, "niter": 30, "epoch_size": 50, "nf": 16, "data_threads": 0, "save_every": 0,
    "output_bias": -6.0, "lr_schedule": "cosine", "val_clips": 64,
}
DEMO_DATA = {"num_train": 4096, "num_test": 256, "seed": 0}
DEMO_EVAL_CLIPS = 256


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=plain_text(__doc__))
    # the original script's flag names and defaults, grouped by what they are for
    start = p.add_argument_group("quick start")
    start.add_argument("--demo", action="store_true",
                       help="make a small M3SO-NB (unless --data_root is given), train a small model, evaluate it")
    start.add_argument("--eval_nsample", type=int, default=20, help="--demo: samples per clip in the final evaluation")
    data = p.add_argument_group("data")
    data.add_argument("--data_root", default="data", help="dataset folder (generated layout or legacy M3SO download)")
    data.add_argument("--dataset", default="smmnist", choices=DATASETS,
                      help="smmnist/m3so/m3so_nb: a generated or legacy M3SO folder; drums/painting: 64x64 colour "
                           "presets; av: any folder made by python -m data.prepare_av (shapes from its dataset.json)")
    data.add_argument("--n_past", type=int, default=30, help="context frames")
    data.add_argument("--n_future", type=int, default=30, help="frames predicted during training")
    data.add_argument("--n_eval", type=int, default=60,
                      help="frames in validation sequences (capped at the clip length)")
    data.add_argument("--num_digits", type=int, default=1, help="kept for the paper's command; the data decides")
    # the model: one flag per Sound2SightConfig field (the original's names and defaults)
    add_config_flags(p, Sound2SightConfig, "model (Sound2SightConfig)")
    init = p.add_argument_group("model initialisation")
    init.add_argument("--output_bias", type=float, default=0.0,
                      help="initial bias of the decoder's output convolution, before the sigmoid (0 as the "
                           "original; negative starts the frames dark, as M3SO's mostly black frames are)")
    init.add_argument("--logvar_bias", type=float, default=0.0,
                      help="initial bias of the prior's and posterior's log-variance heads (0 as released: "
                           "sigma starts near 1; negative starts the latent's noise small)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--lr", type=float, default=0.002, help="generator learning rate")
    opt.add_argument("--disc_lr", type=float, default=0.0025, help="discriminator learning rate")
    opt.add_argument("--beta1", type=float, default=0.9, help="Adam beta1")
    opt.add_argument("--optimizer", default="adam", choices=list(OPTIMIZERS), help="optimiser of both players")
    opt.add_argument("--lr_schedule", default="constant", choices=list(training.LR_SCHEDULES),
                     help="constant (as released) or cosine: both learning rates follow a half cosine from their "
                          "value at epoch 0 to 0 after the last epoch (--niter), set at the start of each epoch")
    opt.add_argument("--batch_size", type=int, default=100,
                     help="global batch size (split over torchrun processes)")
    opt.add_argument("--niter", type=int, default=300, help="number of epochs")
    opt.add_argument("--epoch_size", type=int, default=600,
                     help="cap on iterations per epoch (an epoch is one pass over the training clips; 0 = no cap)")
    opt.add_argument("--seed", type=int, default=1, help="seed of every random number generator")
    opt.add_argument("--beta_gen_loss", type=float, default=0.0001,
                     help="adversarial weight (x1 to epoch 300, x5 to 600, x10 to 900, x100 after; off in epoch 0)")
    # what keeps the prior reading the sound (RESULTS.md, "Keeping the prior on the sound");
    # each default is the release's behaviour
    opt.add_argument("--kl_warmup", type=float, default=0.0,
                     help="epochs over which the KL weight ramps linearly from 0 to --beta, per iteration "
                          "(0: the full weight from the start, as released)")
    opt.add_argument("--noise_warmup", type=float, default=0.0,
                     help="epochs over which the noise of the training's z ramps linearly from 0 to 1, per "
                          "iteration: z = mu + ramp * eps * sigma, so the predictor first reads the latent's "
                          "mean (0: full noise from the start, as released)")
    val = p.add_argument_group("validation")
    val.add_argument("--val_nsample", type=int, default=5, help="prior samples per clip in validation")
    val.add_argument("--val_clips", type=int, default=0,
                     help="test clips in the fixed validation batch (0: one batch of --batch_size per process, "
                          "at least 8 and at most 64, as the original's one test batch)")
    val.add_argument("--bn_recalibrate", type=int, default=4,
                     help="before each validation (and so in every checkpoint), re-estimate BatchNorm's running "
                          "statistics over this many fixed training batches under the current weights; 0 keeps "
                          "the running averages of training (see docs/DESIGN.md, BatchNorm)")
    rt = p.add_argument_group("runtime")
    rt.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    rt.add_argument("--num_workers", "--data_threads", dest="data_threads", type=int, default=5,
                    help="DataLoader worker processes (the original's --data_threads; capped at the CPU cores "
                         "this process may use)")
    rt.add_argument("--amp", action="store_true", help="mixed precision: bfloat16 on CPU, float16 on CUDA")
    rt.add_argument("--compile", action="store_true",
                    help="torch.compile the training step's model (on CPU the inductor compile takes minutes, "
                         "and recompiles once when the adversarial term starts after epoch 0)")
    rt.add_argument("--compile_backend", default="inductor",
                    help="torch.compile backend for --compile (inductor; aot_eager or eager need no C++ compiler)")
    out = p.add_argument_group("output")
    out.add_argument("--log_dir", default="logs/lp",
                     help="where everything is written (a subfolder only with --name)")
    out.add_argument("--name", default="", help="optional run name: writes into LOG_DIR/NAME")
    out.add_argument("--model_dir", default="",
                     help="continue training the run in this log folder (as --resume there)")
    out.add_argument("--resume", action="store_true", help="continue from LOG_DIR/checkpoints/last.pt if it exists")
    out.add_argument("--save_every", type=int, default=10,
                     help="keep checkpoints/epoch_N.pt every N epochs (0: never)")
    out.add_argument("--no_tensorboard", action="store_true",
                     help="do not write TensorBoard event files (LOG_DIR/tensorboard/: losses per iteration, "
                          "validation figures, the loss-schedule weights and sample clips per epoch)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags; ``--demo`` and the data change defaults, never explicit flags.

    ``--image_width`` / ``--channels`` default to the ``--data_root`` dataset's own; a
    ``--dataset`` preset (drums, painting) checks that dataset's shapes (InputError when they
    differ) and gives the defaults only while the folder holds no dataset yet.
    """
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.demo:
        parser.set_defaults(**DEMO_DEFAULTS)
        first, _ = parser.parse_known_args(argv)
    shapes = dataset_shapes(first.data_root, missing_ok=True)
    if shapes is not None:
        check_preset(first.dataset, shapes, first.data_root)
        parser.set_defaults(image_width=shapes.image_size, channels=shapes.channels)
    elif first.dataset in PRESETS:
        parser.set_defaults(**PRESETS[first.dataset])
    return parser.parse_args(argv)


def demo_data(args: argparse.Namespace, argv: list[str] | None) -> None:
    """``--demo`` without ``--data_root``: make (once) a small M3SO-NB beside the logs."""
    given = argv if argv is not None else sys.argv[1:]
    if any(a == "--data_root" or a.startswith("--data_root=") for a in given):
        return
    from M3SO_Gen_Code.generate_m3so import generate

    root = Path(args.log_dir) / "m3so_nb_data"
    if not (root / "dataset.json").is_file():
        print(f"demo: making a small M3SO-NB ({DEMO_DATA['num_train']} train / {DEMO_DATA['num_test']} test clips) in {root}")
        generate(root, no_block=True, overwrite=True, **DEMO_DATA)
    args.data_root = str(root)


def model_config(args: argparse.Namespace, audio_shape: tuple[int, int]) -> Sound2SightConfig:
    """The model's config from the flags, the data's audio shape and ``--n_past``."""
    try:
        return Sound2SightConfig(**config_kwargs(Sound2SightConfig, args), audio_shape=tuple(audio_shape),
                                 n_past=args.n_past)
    except ValueError as err:
        raise InputError(str(err)) from None


def main(argv: list[str] | None = None) -> Path:
    """Train; returns the log folder."""
    from utils import check_output_folder

    args = parse_args(argv)
    check_output_folder(run_folder(args), "--model_dir" if args.model_dir else "--log_dir")  # before any work
    rank, world, device = runtime.setup_distributed(args.device)
    try:
        # one training per run folder: a second process pointed at it is refused by name
        with RunLock(run_folder(args), "training") if rank == 0 else contextlib.nullcontext():
            return train(args, argv, rank, world, device)
    finally:
        runtime.cleanup_distributed()


def run_folder(args: argparse.Namespace) -> Path:
    """The run's folder: ``--model_dir``, else ``--log_dir`` (``/--name``)."""
    if args.model_dir:
        return Path(args.model_dir)
    return Path(args.log_dir) / args.name if args.name else Path(args.log_dir)


def train(args: argparse.Namespace, argv: list[str] | None, rank: int, world: int, device: torch.device) -> Path:
    from checkpoints import check_config, read_checkpoint, saved_config
    from models.latent import migrate_state_dict
    from models.sound2sight import Sound2Sight

    log_dir = run_folder(args)
    if args.model_dir:
        args.log_dir, args.name, args.resume = args.model_dir, "", True
    if args.demo:  # running the demo again continues (or just re-evaluates) the same run
        args.resume = True
    if not args.resume and (log_dir / "checkpoints" / "last.pt").exists():
        raise InputError(f"{log_dir} already holds a training run; pass --resume to continue it, "
                         "or choose another --log_dir/--name")
    if args.demo and rank == 0:
        demo_data(args, argv)
    if args.demo and world > 1:
        torch.distributed.barrier()
        demo_data(args, argv)
    if args.no_audio and not args.no_disc:
        args.no_disc = True
        if rank == 0:
            print("--no_audio: training without the (audio-visual) discriminator, as SVG-LP")
    if args.amp and device.type == "cpu" and not native_bf16() and rank == 0:
        print("warning: --amp on a CPU without bf16 instructions (AVX512-BF16/AMX): bfloat16 is emulated and "
              "many times slower than float32 here (measured ~25x on an AVX2 EPYC); drop --amp", file=sys.stderr)
    if args.batch_size % world:
        raise InputError(f"--batch_size {args.batch_size} must be divisible by the {world} torchrun processes")
    seq_len = args.n_past + args.n_future
    if args.n_past < 1 or args.n_future < 1:
        raise InputError("--n_past and --n_future must be at least 1")

    info = dataset_info(args.data_root)
    check_preset(args.dataset, dataset_shapes(args.data_root), args.data_root)  # the data may be new since parse_args
    if seq_len > info["num_frames"]:
        raise InputError(f"--n_past {args.n_past} + --n_future {args.n_future} = {seq_len} frames, but the clips in "
                         f"{args.data_root} have {info['num_frames']}; lower --n_past/--n_future")
    n_eval = min(args.n_eval, info["num_frames"])
    if n_eval <= args.n_past:
        raise InputError(f"--n_eval {args.n_eval} must exceed --n_past {args.n_past}")
    train_set = open_dataset(args.data_root, "train", seq_len, image_width=args.image_width, channels=args.channels)
    test_set = open_dataset(args.data_root, "test", n_eval, image_width=args.image_width, channels=args.channels)
    per_rank = args.batch_size // world
    if len(train_set) < per_rank:
        raise InputError(f"{args.data_root} has {len(train_set)} training clips, fewer than one batch "
                         f"(--batch_size {args.batch_size}); lower --batch_size")

    seed_everything(args.seed)
    cfg = model_config(args, info["audio_shape"])
    model = Sound2Sight(cfg)
    with torch.no_grad():
        model.decoder.output_conv.bias.fill_(args.output_bias)
        if args.logvar_bias:
            model.prior.lstm.logvar.bias.fill_(args.logvar_bias)
            model.posterior.lstm.logvar.bias.fill_(args.logvar_bias)
    model = model.to(device)
    optimizer = model.configure_optimizer(args.lr, args.disc_lr, args.beta1, args.optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp and device.type == "cuda")

    start_epoch, best_val = 0, math.inf
    resume_iteration, resume_sums, resume_seconds = 0, {}, 0.0
    ckpt_dir = log_dir / "checkpoints"
    metrics_log = training.MetricsLog(log_dir / "metrics.csv")
    if args.resume and (ckpt_dir / "last.pt").is_file():
        ckpt = read_checkpoint(ckpt_dir / "last.pt", map_location=device)
        check_config(ckpt_dir / "last.pt", saved_config(ckpt), cfg)
        model.load_state_dict(migrate_state_dict(ckpt["model"]))
        optimizer.load_state_dict(checkpoints.migrate_optimizer_state(ckpt["optimizer"], ckpt["model"], model))
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best_val = int(ckpt["epoch"]), float(ckpt["best_val"])
        checkpoints.set_rng_state(ckpt["rng"])
        metrics_log.truncate(start_epoch)
        partial = ckpt.get("partial_epoch") or {}  # written when a signal stopped a run mid-epoch
        resume_iteration = int(partial.get("iteration", 0))
        resume_sums, resume_seconds = dict(partial.get("sums", {})), float(partial.get("seconds", 0.0))
        if rank == 0:
            print(f"resuming {ckpt_dir / 'last.pt'} after epoch {start_epoch}"
                  + (f" and {resume_iteration} iterations of epoch {start_epoch}" if resume_iteration else ""))
    else:
        if args.resume and rank == 0:
            print(f"--resume: no checkpoint in {ckpt_dir} yet, starting afresh")
        metrics_log.rows = []
    if world > 1:  # different sampling noise per rank; identical weights come from DDP's broadcast
        torch.manual_seed(args.seed + 7919 * rank + 104729 * start_epoch)

    if rank == 0:
        log_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(log_dir / "config.json", {
            "args": vars(args), "model_config": asdict(cfg), "data": {k: v for k, v in info.items() if k != "json"},
            "world_size": world, "device": str(device), "torch": torch.__version__,
            "python": platform.python_version(), "n_eval": n_eval,
            "parameters": sum(p.numel() for p in model.parameters()),
        })

    net: torch.nn.Module = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        net = torch.compile(net, backend=args.compile_backend)

    # A fixed validation batch (the original selected its best model on one as well).
    if args.val_clips < 0:
        raise InputError(f"--val_clips must be >= 0, got {args.val_clips}")
    val_n = min(len(test_set), args.val_clips or min(max(per_rank, 8), 64))
    # Collated by hand: a DataLoader would draw its base seed from the global RNG and break exact resume.
    val_frames, val_audio = runtime.to_time_major(default_collate([test_set[i] for i in range(val_n)]), device)
    # Fixed training clips for BatchNorm re-estimation, chosen without touching the global RNG.
    if args.bn_recalibrate < 0:
        raise InputError(f"--bn_recalibrate must be >= 0, got {args.bn_recalibrate}")
    calib_n = min(args.bn_recalibrate * per_rank, len(train_set) // per_rank * per_rank)
    calib_idx = np.random.default_rng(args.seed).permutation(len(train_set))[:calib_n].tolist()
    calib_batches = [runtime.to_time_major(default_collate([train_set[i] for i in calib_idx[j:j + per_rank]]), device)
                     for j in range(0, calib_n, per_rank)]

    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True)
    workers = runtime.cap_workers(args.data_threads, world, say=rank == 0)
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, num_workers=workers,
                        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    iters = len(loader) if args.epoch_size <= 0 else min(args.epoch_size, len(loader))
    if rank == 0:
        print(f"training {'Sound2Sight' if cfg.use_audio else 'SVG-LP (no audio)'} on {args.data_root}: "
              f"{len(train_set)} clips, {iters} iterations/epoch, epochs {start_epoch}..{args.niter - 1}, "
              f"device {device}, {world} process(es); logs in {log_dir}")

    tb = None
    if rank == 0 and not args.no_tensorboard:
        tb = runtime.tensorboard_writer(log_dir / "tensorboard", purge_step=start_epoch * iters + resume_iteration)
    with StopSignals() as stop, (tb or contextlib.nullcontext()):
        for epoch in range(start_epoch, args.niter):
            sampler.set_epoch(epoch)
            loader.generator = torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)
            model.train()
            w = training.adv_weight(epoch, args.beta_gen_loss)
            lr_scale = training.lr_scale(epoch, args.niter, args.lr_schedule)
            for group in optimizer.param_groups:
                group["lr"] = (args.lr if group.get("name") == "generator" else args.disc_lr) * lr_scale
            skip = resume_iteration if epoch == start_epoch else 0
            sums: dict[str, float] = dict(resume_sums) if skip else {}
            t0 = time.perf_counter() - (resume_seconds if skip else 0.0)
            bar = tqdm(total=iters, initial=skip, desc=f"epoch {epoch}", disable=rank != 0, leave=False,
                       dynamic_ncols=True)
            with bar:  # closed (and cleared) on an error too, so the error line stands alone
                for i, batch in enumerate(loader):
                    if i >= iters:
                        break
                    if i < skip:  # done before the run was stopped: the epoch's data order is its own
                        continue
                    if runtime.stop_agreed(stop, device, world):
                        stop_run(stop, args, argv, rank, world, ckpt_dir, dict(
                            model=model, optimizer=optimizer, scaler=scaler, epoch=epoch, best_val=best_val, args=vars(args),
                            partial_epoch={"iteration": i, "sums": sums, "seconds": time.perf_counter() - t0}))
                    frames, audio = runtime.to_time_major(batch, device)
                    terms = training.train_step(net, optimizer, frames, audio, w, scaler=scaler, amp=args.amp,
                                                kl_scale=training.warmup(epoch, i, iters, args.kl_warmup),
                                                noise_scale=training.warmup(epoch, i, iters, args.noise_warmup))
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + v
                        if tb is not None:
                            tb.add_scalar(f"train/{k}", v, epoch * iters + i)
                    bar.update(1)
                    bar.set_postfix(mse=f"{terms.get('mse', float('nan')):.4f}", kld=f"{terms.get('kld', float('nan')):.3g}")
            means = runtime.mean_across_ranks({k: v / iters for k, v in sums.items()}, device)
            if rank == 0:
                training.recalibrate_batchnorm(model, calib_batches)
                val = training.validate(model, val_frames, val_audio, args.n_past, n_eval - args.n_past,
                                        args.val_nsample, seed=args.seed)
                prior = prior_monitor.prior_stats(model, val_frames, val_audio if cfg.use_audio else None)
                row = {"epoch": epoch, "adv_weight": w, "lr": args.lr * lr_scale, **means, **val,
                       **prior.as_dict("prior_"), "seconds": time.perf_counter() - t0}
                metrics_log.append(row)
                metrics_log.plot(log_dir / "losses.png")
                grid = training.sample_grid(model, val_frames, val_audio, args.n_past, n_eval - args.n_past,
                                            seed=args.seed)
                save_gif(log_dir / "samples" / f"epoch_{epoch:04d}.gif", grid)
                if tb is not None:
                    step = (epoch + 1) * iters
                    for k, v in val.items():
                        tb.add_scalar(f"val/{k[4:]}", v, step)
                    for k, v in prior.as_dict().items():
                        tb.add_scalar(f"prior/{k}", v, step)
                    tb.add_scalar("schedule/adv_weight", w, step)
                    tb.add_scalar("schedule/lr", args.lr * lr_scale, step)
                    # every time step of the GIF grid (rows: clips; columns: truth | posterior | samples)
                    tb.add_images("samples", grid, step, dataformats="NHWC")
                    tb.flush()
                improved = val["val_min_mse"] < best_val
                best_val = min(best_val, val["val_min_mse"])
                state = dict(model=model, optimizer=optimizer, scaler=scaler, epoch=epoch + 1,
                             best_val=best_val, args=vars(args))
                checkpoints.save_checkpoint(ckpt_dir / "last.pt", **state)
                if improved:
                    checkpoints.save_checkpoint(ckpt_dir / "best.pt", **state)
                if args.save_every and (epoch + 1) % args.save_every == 0:
                    checkpoints.save_checkpoint(ckpt_dir / f"epoch_{epoch + 1}.pt", **state)
                print(f"epoch {epoch}: mse {means.get('mse', float('nan')):.5f} kld {means.get('kld', float('nan')):.4g} "
                      f"| val min-MSE {val['val_min_mse']:.5f} (copy-last {val['val_copy_last_mse']:.5f}) "
                      f"SSIM {val['val_ssim']:.4f} PSNR {val['val_psnr']:.2f} | prior audio change "
                      f"{prior.audio_change:.3g} | {row['seconds']:.1f}s"
                      + (" *best*" if improved else ""))
            if world > 1:
                torch.distributed.barrier()
            if runtime.stop_agreed(stop, device, world):  # a signal during validation: last.pt is complete
                stop_run(stop, args, argv, rank, world, ckpt_dir, None)

    if rank == 0:
        if args.demo:
            run_demo_eval(args, log_dir, n_eval)
        print(f"done. logs: {log_dir}  (config.json, metrics.csv, losses.png, samples/, checkpoints/)")
    return log_dir


def stop_run(stop: StopSignals, args: argparse.Namespace, argv: list[str] | None, rank: int, world: int,
             ckpt_dir: Path, state: dict | None) -> None:
    """Stop after a SIGTERM/SIGINT: write ``last.pt`` (mid-epoch ``state``; single process only,
    a torchrun job keeps the last epoch's), print the resume command, exit 128 + signal."""
    import shlex

    if rank == 0:
        where = "at the end of the last epoch"
        if state is not None and world == 1:
            checkpoints.save_checkpoint(ckpt_dir / "last.pt", **state)
            where = f"after {state['partial_epoch']['iteration']} iterations of epoch {state['epoch']}"
        elif state is not None:
            where += " (the partial epoch is dropped under torchrun)"
        given = list(sys.argv[1:] if argv is None else argv)
        if "--resume" not in given:
            given.append("--resume")
        print(f"stopped {where}; checkpoint {ckpt_dir / 'last.pt'}. Resume with:\n"
              f"  python train_sound2sight.py {shlex.join(given)}", file=sys.stderr)
    raise SystemExit(128 + stop.requested)


def run_demo_eval(args: argparse.Namespace, log_dir: Path, n_eval: int) -> None:
    """``--demo``: score the FINAL checkpoint on the test split with the paper protocol (``best.pt``
    is chosen on the first test clips, so scoring it there would flatter it)."""
    import evaluation

    eval_dir = log_dir / "eval"
    settings = evaluation.EvalSettings(n_past=args.n_past, n_future=n_eval - args.n_past, nsample=args.eval_nsample,
                                       seed=args.seed, num_clips=DEMO_EVAL_CLIPS, batch_size=32, num_gifs=4,
                                       shuffle_audio=True)
    m = evaluation.evaluate_checkpoint(log_dir / "checkpoints" / "last.pt", args.data_root, eval_dir, settings,
                                       device=runtime.get_device(args.device), tensorboard=not args.no_tensorboard)
    model, base = m["paper"], m["copy_last_frame"]["paper"]
    verdict = lambda a, b: "beats" if a > b else "does NOT beat"  # noqa: E731
    print(f"demo evaluation: {m['num_clips']} test clips x {m['nsample']} samples, paper protocol "
          f"(per frame the best of the samples)\n"
          f"            Sound2Sight   copy last frame\n"
          f"  SSIM      {model['ssim']:11.4f}   {base['ssim']:15.4f}   ({verdict(model['ssim'], base['ssim'])} it)\n"
          f"  PSNR (dB) {model['psnr']:11.2f}   {base['psnr']:15.2f}   ({verdict(model['psnr'], base['psnr'])} it)")
    print(demo_audio_line(m))
    print(f"look at: {eval_dir}/gifs/, {eval_dir}/curves.png, {log_dir}/samples/, {log_dir}/losses.png")


def demo_audio_line(m: dict) -> str:
    """What giving every test clip another clip's audio costs the model (the evaluation's shuffle
    drop, paper protocol; positive: the sound helps), and whether its prior reads the sound."""
    if not m.get("use_audio"):
        return "audio: this model reads no audio (no-audio ablation)"
    drop = m["audio_shuffled"]["drop"]["paper"]
    prior = m.get("prior") or {}
    verdict = "the sound helps" if drop["ssim"] > 0 and drop["psnr"] > 0 else "the sound does NOT help"
    return (f"  swapped audio costs SSIM {drop['ssim']:+.4f}, PSNR {drop['psnr']:+.2f} dB ({verdict}); "
            f"prior's change under swapped audio {prior.get('audio_change', float('nan')):.3g}")


if __name__ == "__main__":
    run_cli(main)
