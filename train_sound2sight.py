"""Train Sound2Sight (or its no-audio ablation, or another method of ``--method``) on M3SO / M3SO-NB
or prepared real videos.

The paper's command keeps working with this script's name (same flags, same defaults). The
model's flags are those of the ``--method``'s config (methods.METHODS; default sound2sight:
Sound2SightConfig); ``--method X --help`` lists X's.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, default_collate
from tqdm import tqdm

import checkpoints
from cli import ArgumentParser, plain_text
import demo
import methods
import prior_monitor
import runtime
import training
from data import DATASETS, DEFAULT_DATA_ROOT, PRESETS, check_preset, dataset_info, dataset_shapes, open_dataset
from models.optim import OPTIMIZERS
from cli import add_config_flags, config_kwargs, explicit_dests
from errors import InputError, run_cli
from files import atomic_write_json
from media import save_gif
from runlock import RunLock
from runtime import native_bf16, seed_everything
from signals import StopSignals


def build_parser(method: str = methods.DEFAULT_METHOD) -> argparse.ArgumentParser:
    """Every flag, the model's from ``method``'s config dataclass (:data:`methods.METHODS`)."""
    p = ArgumentParser(description=plain_text(__doc__))
    # the original script's flag names and defaults, grouped by what they are for
    start = p.add_argument_group("quick start")
    start.add_argument("--demo", action="store_true",
                       help="make a small M3SO-NB (unless --data_root is given), train a small model, evaluate it")
    start.add_argument("--eval_nsample", type=int, default=20, help="--demo: samples per clip in the final evaluation")
    start.add_argument("--redo_eval", action="store_true",
                       help="--demo on a finished run: evaluate again (otherwise its evaluation is shown)")
    data = p.add_argument_group("data")
    data.add_argument("--data_root", default=DEFAULT_DATA_ROOT,
                      help="dataset folder (generated layout or legacy M3SO download); make the default one with "
                           f"python M3SO_Gen_Code/generate_m3so.py --dest {DEFAULT_DATA_ROOT}")
    data.add_argument("--dataset", default="smmnist", choices=DATASETS,
                      help="smmnist/m3so/m3so_nb: a generated or legacy M3SO folder; drums/painting: 64x64 colour "
                           "presets; av: any folder made by python -m data.prepare_av (shapes from its dataset.json)")
    data.add_argument("--n_past", type=int, default=30, help="context frames")
    data.add_argument("--n_future", type=int, default=30, help="frames predicted during training")
    data.add_argument("--n_eval", type=int, default=60,
                      help="frames in validation sequences (capped at the clip length)")
    data.add_argument("--num_digits", type=int, default=1, help="kept for the paper's command; the data decides")
    which = p.add_argument_group("method")
    which.add_argument("--method", default=methods.DEFAULT_METHOD, choices=list(methods.METHODS),
                       help="the trained method (methods.METHODS); the model flags below are its config's "
                            "(--method X --help lists X's)")
    # the model: one flag per field of the method's config (Sound2SightConfig: the original's names and defaults)
    config = methods.METHODS[method].config
    add_config_flags(p, config, f"model ({config.__name__})")
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
                          "value in the first epoch to 0 after the last (--niter), set at the start of each epoch")
    opt.add_argument("--batch_size", type=int, default=100,
                     help="global batch size (split over torchrun processes)")
    opt.add_argument("--niter", type=int, default=300, help="number of epochs")
    opt.add_argument("--epoch_size", type=int, default=600,
                     help="cap on iterations per epoch (an epoch is one pass over the training clips; 0 = no cap)")
    opt.add_argument("--seed", type=int, default=1, help="seed of every random number generator")
    opt.add_argument("--beta_gen_loss", type=float, default=0.0001,
                     help="adversarial weight: off in the first epoch, then x1 to epoch 301, x5 to 601, x10 to 901, "
                          "x100 after (epochs counted from 1, as the console and the checkpoints count them)")
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
    val.add_argument("--val_every", type=int, default=1,
                     help="validate (and draw losses.png, the sample GIF, best.pt) every N epochs and after the "
                          "last one; training computes the same either way")
    val.add_argument("--bn_recalibrate", type=int, default=4,
                     help="before each validation (and so in the checkpoints of validated epochs, the last one "
                          "included), re-estimate BatchNorm's running statistics over this many fixed training "
                          "batches under the current weights; 0 keeps the running averages of training (see "
                          "docs/DESIGN.md, BatchNorm)")
    rt = p.add_argument_group("runtime")
    rt.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    rt.add_argument("--num_workers", "--data_threads", dest="data_threads", type=int, default=5,
                    help="DataLoader worker processes (the original's --data_threads; capped at the CPU cores "
                         "this process may use)")
    rt.add_argument("--amp", action="store_true", help="mixed precision: bfloat16 on CPU, float16 on CUDA")
    rt.add_argument("--compile", action="store_true",
                    help="torch.compile the training step's model (on CPU the inductor compile takes minutes, "
                         "and recompiles once when the adversarial term starts after the first epoch)")
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
    parser = build_parser(method_of_argv(argv))
    first, _ = parser.parse_known_args(argv)
    if first.demo:
        parser.set_defaults(**demo.DEFAULTS)
        first, _ = parser.parse_known_args(argv)
    saved = checkpoints.run_args(run_folder(first))
    explicit = explicit_dests(parser, argv)
    if saved is not None and saved.get("method", first.method) != first.method and "method" not in explicit:
        given = list(argv if argv is not None else sys.argv[1:])
        if saved["method"] in methods.METHODS and not build_parser(saved["method"]).parse_known_args(given)[1]:
            return parse_args([*given, "--method", saved["method"]])  # the run's method takes these flags
        # flags of another method: the checkpoint refuses it by name when the run is resumed
    shapes = dataset_shapes(first.data_root, missing_ok=True)
    if shapes is not None:
        check_preset(first.dataset, shapes, first.data_root)
        parser.set_defaults(image_width=shapes.image_size, channels=shapes.channels)
    elif first.dataset in PRESETS:
        parser.set_defaults(**PRESETS[first.dataset])
    args = parser.parse_args(argv)
    args.explicit = sorted(explicit)  # what this command line asked for (messages; never a setting)
    args.continued = []
    if saved is not None:  # the run folder is the source of truth: continue with its own settings
        args.continued = checkpoints.continue_settings(args, explicit, saved, run_folder(args))
        args.resume = True
    return args


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings as saved in its checkpoints and config.json: every flag, without what
    :func:`parse_args` adds about this command line (``explicit``, ``continued``)."""
    return {k: v for k, v in vars(args).items() if k not in ("explicit", "continued")}


def method_of_argv(argv: list[str] | None) -> str:
    """``--method`` alone, read before the other flags (which depend on it); a name not in
    :data:`methods.METHODS` ends here as one error line (exit 2) listing the choices."""
    pre = ArgumentParser(add_help=False, allow_abbrev=False)  # --m must stay --model's abbreviation
    pre.add_argument("--method", default=methods.DEFAULT_METHOD, choices=list(methods.METHODS))
    return pre.parse_known_args(argv)[0].method


def model_config(args: argparse.Namespace, audio_shape: tuple[int, int]) -> Any:
    """The ``--method``'s config from the flags, the data's audio shape and ``--n_past``."""
    config = methods.get(args.method).config
    try:
        return config(**config_kwargs(config, args), audio_shape=tuple(audio_shape), n_past=args.n_past)
    except ValueError as err:
        raise InputError(str(err)) from None


def main(argv: list[str] | None = None) -> Path:
    """Train; returns the log folder."""
    from files import check_output_folder

    args = parse_args(argv)
    check_output_folder(run_folder(args), "--model_dir" if args.model_dir else "--log_dir")  # before any work
    rank, world, device = runtime.setup_distributed(args.device)
    folder = run_folder(args)
    existed = folder.exists()
    try:
        # one training per run folder: a second process pointed at it is refused by name
        with RunLock(folder, "training") if rank == 0 else contextlib.nullcontext():
            return train(args, argv, rank, world, device)
    except BaseException:
        if rank == 0 and not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a start that failed leaves no empty run folder behind
        raise
    finally:
        runtime.cleanup_distributed()


def run_folder(args: argparse.Namespace) -> Path:
    """The run's folder: ``--model_dir``, else ``--log_dir`` (``/--name``)."""
    if args.model_dir:
        return Path(args.model_dir)
    return Path(args.log_dir) / args.name if args.name else Path(args.log_dir)


@dataclass
class Run:
    """Everything one training run holds between its epochs (built once by :func:`setup_run`)."""

    args: argparse.Namespace
    argv: list[str] | None
    rank: int
    world: int
    device: torch.device
    log_dir: Path
    method: methods.Method
    cfg: Any                               # the method's config
    model: torch.nn.Module                 # the unwrapped model, a methods.TrainedModel (checkpoints, validation)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_set: Any
    test_set: Any                          # validation clips of n_eval frames
    n_eval: int
    metrics_log: training.MetricsLog
    net: torch.nn.Module | None = None     # what the step runs: the model, DDP-wrapped and/or compiled
    sampler: Any = None
    loader: Any = None
    iters: int = 0
    val_frames: torch.Tensor | None = None  # [n_eval, V, C, H, W] the fixed validation batch
    val_audio: torch.Tensor | None = None   # [n_eval, V, 1, F, S]
    calib_batches: list = field(default_factory=list)
    tb: Any = None
    info: dict[str, Any] = field(default_factory=dict)  # the dataset's dataset_info
    epoch_start: float = 0.0                            # perf_counter at the current epoch's start

    @property
    def ckpt_dir(self) -> Path:
        return self.log_dir / "checkpoints"

    def save(self, name: str, progress: checkpoints.Progress) -> None:
        checkpoints.save_training(self.ckpt_dir / name, self.method.name, self.model, self.optimizer, self.scaler,
                                  progress, settings(self.args), iters_per_epoch=self.iters)


def train(args: argparse.Namespace, argv: list[str] | None, rank: int, world: int, device: torch.device) -> Path:
    """Set up, resume, then per epoch: run it, end it (validate, log, checkpoint)."""
    run = setup_run(args, argv, rank, world, device)
    progress = resume(run)
    if progress.epoch >= args.niter and not progress.iteration:
        return finished(run)
    finish_setup(run, progress)
    with StopSignals() as stop, (run.tb or contextlib.nullcontext()):
        for epoch in range(progress.epoch, args.niter):
            means = run_epoch(run, epoch, progress, stop)
            progress = end_epoch(run, epoch, means, progress, stop)
    if rank == 0:
        if args.demo:
            demo.evaluate(args, run.log_dir, run.n_eval, run.method.label(run.cfg))
        print(f"done. logs: {run.log_dir}  (config.json, metrics.csv, losses.png, samples/, checkpoints/)")
    return run.log_dir


def finished(run: Run) -> Path:
    """A run that has trained all its epochs says so and where its results are, and trains no more;
    the demo evaluates only when its evaluation is missing or ``--redo_eval`` asks."""
    args = run.args
    if run.rank == 0:
        print(f"{run.log_dir} has finished its {args.niter} epochs; results: {run.log_dir}/ (config.json, "
              f"metrics.csv, losses.png, samples/, checkpoints/). To train longer, run the same command with "
              f"--niter above {args.niter}.")
        if args.demo:
            demo.evaluate(args, run.log_dir, run.n_eval, run.method.label(run.cfg), again=args.redo_eval)
    return run.log_dir


def check_flags(args: argparse.Namespace, argv: list[str] | None, rank: int, world: int, device: torch.device) -> None:
    """Flag fix-ups and checks that need no data: --model_dir, the demo's data, --no_audio, --amp."""
    if args.model_dir:
        args.log_dir, args.name, args.resume = args.model_dir, "", True
    if args.demo:  # running the demo again continues (or just re-evaluates) the same run
        args.resume = True
    given = list(argv if argv is not None else sys.argv[1:])
    if args.demo and rank == 0:
        demo.ensure_data(args, given)
    if args.demo and world > 1:
        torch.distributed.barrier()
        demo.ensure_data(args, given)
    if getattr(args, "no_audio", False) and not getattr(args, "no_disc", True):  # Sound2Sight's flags
        args.no_disc = True
        if rank == 0:
            print("--no_audio: training without the (audio-visual) discriminator, as SVG-LP")
    if args.amp and device.type == "cpu" and not native_bf16() and rank == 0:
        print("warning: --amp on a CPU without bf16 instructions (AVX512-BF16/AMX): bfloat16 is emulated and "
              "many times slower than float32 here (measured ~25x on an AVX2 EPYC); drop --amp", file=sys.stderr)
    if args.batch_size % world:
        raise InputError(f"--batch_size {args.batch_size} must be divisible by the {world} torchrun processes")
    if args.n_past < 1 or args.n_future < 1:
        raise InputError("--n_past and --n_future must be at least 1")
    if args.val_every < 1:
        raise InputError(f"--val_every must be >= 1 (1: validate after every epoch), got {args.val_every}")


def setup_run(args: argparse.Namespace, argv: list[str] | None, rank: int, world: int, device: torch.device) -> Run:
    """Checks, data, the model (seeded) with its optimiser; nothing is written yet."""
    check_flags(args, argv, rank, world, device)
    seq_len = args.n_past + args.n_future
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
    if len(train_set) < args.batch_size // world:
        raise InputError(f"{args.data_root} has {len(train_set)} training clips, fewer than one batch "
                         f"(--batch_size {args.batch_size}); lower --batch_size")

    seed_everything(args.seed)
    method = methods.get(args.method)
    cfg = model_config(args, info["audio_shape"])
    model = method.build(cfg)
    check_method_flags(args, method, model)
    init_biases(args, method, model)
    model = model.to(device)
    run = Run(args=args, argv=argv, rank=rank, world=world, device=device, log_dir=run_folder(args), method=method,
              cfg=cfg, model=model,
              optimizer=model.configure_optimizer(args.lr, args.disc_lr, args.beta1, args.optimizer),
              scaler=torch.amp.GradScaler("cuda", enabled=args.amp and device.type == "cuda"),
              train_set=train_set, n_eval=n_eval, metrics_log=training.MetricsLog(run_folder(args) / "metrics.csv"),
              info=info, test_set=test_set)
    return run


#: The initial-bias flags and the model hook each calls (optional capabilities, :mod:`methods`).
BIAS_FLAGS = {"output_bias": "init_output_bias", "logvar_bias": "init_logvar_bias"}


def init_biases(args: argparse.Namespace, method: methods.Method, model: torch.nn.Module) -> None:
    """``--output_bias`` / ``--logvar_bias`` through the model's ``init_output_bias`` /
    ``init_logvar_bias``; a non-zero flag for a model without that hook is one InputError line
    (0, the default, is every model's own initialisation and asks for nothing)."""
    for flag, hook in BIAS_FLAGS.items():
        value = getattr(args, flag)
        if not value:
            continue
        init = getattr(model, hook, None)
        if init is None:
            raise InputError(f"--{flag} {value}: method {method.name} has no such bias ({type(model).__name__} "
                             f"lacks {hook}); drop --{flag}")
        init(value)


def check_method_flags(args: argparse.Namespace, method: methods.Method, model: torch.nn.Module) -> None:
    """``--kl_warmup`` / ``--noise_warmup`` need a ``forward`` that takes ``kl_scale`` / ``noise_scale``."""
    import inspect

    params = inspect.signature(model.forward).parameters
    for flag, keyword in (("kl_warmup", "kl_scale"), ("noise_warmup", "noise_scale")):
        if getattr(args, flag) and keyword not in params:
            raise InputError(f"--{flag}: method {method.name} has no {keyword.replace('_', ' ')} to ramp; "
                             f"drop --{flag}")


def resume(run: Run) -> checkpoints.Progress:
    """``--resume`` with a ``last.pt``: where that run stood (states and RNGs restored); else a fresh start."""
    last = run.ckpt_dir / "last.pt"
    if run.args.resume and last.is_file():
        progress = checkpoints.resume_training(last, run.method.name, run.model, run.optimizer, run.scaler, run.device)
        run.metrics_log.truncate(progress.epoch)
        if run.rank == 0:
            part = f" and {progress.iteration} iterations of epoch {progress.epoch + 1}" if progress.iteration else ""
            print(f"resuming {last} after epoch {progress.epoch}/{run.args.niter}{part}, with the run's own settings"
                  + (f"; changed on this command line: {', '.join(run.args.continued)}"
                     if getattr(run.args, "continued", None) else ""))
        return progress
    if "resume" in getattr(run.args, "explicit", ()) and run.rank == 0:
        print(f"--resume: no checkpoint in {run.ckpt_dir} yet, starting afresh")
    run.metrics_log.rows = []
    return checkpoints.Progress()


def finish_setup(run: Run, progress: checkpoints.Progress) -> None:
    """config.json, DDP/compile, the fixed validation and BatchNorm batches, the loader, TensorBoard."""
    args, rank, world, device = run.args, run.rank, run.world, run.device
    if world > 1:  # different sampling noise per rank; identical weights come from DDP's broadcast
        torch.manual_seed(args.seed + 7919 * rank + 104729 * progress.epoch)
    if rank == 0:
        run.log_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.log_dir / "config.json", {
            "method": run.method.name, "args": settings(args), "model_config": asdict(run.cfg),
            "data": {k: v for k, v in run.info.items() if k != "json"},
            "world_size": world, "device": str(device), "torch": torch.__version__,
            "python": platform.python_version(), "n_eval": run.n_eval,
            "parameters": sum(p.numel() for p in run.model.parameters()),
        })
    run.net = run.model
    if world > 1:
        run.net = DistributedDataParallel(run.model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        run.net = torch.compile(run.net, backend=args.compile_backend)

    # A fixed validation batch (the original selected its best model on one as well).
    if args.val_clips < 0:
        raise InputError(f"--val_clips must be >= 0, got {args.val_clips}")
    per_rank = args.batch_size // world
    val_n = min(len(run.test_set), args.val_clips or min(max(per_rank, 8), 64))
    # Collated by hand: a DataLoader would draw its base seed from the global RNG and break exact resume.
    run.val_frames, run.val_audio = runtime.to_time_major(default_collate([run.test_set[i] for i in range(val_n)]),
                                                          device)
    # Fixed training clips for BatchNorm re-estimation, chosen without touching the global RNG.
    if args.bn_recalibrate < 0:
        raise InputError(f"--bn_recalibrate must be >= 0, got {args.bn_recalibrate}")
    calib_n = min(args.bn_recalibrate * per_rank, len(run.train_set) // per_rank * per_rank)
    calib_idx = np.random.default_rng(args.seed).permutation(len(run.train_set))[:calib_n].tolist()
    run.calib_batches = [runtime.to_time_major(default_collate([run.train_set[i] for i in calib_idx[j:j + per_rank]]),
                                               device) for j in range(0, calib_n, per_rank)]

    run.sampler = DistributedSampler(run.train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                     drop_last=True)
    given = sys.argv[1:] if run.argv is None else run.argv
    asked = any(a.split("=")[0] in ("--num_workers", "--data_threads") for a in given)
    workers = runtime.cap_workers(args.data_threads, world, say=rank == 0 and asked)  # silent for the default
    run.loader = DataLoader(run.train_set, batch_size=per_rank, sampler=run.sampler, num_workers=workers,
                            drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    run.iters = len(run.loader) if args.epoch_size <= 0 else min(args.epoch_size, len(run.loader))
    if rank == 0:
        print(f"training {run.method.label(run.cfg)} on {args.data_root}: "
              f"{len(run.train_set)} clips, {run.iters} iterations/epoch, epochs {progress.epoch + 1}..{args.niter}, "
              f"device {device}, {world} process(es); logs in {run.log_dir}")
    if rank == 0 and not args.no_tensorboard:
        run.tb = runtime.tensorboard_writer(run.log_dir / "tensorboard" / "train",
                                            purge_step=progress.epoch * run.iters + progress.iteration)


def run_epoch(run: Run, epoch: int, progress: checkpoints.Progress, stop: StopSignals) -> dict[str, float]:
    """Train one epoch (continuing a partial one recorded in ``progress``); returns the mean of each
    logged term over the epoch, averaged over processes. A stop request writes a mid-epoch
    checkpoint and exits (:func:`stop_run`)."""
    args, rank = run.args, run.rank
    run.sampler.set_epoch(epoch)
    run.loader.generator = torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)
    run.model.train()
    w = training.adv_weight(epoch, args.beta_gen_loss)
    lr_scale = training.lr_scale(epoch, args.niter, args.lr_schedule)
    for group in run.optimizer.param_groups:
        group["lr"] = (args.lr if group.get("name") == "generator" else args.disc_lr) * lr_scale
    skip = progress.iteration if epoch == progress.epoch else 0
    sums: dict[str, float] = dict(progress.sums) if skip else {}
    t0 = time.perf_counter() - (progress.seconds if skip else 0.0)
    bar = tqdm(total=run.iters, initial=skip, desc=f"epoch {epoch + 1}/{args.niter}", disable=rank != 0,
               leave=False, dynamic_ncols=True)
    with bar:  # closed (and cleared) on an error too, so the error line stands alone
        for i, batch in enumerate(run.loader):
            if i >= run.iters:
                break
            if i < skip:  # done before the run was stopped: the epoch's data order is its own
                continue
            if runtime.stop_agreed(stop, run.device, run.world):
                bar.close()  # the "stopped ..." line then stands on its own line
                stop_run(stop, run, checkpoints.Progress(epoch, progress.best_val, i, sums, time.perf_counter() - t0))
            frames, audio = runtime.to_time_major(batch, run.device)
            terms = training.train_step(run.net, run.optimizer, frames, audio, w, scaler=run.scaler, amp=args.amp,
                                        kl_scale=training.warmup(epoch, i, run.iters, args.kl_warmup),
                                        noise_scale=training.warmup(epoch, i, run.iters, args.noise_warmup))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
                if run.tb is not None:
                    run.tb.add_scalar(f"train/{k}", v, epoch * run.iters + i)
            bar.update(1)
            bar.set_postfix(mse=f"{terms['train_mse_loss']:.4f}", kld=f"{terms['kld_loss']:.3g}")
    means = runtime.mean_across_ranks({k: v / run.iters for k, v in sums.items()}, run.device)
    run.epoch_start = t0  # the epoch's logged seconds count its validation too
    return means


def end_epoch(run: Run, epoch: int, means: dict[str, float], progress: checkpoints.Progress,
              stop: StopSignals) -> checkpoints.Progress:
    """Log and checkpoint epoch ``epoch`` on rank 0: a metrics.csv row and ``last.pt`` every epoch;
    on a validation epoch (:func:`training.validates`) also BatchNorm re-estimation, validation,
    the prior monitor, losses.png, the sample GIF and ``best.pt``. Returns the progress after it.
    A stop request during it exits after last.pt."""
    args = run.args
    if run.rank == 0:
        w = training.adv_weight(epoch, args.beta_gen_loss)
        lr = args.lr * training.lr_scale(epoch, args.niter, args.lr_schedule)
        # epoch: the 0-based index (the schedules' and the release's); epochs_done: the console's, the checkpoints'
        row: dict[str, Any] = {"epoch": epoch, "epochs_done": epoch + 1, "adv_weight": w, "lr": lr, **means}
        val: dict[str, float] = {}
        prior, grid = None, None
        if training.validates(epoch, args.niter, args.val_every):
            training.recalibrate_batchnorm(run.model, run.calib_batches)
            val = training.validate(run.model, run.val_frames, run.val_audio, args.n_past,
                                    run.n_eval - args.n_past, args.val_nsample, seed=args.seed)
            # None for a method without a learned prior (methods.has_latent_prior): no prior_* columns
            prior = prior_monitor.prior_stats(run.model, run.val_frames,
                                              run.val_audio if run.cfg.use_audio else None)
            row.update(val)
            row.update(prior.as_dict("prior_") if prior is not None else {})
        row["seconds"] = time.perf_counter() - run.epoch_start
        if val:
            grid = training.sample_grid(run.model, run.val_frames, run.val_audio, args.n_past,
                                        run.n_eval - args.n_past, seed=args.seed)
        log_epoch(run, epoch, row, val, prior, grid, w, lr)
        improved = bool(val) and val["val_min_mse"] < progress.best_val
        progress = checkpoints.Progress(epoch + 1, min(progress.best_val, val.get("val_min_mse", math.inf)))
        run.save("last.pt", progress)
        if improved:
            run.save("best.pt", progress)
        if args.save_every and (epoch + 1) % args.save_every == 0:
            run.save(f"epoch_{epoch + 1}.pt", progress)
        line = (f"epoch {epoch + 1}/{args.niter}: train mse loss {means['train_mse_loss']:.5f} "
                f"kld loss {means['kld_loss']:.4g} | ")
        if val:
            line += (f"val min-MSE {val['val_min_mse']:.5f} (copy-last {val['val_copy_last_mse']:.5f}) "
                     f"SSIM {val['val_ssim']:.4f} PSNR {val['val_psnr']:.2f} | "
                     + (f"prior audio change {prior.audio_change:.3g} | " if prior is not None else ""))
        print(line + f"{row['seconds']:.1f}s" + (" *best*" if improved else ""))
    else:
        progress = checkpoints.Progress(epoch + 1, progress.best_val)
    if run.world > 1:
        torch.distributed.barrier()
    if runtime.stop_agreed(stop, run.device, run.world):  # a signal during validation: last.pt is complete
        stop_run(stop, run, None)
    return progress


def log_epoch(run: Run, epoch: int, row: dict[str, Any], val: dict[str, float], prior: prior_monitor.PriorStats | None,
              grid: np.ndarray | None, adv_w: float, lr: float) -> None:
    """One epoch's record: a metrics.csv row and the schedules in TensorBoard; with a validation
    (``grid`` not None) also losses.png, samples/epoch_N.gif and TensorBoard's validation figures."""
    run.metrics_log.append(row)
    if grid is not None:
        run.metrics_log.plot(run.log_dir / "losses.png")
        save_gif(run.log_dir / "samples" / f"epoch_{epoch + 1:04d}.gif", grid)  # as checkpoints/epoch_N.pt
    if run.tb is None:
        return
    step = (epoch + 1) * run.iters
    run.tb.add_scalar("schedule/adv_weight", adv_w, step)
    run.tb.add_scalar("schedule/lr", lr, step)
    if grid is not None:
        for k, v in val.items():
            run.tb.add_scalar(f"val/{k[4:]}", v, step)
        for k, v in (prior.as_dict() if prior is not None else {}).items():
            run.tb.add_scalar(f"prior/{k}", v, step)
        # one still per clip: rows truth | posterior (when the method has one) | samples, time left to right
        rows = training.grid_labels(run.model, 3)
        for b, strip in enumerate(training.clip_strips(grid, min(4, run.val_frames.shape[1]), len(rows))):
            run.tb.add_image(f"samples/clip_{b} (rows: {training.describe_rows(rows)})", strip, step,
                             dataformats="HWC")
    run.tb.flush()


def stop_run(stop: StopSignals, run: Run, partial: checkpoints.Progress | None) -> None:
    """Stop after a SIGTERM/SIGINT: write ``last.pt`` (mid-epoch ``partial``; single process only,
    a torchrun job keeps the last epoch's), print the resume command, exit 128 + signal."""
    import shlex

    if run.rank == 0:
        where = "at the end of the last epoch"
        if partial is not None and run.world == 1:
            run.save("last.pt", partial)
            where = f"after {partial.iteration} iterations of epoch {partial.epoch + 1}/{run.args.niter}"
        elif partial is not None:
            where += " (the partial epoch is dropped under torchrun)"
        # the run folder holds every setting: naming it is enough (the same command works too)
        print(f"stopped {where}; checkpoint {run.ckpt_dir / 'last.pt'}. Resume with:\n"
              f"  python train_sound2sight.py {shlex.join(['--log_dir', str(run.log_dir), '--resume'])}",
              file=sys.stderr)
    raise SystemExit(128 + stop.requested)


if __name__ == "__main__":
    run_cli(main)
