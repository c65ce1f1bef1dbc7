"""The CPU-scale study: does Sound2Sight beat copy-last-frame, and does the sound help?

One command runs everything, on 2 CPU cores, and can be killed at any point and started
again (it continues where it stopped):

    python experiments/study.py                  # the whole study (a few hours on 2 cores)
    python experiments/study.py --plan           # print the steps and which are done
    python experiments/study.py --scale tiny     # the same pipeline at toy size (the tests use it)

Steps, each skipped once done:

1. data: M3SO-NB and M3SO from ``M3SO_Gen_Code/generate_m3so.py`` (seeded, same bytes every time);
2. training of every configuration (``train_sound2sight.py --resume``, a checkpoint per
   epoch, so a killed training resumes exactly): Sound2Sight, the no-audio ablation
   (SVG-LP with the same backbone), the no-discriminator ablation, each with the same
   budget; several seeds where the question needs a spread;
3. evaluation of each run's FINAL checkpoint (``last.pt``: ``best.pt`` is chosen on test
   clips) with ``generate_sound2sight.py``: paper and best-sample protocols, event-aligned
   metrics, the audio-shuffle test; the baselines (``baselines.BASELINES``) come with every evaluation;
4. the report: ``results.json``, ``tables.md`` and figures in ``--results``.

Runs and data go to ``--out`` (large, not committed); the report to ``--results``, with
each finished run's small files (its evaluation, training curve, config, one GIF) under
``--results/runs/``: a run kept there counts as done even on a fresh checkout without ``--out``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cli import ArgumentParser, plain_text  # noqa: E402
from experiments.report import write_report  # noqa: E402
from errors import InputError, run_cli  # noqa: E402
from files import atomic_write_bytes, atomic_write_json  # noqa: E402
from runtime import cpu_name  # noqa: E402
from signals import StopSignals  # noqa: E402


@dataclass(frozen=True)
class Scale:
    """Everything that sets the study's size."""

    num_train: int
    num_test: int
    train_flags: tuple[str, ...]   # passed to train_sound2sight.py (besides data, log dir, seed, ablation)
    eval_flags: tuple[str, ...]    # passed to generate_sound2sight.py
    seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)  # per "<dataset>/<config>"
    datasets: tuple[str, ...] = ("m3so_nb", "m3so")  # what the scale covers (and --datasets narrows)
    configs: tuple[str, ...] = ("sound2sight", "no_audio", "no_disc")  # what it trains (and --configs narrows)
    curve: tuple[int, ...] = ()  # epochs whose checkpoints/epoch_N.pt are evaluated too (the learning curve)


# The demo's recipe (measured in bench/learning.py; see README "Time to quality"), at the
# paper's training horizon of 5 + 15 frames.
COMMON_TRAIN = ("--n_past", "5", "--n_future", "15", "--n_eval", "20", "--batch_size", "16", "--nf", "16",
                "--output_bias", "-6", "--lr_schedule", "cosine", "--data_threads", "0", "--save_every", "0", "--val_nsample", "5",
                "--val_clips", "64")
#: The recipe's flags on top of COMMON_TRAIN (the release's defaults otherwise).
RECIPE = ("--logvar_bias", "-4")
#: Toy size for the tests: seconds, not hours.
TINY = Scale(num_train=16, num_test=6,
              train_flags=("--n_past", "3", "--n_future", "3", "--n_eval", "6", "--batch_size", "4",
                           "--g_dim", "16", "--rnn_size", "32", "--z_dim", "4", "--dim_ff", "32",
                           "--disc_rnn_size", "16", "--nhead", "2", "--nf", "8", "--data_threads", "0",
                           "--save_every", "0", "--val_nsample", "2", "--niter", "2", "--epoch_size", "2",
                           "--bn_recalibrate", "1"),
              eval_flags=("--n_past", "3", "--n_future", "3", "--nsample", "3", "--N", "6", "--batch_size", "3",
                          "--num_gifs", "1"),
              seeds={"m3so/sound2sight": (1, 2)})

SCALES = {
    # The study's CPU scale: width 16, 5 + 15 frames, batch 16, 1,500 iterations per configuration.
    "cpu": Scale(num_train=4000, num_test=256,
                 train_flags=COMMON_TRAIN + ("--niter", "30", "--epoch_size", "50"),
                 eval_flags=("--n_past", "5", "--n_future", "15", "--nsample", "20", "--N", "256",
                             "--batch_size", "32", "--num_gifs", "4"),
                 seeds={"m3so_nb/sound2sight": (1, 2), "m3so_nb/no_audio": (1, 2),
                        "m3so/sound2sight": (1, 2), "m3so/no_audio": (1, 2)}),
    # M3SO at twice the iterations (3,000): where 1,500 left every model below copy-last-frame on SSIM.
    "cpu_long": Scale(num_train=4000, num_test=256,
                      train_flags=COMMON_TRAIN + ("--niter", "60", "--epoch_size", "50"),
                      eval_flags=("--n_past", "5", "--n_future", "15", "--nsample", "20", "--N", "256",
                                  "--batch_size", "32", "--num_gifs", "4"),
                      seeds={"m3so/sound2sight": (1, 2), "m3so/no_audio": (1, 2)}, datasets=("m3so",)),
    # The recipe that keeps the prior on the sound (RESULTS.md, "Keeping the prior on the sound"):
    # the prior's and posterior's log-variance heads start at -4 (sigma ~0.14 instead of ~1), so
    # the latent's noise does not drown the prior's mean before the predictor learns to read it.
    # Three seeds of Sound2Sight and of the no-audio ablation, the same recipe and the cpu scale's
    # budget (1,500 iterations), M3SO first.
    "recipe": Scale(num_train=4000, num_test=256,
                    train_flags=COMMON_TRAIN + ("--niter", "30", "--epoch_size", "50") + RECIPE,
                    eval_flags=("--n_past", "5", "--n_future", "15", "--nsample", "20", "--N", "256",
                                "--batch_size", "32", "--num_gifs", "4"),
                    seeds={f"{ds}/{cfg}": (1, 2, 3) for ds in ("m3so", "m3so_nb") for cfg in ("sound2sight", "no_audio")},
                    datasets=("m3so", "m3so_nb"), configs=("sound2sight", "no_audio")),
    # Past the heuristics (RESULTS.md, "The learning curve"): the recipe at the demo's widths (LSTMs and
    # transformers 128 wide), 12,000 iterations (240 epochs of 50, the cosine over all of them) on 16,000
    # training clips (each seen 12 times: the 4,000 of the other scales would be seen 48 times), a
    # checkpoint every 30 epochs, the curve evaluated at 1,500, 3,000, 6,000 and 12,000 iterations.
    "long": Scale(num_train=16000, num_test=256,
                  train_flags=COMMON_TRAIN + ("--save_every", "30",  # the last --save_every wins "--val_every", "10", "--rnn_size", "128", "--disc_rnn_size", "128",
                     "--niter", "240", "--epoch_size", "50") + RECIPE,
                  eval_flags=("--n_past", "5", "--n_future", "15", "--nsample", "20", "--N", "256",
                              "--batch_size", "32", "--num_gifs", "4"),
                  seeds={"m3so/sound2sight": (1, 2, 3), "m3so/no_audio": (1, 2, 3), "m3so_nb/sound2sight": (1,)},
                  datasets=("m3so", "m3so_nb"), configs=("sound2sight", "no_audio"), curve=(30, 60, 120)),
    # Toy size for the tests: seconds, not hours.
    "tiny": TINY,
    # The toy size with a learning curve (a checkpoint after epoch 1 of 2 evaluated too).
    "tiny_curve": dataclasses.replace(
        TINY, train_flags=TINY.train_flags + ("--save_every", "1"),  # a checkpoint every epoch (the last flag wins)
        seeds={"m3so/sound2sight": (1,)}, datasets=("m3so",), configs=("sound2sight",), curve=(1,)),
}
DATASETS = {"m3so_nb": ("--no_block",), "m3so": ()}
CONFIGS = {"sound2sight": (), "no_audio": ("--no_audio",), "no_disc": ("--no_disc",)}


def runs(scale: Scale, datasets: tuple[str, ...] = tuple(DATASETS),
         configs: tuple[str, ...] = tuple(CONFIGS)) -> list[tuple[str, str, int]]:
    """Every (dataset, config, seed) of the study on ``datasets`` and ``configs``, first seeds first:
    every configuration's first seed is done before any second seed, so a partial study compares."""
    out = [(ds, cfg, seed) for ds in datasets for cfg in configs for seed in scale.seeds.get(f"{ds}/{cfg}", (1,))]
    return sorted(out, key=lambda r: (list(datasets).index(r[0]), r[2], list(CONFIGS).index(r[1])))


def run_name(ds: str, cfg: str, seed: int) -> str:
    return f"{ds}/{cfg}_seed{seed}"


class Study:
    """The steps of the study over ``out`` (runs, data, logs) and ``results`` (the report)."""

    def __init__(self, out: Path, results: Path, scale_name: str, datasets: tuple[str, ...] | None = None,
                 python: str = sys.executable, configs: tuple[str, ...] = tuple(CONFIGS),
                 seeds: tuple[int, ...] | None = None):
        self.scale = SCALES[scale_name]
        datasets = self.scale.datasets if datasets is None else tuple(datasets)
        unknown = sorted(set(datasets) - set(DATASETS))
        if unknown:
            raise InputError(f"--datasets {unknown} unknown; choose from {list(DATASETS)}")
        bad = sorted(set(configs) - set(CONFIGS))
        if bad:
            raise InputError(f"--configs {bad} unknown; choose from {list(CONFIGS)}")
        self.out, self.results, self.scale_name, self.datasets = out, results, scale_name, datasets
        self.configs = tuple(c for c in CONFIGS if c in configs and c in self.scale.configs)
        self.seeds = seeds  # None: every seed of the scale
        self.python = python
        self.timings_path = results / "timings.json"  # beside the report: kept with it
        self.timings: dict[str, float] = (json.loads(self.timings_path.read_text())
                                          if self.timings_path.is_file() else {})

    def my_runs(self, datasets: tuple[str, ...] | None = None) -> list[tuple[str, str, int]]:
        """The (dataset, config, seed) runs this process does: the scale's, narrowed by --datasets,
        --configs and --seeds."""
        return [r for r in runs(self.scale, self.datasets if datasets is None else datasets, self.configs)
                if self.seeds is None or r[2] in self.seeds]

    # ------------------------------------------------------------------ paths
    def data_dir(self, ds: str) -> Path:
        return self.out / "data" / ds

    def run_dir(self, ds: str, cfg: str, seed: int) -> Path:
        return self.out / "runs" / run_name(ds, cfg, seed)

    def kept_dir(self, ds: str, cfg: str, seed: int) -> Path:
        """Where a finished run's small files are kept with the report (committed): its evaluation's
        metrics.json, its training curve and config, one GIF. A run kept there is done, even
        when ``--out`` (checkpoints, data) is gone."""
        return self.results / "runs" / run_name(ds, cfg, seed)

    def keep(self, ds: str, cfg: str, seed: int) -> None:
        d, k = self.run_dir(ds, cfg, seed), self.kept_dir(ds, cfg, seed)
        (k / "gifs").mkdir(parents=True, exist_ok=True)
        for src, dst in ((d / "metrics.csv", k / "train_metrics.csv"), (d / "config.json", k / "train_config.json"),
                         (d / "eval" / "metrics.csv", k / "metrics.csv")):
            if src.is_file():
                atomic_write_bytes(dst, src.read_bytes())
        for gif in sorted((d / "eval" / "gifs").glob("*.gif"))[:1]:
            atomic_write_bytes(k / "gifs" / gif.name, gif.read_bytes())
        atomic_write_bytes(k / "metrics.json", (d / "eval" / "metrics.json").read_bytes())  # last: marks it done

    def evaluated(self, ds: str, cfg: str, seed: int) -> bool:
        return (self.kept_dir(ds, cfg, seed) / "metrics.json").is_file()

    # ------------------------------------------------------------------ steps
    def steps(self) -> list[tuple[str, bool]]:
        """(name, done) of every step, in order."""
        out = [(f"data {ds}", (self.data_dir(ds) / "dataset.json").is_file()
                 or all(self.evaluated(*r) for r in self.my_runs((ds,)))) for ds in self.datasets]
        for ds, cfg, seed in self.my_runs():
            d, done = self.run_dir(ds, cfg, seed), self.evaluated(ds, cfg, seed)
            out.append((f"train {run_name(ds, cfg, seed)}", done or (d / "TRAINED").is_file()))
            for epoch in self.scale.curve:
                out.append((f"evaluate {run_name(ds, cfg, seed)} at epoch {epoch}",
                            self.curve_evaluated(ds, cfg, seed, epoch)))
            out.append((f"evaluate {run_name(ds, cfg, seed)}", done))
        return out

    # ------------------------------------------------------------------ the learning curve
    def curve_dir(self, ds: str, cfg: str, seed: int, epoch: int) -> Path:
        """Where the evaluation of checkpoint ``epoch_<epoch>.pt`` is kept with the report."""
        return self.kept_dir(ds, cfg, seed) / "curve" / f"epoch_{epoch}"

    def curve_evaluated(self, ds: str, cfg: str, seed: int, epoch: int) -> bool:
        return (self.curve_dir(ds, cfg, seed, epoch) / "metrics.json").is_file()

    def curve_command(self, ds: str, cfg: str, seed: int, epoch: int) -> list[str]:
        """The final evaluation's command on ``checkpoints/epoch_<epoch>.pt``, into ``eval_epoch_<epoch>``."""
        d = self.run_dir(ds, cfg, seed)
        cmd = self.eval_command(ds, cfg, seed)
        cmd[cmd.index("--model_path") + 1] = str(d / "checkpoints" / f"epoch_{epoch}.pt")
        cmd[cmd.index("--log_dir") + 1] = str(d / f"eval_epoch_{epoch}")
        return cmd

    def evaluate_curve(self, ds: str, cfg: str, seed: int) -> None:
        """Evaluate each of the scale's curve checkpoints that exists and is not yet kept."""
        d, name = self.run_dir(ds, cfg, seed), run_name(ds, cfg, seed)
        for epoch in self.scale.curve:
            if self.curve_evaluated(ds, cfg, seed, epoch) or not (d / "checkpoints" / f"epoch_{epoch}.pt").is_file():
                continue
            print(f"evaluate {name} at epoch {epoch}", flush=True)
            self._timed(f"evaluate {name} at epoch {epoch}", self.curve_command(ds, cfg, seed, epoch),
                        d / "eval.log")
            kept = self.curve_dir(ds, cfg, seed, epoch)
            kept.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(kept / "metrics.json", (d / f"eval_epoch_{epoch}" / "metrics.json").read_bytes())

    def train_command(self, ds: str, cfg: str, seed: int) -> list[str]:
        return [self.python, str(ROOT / "train_sound2sight.py"), "--data_root", str(self.data_dir(ds)),
                "--log_dir", str(self.run_dir(ds, cfg, seed)), "--seed", str(seed), "--resume",
                *self.scale.train_flags, *CONFIGS[cfg]]

    def eval_command(self, ds: str, cfg: str, seed: int) -> list[str]:
        d = self.run_dir(ds, cfg, seed)
        return [self.python, str(ROOT / "generate_sound2sight.py"), "--model_path", str(d / "checkpoints" / "last.pt"),
                "--data_root", str(self.data_dir(ds)), "--log_dir", str(d / "eval"), "--seed", "1",
                "--shuffle_audio", "--overwrite", *self.scale.eval_flags]  # the study decides what is done

    def _record(self, key: str, seconds: float, add: bool = True) -> None:
        """Add (or set) one step's wall time in timings.json, merged with what other study
        processes (``--configs`` splits the work) wrote meanwhile."""
        if self.timings_path.is_file():
            self.timings = {**self.timings, **json.loads(self.timings_path.read_text())}
        self.timings[key] = round((self.timings.get(key, 0.0) if add else 0.0) + seconds, 1)
        atomic_write_json(self.timings_path, self.timings)

    def _timed(self, key: str, cmd: list[str], log: Path) -> None:
        """Run ``cmd`` (output to ``log``), adding its wall time to timings.json even when it fails.

        A SIGTERM/SIGINT to the study is passed on to the running step, which stops at its
        own safe point (a training writes its mid-epoch checkpoint); then the study exits
        with 128 + the signal, and running it again continues."""
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(log, "a", encoding="utf-8") as f, StopSignals() as stop:
            f.write(f"\n$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
            forwarded = False
            while proc.poll() is None:
                if stop.requested and not forwarded:
                    proc.send_signal(stop.requested)
                    forwarded = True
                time.sleep(0.2)
        self._record(key, time.perf_counter() - t0)
        if stop.requested:
            print(f"stopped during '{key}'; run the same command again to continue", file=sys.stderr)
            raise SystemExit(128 + stop.requested)
        if proc.returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            raise InputError(f"step '{key}' failed (exit {proc.returncode}); see {log}: " + " | ".join(tail))

    def run(self) -> None:
        from M3SO_Gen_Code.generate_m3so import generate

        todo = [name for name, done in self.steps() if not done]
        total = len(self.steps())
        print(f"study ({self.scale_name} scale) in {self.out}: {total - len(todo)}/{total} steps done")
        done_count = total - len(todo)
        for ds in self.datasets:
            extra = DATASETS[ds]
            needed = any(not self.evaluated(d, c, s) for d, c, s in self.my_runs((ds,)))
            if needed and not (self.data_dir(ds) / "dataset.json").is_file():
                done_count += 1
                print(f"[{done_count}/{total}] data {ds}", flush=True)
                t0 = time.perf_counter()
                generate(self.data_dir(ds), num_train=self.scale.num_train, num_test=self.scale.num_test, seed=0,
                         no_block="--no_block" in extra, overwrite=True, progress=False)
                self._record(f"data {ds}", time.perf_counter() - t0, add=False)
        for ds, cfg, seed in self.my_runs():
            d, name = self.run_dir(ds, cfg, seed), run_name(ds, cfg, seed)
            if self.evaluated(ds, cfg, seed):
                continue
            if not (d / "TRAINED").is_file():
                done_count += 1
                print(f"[{done_count}/{total}] train {name} (log: {d / 'train.log'})", flush=True)
                self._timed(f"train {name}", self.train_command(ds, cfg, seed), d / "train.log")
                (d / "TRAINED").write_text("ok\n")
            self.evaluate_curve(ds, cfg, seed)
            done_count += 1
            print(f"[{done_count}/{total}] evaluate {name}", flush=True)
            self._timed(f"evaluate {name}", self.eval_command(ds, cfg, seed), d / "eval.log")
            self.keep(ds, cfg, seed)
        self.report()

    def report(self) -> Path:
        meta = {"scale": self.scale_name, "scale_config": asdict(self.scale), "cpu": cpu_name(),
                "cores": os.cpu_count(), "python": platform.python_version(), "timings_s": self.timings,
                "command": f"python experiments/study.py --scale {self.scale_name}"}
        evaluated = {run_name(ds, cfg, seed): self.kept_dir(ds, cfg, seed) / "metrics.json"
                     for ds, cfg, seed in runs(self.scale, self.scale.datasets, self.scale.configs)}  # all finished runs
        path = write_report(self.results, {k: v for k, v in evaluated.items() if v.is_file()}, meta,
                            {k: " ".join(self.train_command(*_split(k))[1:]) for k in evaluated},
                            {k: " ".join(self.eval_command(*_split(k))[1:]) for k in evaluated})
        if self.scale.curve:
            self.report_curve()
        print(f"report: {path}")
        return path

    def report_curve(self) -> None:
        """The learning curve of every run with an evaluated checkpoint: ``learning_curve_<dataset>.png``
        and ``learning_curve.md`` beside the report."""
        from experiments.report import curve_points, learning_curve_table, plot_learning_curve

        paths = {}
        for ds, cfg, seed in runs(self.scale, self.scale.datasets, self.scale.configs):
            found = [self.curve_dir(ds, cfg, seed, e) / "metrics.json" for e in self.scale.curve]
            found.append(self.kept_dir(ds, cfg, seed) / "metrics.json")
            paths[run_name(ds, cfg, seed)] = [f for f in found if f.is_file()]
        points = curve_points(paths)
        for ds in self.scale.datasets:
            plot_learning_curve(self.results / f"learning_curve_{ds}.png", ds, points)
        atomic_write_bytes(self.results / "learning_curve.md",
                           (f"Scale `{self.scale_name}`: `python experiments/study.py --scale {self.scale_name}`; "
                            "paper protocol, 256 test clips x 20 samples; CV = constant velocity on the same "
                            "clips.\n\n" + learning_curve_table(points) + "\n").encode())


def _split(name: str) -> tuple[str, str, int]:
    ds, rest = name.split("/")
    cfg, seed = rest.rsplit("_seed", 1)
    return ds, cfg, int(seed)


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(description=plain_text(__doc__))
    p.add_argument("--scale", default="cpu", choices=sorted(SCALES))
    p.add_argument("--out", default="", help="runs and data (default experiments/out/<scale>)")
    p.add_argument("--results", default="", help="the report (default experiments/results/<scale>)")
    p.add_argument("--datasets", nargs="+", default=None, help="a subset of the scale's datasets")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS),
                   help="a subset of the configurations (two study processes may share the work this way)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="a subset of the seeds (another way to share the work between study processes)")
    p.add_argument("--plan", action="store_true", help="print the steps and whether each is done, run nothing")
    p.add_argument("--report_only", action="store_true", help="write the report from the finished evaluations")
    args = p.parse_args(argv)
    out = Path(args.out or ROOT / "experiments" / "out" / args.scale)
    results = Path(args.results or ROOT / "experiments" / "results" / args.scale)
    study = Study(out, results, args.scale, None if args.datasets is None else tuple(args.datasets),
                  configs=tuple(args.configs), seeds=None if args.seeds is None else tuple(args.seeds))
    if args.plan:
        for name, done in study.steps():
            print(f"{'done' if done else 'todo'}  {name}")
        return
    if args.report_only:
        study.report()
        return
    study.run()


if __name__ == "__main__":
    run_cli(main)
