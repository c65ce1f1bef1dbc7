"""The study's report: per-run figures gathered into tables (mean and spread over seeds) and plots.

``write_report`` reads every finished run's ``metrics.json`` (written by
``generate_sound2sight.py``) and writes into the results folder:

* ``results.json``: every run's headline figures, the aggregates, the commands, hardware and wall times;
* ``tables.md``: one table per dataset, configurations then the baselines (:data:`baselines.BASELINES`)
  as rows, ``mean ± sd (n seeds)``;
* ``curves_<dataset>.png``: per-frame SSIM / PSNR (paper protocol), mean over seeds, with every baseline;
* ``events_<dataset>.png``: event-aligned SSIM / PSNR per configuration and baseline;
* ``gifs/<dataset>_<config>.gif``: the first test clip of each configuration's first seed.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from baselines import BASELINES
from files import atomic_write_bytes, atomic_write_json, atomic_write_text

#: (column, path into metrics.json, higher is better) of each reported figure.
FIGURES = [
    ("paper SSIM", ("paper", "ssim")),
    ("paper PSNR", ("paper", "psnr")),
    ("best-sample SSIM", ("best", "ssim")),
    ("best-sample PSNR", ("best", "psnr")),
    ("SSIM after block bounce", ("events", "model", "paper", "after_block_bounce", "ssim")),
    ("PSNR after block bounce", ("events", "model", "paper", "after_block_bounce", "psnr")),
    ("SSIM after wall bounce", ("events", "model", "paper", "after_wall_bounce", "ssim")),
    ("shuffled-audio SSIM drop", ("audio_shuffled", "drop", "paper", "ssim")),
    ("shuffled-audio PSNR drop", ("audio_shuffled", "drop", "paper", "psnr")),
    ("diversity", ("diversity",)),
    ("prior's change under swapped audio", ("prior", "audio_change")),
]


def baseline_path(name: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
    """Where baseline ``name`` keeps the figure the model keeps at ``path`` in metrics.json (None:
    a figure of sampling or audio, which a deterministic frame-only baseline has not)."""
    if path[0] in ("paper", "best"):
        return (name, *path)
    if path[:2] == ("events", "model"):
        return ("events", name, *path[3:])  # one entry for every protocol: the protocol's key drops
    return None


def dig(obj: Any, path: tuple[str, ...]) -> float | None:
    """``obj[path[0]][path[1]]...`` or None where a key is missing or the value is not a number."""
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return float(obj) if isinstance(obj, (int, float)) and not isinstance(obj, bool) else None


def aggregate(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value) and count of the non-None values."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else None, "n": int(len(v))}


def _fmt(a: dict[str, Any], digits: int) -> str:
    if a["mean"] is None:
        return "-"
    s = f"{a['mean']:.{digits}f}"
    if a["sd"] is not None:
        s += f" ± {a['sd']:.{digits}f}"
    return s + (f" ({a['n']})" if a["n"] > 1 else "")


def _group(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """``{"ds/cfg_seedN": m}`` -> ``{ds: {cfg: [run names]}}`` in first-seen order."""
    out: dict[str, dict[str, list[str]]] = {}
    for name in runs:
        ds, rest = name.split("/")
        cfg = rest.rsplit("_seed", 1)[0]
        out.setdefault(ds, {}).setdefault(cfg, []).append(name)
    return out


def baseline_run(name: str, ds: str, cfgs: dict[str, list[str]], runs: dict[str, dict[str, Any]],
                 extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """A metrics.json holding baseline ``name`` on dataset ``ds``: the first of its runs that has
    it (the baselines are deterministic and every run scores the same test clips), else
    ``extra[ds]`` (an evaluation kept in ``results/baselines/<ds>_metrics.json`` for runs
    evaluated before the baseline was registered), else None."""
    for names in cfgs.values():
        for n in names:
            if name in runs[n]:
                return runs[n]
    other = (extra or {}).get(ds)
    return other if other is not None and name in other else None


def tables(runs: dict[str, dict[str, Any]],
           extra: dict[str, dict[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
    """Markdown tables and the aggregates behind them (``extra``: see :func:`baseline_run`)."""
    agg: dict[str, Any] = {}
    lines: list[str] = []
    for ds, cfgs in _group(runs).items():
        agg[ds] = {}
        lines += [f"### {ds}", "", "| configuration | " + " | ".join(c for c, _ in FIGURES) + " |",
                  "|---" * (len(FIGURES) + 1) + "|"]
        for cfg, names in cfgs.items():
            agg[ds][cfg] = {col: aggregate([dig(runs[n], path) for n in names]) for col, path in FIGURES}
            digits = {"diversity": 5}
            lines.append(f"| {cfg} | " + " | ".join(_fmt(agg[ds][cfg][c], digits.get(c, 2 if "PSNR" in c else 4))
                                                    for c, _ in FIGURES) + " |")
        for name, base in BASELINES.items():
            source = baseline_run(name, ds, cfgs, runs, extra)
            paths = {col: baseline_path(name, path) for col, path in FIGURES}
            agg[ds][name] = {col: aggregate([dig(source, p)] if p and source else []) for col, p in paths.items()}
            lines.append(f"| {base.label} | " + " | ".join(
                _fmt(agg[ds][name][c], 2 if "PSNR" in c else 4) for c, _ in FIGURES) + " |")
        lines.append("")
    return "\n".join(lines), agg


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(path: Path, ds: str, cfgs: dict[str, list[str]], runs: dict[str, dict[str, Any]],
                extra: dict[str, dict[str, Any]] | None = None) -> None:
    """Per-frame SSIM and PSNR (paper protocol), mean over seeds, each configuration and every baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric in zip(axes, ("ssim", "psnr")):
        any_run = None
        for cfg, names in cfgs.items():
            curves = np.array([runs[n]["paper"][f"{metric}_per_frame"] for n in names])
            any_run = runs[names[0]]
            steps = np.arange(any_run["n_past"], any_run["n_past"] + curves.shape[1])
            ax.plot(steps, curves.mean(0), "o-", ms=3, label=f"{cfg} ({len(names)} seed{'s' * (len(names) > 1)})")
            if len(names) > 1:
                ax.fill_between(steps, curves.min(0), curves.max(0), alpha=0.2)
        for (name, base), marker in zip(BASELINES.items(), "sd^vx+"):
            source = baseline_run(name, ds, cfgs, runs, extra)
            if source is not None:
                ax.plot(steps, source[name]["paper"][f"{metric}_per_frame"], marker + "--", ms=3, color="k",
                        label=base.label)
        ax.set_title(f"{ds}: {metric.upper()} per future frame (paper protocol)")
        ax.set_xlabel("frame index")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_events(path: Path, ds: str, agg: dict[str, Any]) -> None:
    """Bars: SSIM / PSNR after wall and block bounces, per configuration and baseline (mean ± sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("after wall bounce", "SSIM after wall bounce", None),
              ("after block bounce", "SSIM after block bounce", "PSNR after block bounce")]
    cfgs = list(agg)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, (title, col) in zip(axes, [("SSIM", [g[1] for g in groups]), ("PSNR", ["PSNR after block bounce"])]):
        width = 0.8 / len(cfgs)
        for i, cfg in enumerate(cfgs):
            means = [agg[cfg][c]["mean"] or 0.0 for c in col]
            sds = [agg[cfg][c]["sd"] or 0.0 for c in col]
            ax.bar(np.arange(len(col)) + i * width, means, width, yerr=sds, label=cfg, capsize=2)
        ax.set_xticks(np.arange(len(col)) + width * (len(cfgs) - 1) / 2)
        ax.set_xticklabels([c.replace(title + " ", "") for c in col], fontsize=8)
        ax.set_title(f"{ds}: {title} by event (paper protocol)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def write_report(results: Path, metrics_paths: dict[str, Path], meta: dict[str, Any],
                 train_commands: dict[str, str], eval_commands: dict[str, str]) -> Path:
    """Write the report of the finished runs into ``results``; returns ``tables.md``'s path."""
    runs = {name: json.loads(Path(p).read_text()) for name, p in metrics_paths.items()}
    extra = {ds: json.loads((results / "baselines" / f"{ds}_metrics.json").read_text())
             for ds in _group(runs) if (results / "baselines" / f"{ds}_metrics.json").is_file()}
    text, agg = tables(runs, extra)
    results.mkdir(parents=True, exist_ok=True)
    for ds, cfgs in _group(runs).items():
        plot_curves(results / f"curves_{ds}.png", ds, cfgs, runs, extra)
        if "events" in runs[next(iter(cfgs.values()))[0]]:
            plot_events(results / f"events_{ds}.png", ds, agg[ds])
        for cfg, names in cfgs.items():
            gifs = sorted((Path(metrics_paths[names[0]]).parent / "gifs").glob("*.gif"))
            if gifs:
                (results / "gifs").mkdir(exist_ok=True)
                shutil.copyfile(gifs[0], results / "gifs" / f"{ds}_{cfg}.gif")
    per_run = {name: {col: dig(m, path) for col, path in FIGURES} for name, m in runs.items()}
    atomic_write_json(results / "results.json", {"meta": meta, "aggregates": agg, "runs": per_run,
                                                 "train_commands": train_commands, "eval_commands": eval_commands})
    header = (f"Scale `{meta['scale']}`, {meta['cpu']}, {meta['cores']} cores. Values: mean ± sample sd (number of "
              f"seeds) over the final checkpoints; the baselines are deterministic. {len(runs)} runs evaluated.\n\n")
    atomic_write_text(results / "tables.md", header + text)
    return results / "tables.md"


#: The learning curve's panels: (title, path into metrics.json) of the model; a baseline's is baseline_path's.
CURVE_PANELS = [
    ("SSIM", ("paper", "ssim")),
    ("PSNR (dB)", ("paper", "psnr")),
    ("SSIM after a block bounce", ("events", "model", "paper", "after_block_bounce", "ssim")),
    ("PSNR after a block bounce (dB)", ("events", "model", "paper", "after_block_bounce", "psnr")),
]


def curve_points(metrics_paths: dict[str, list[Path]]) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """Per run name, its evaluations (``metrics.json`` paths) as (training iterations, metrics), in order."""
    out = {}
    for name, paths in metrics_paths.items():
        points = []
        for path in paths:
            m = json.loads(path.read_text())
            if m.get("model_iterations"):
                points.append((int(m["model_iterations"]), m))
        if points:
            out[name] = sorted(points, key=lambda p: p[0])
    return out


def learning_curve_table(points: dict[str, list[tuple[int, dict[str, Any]]]]) -> str:
    """A markdown table: one row per run and evaluated checkpoint, the panels' figures beside constant
    velocity's and copy-last-frame's (paper protocol)."""
    head = "| run | iterations | " + " | ".join(t for t, _ in CURVE_PANELS) + " |"
    lines = [head, "|" + "---|" * (2 + len(CURVE_PANELS))]
    for name, pts in sorted(points.items()):
        for it, m in pts:
            cells = []
            for _, path in CURVE_PANELS:
                v, cv = dig(m, path), dig(m, baseline_path("constant_velocity", path))
                cells.append("-" if v is None else f"{v:.4f}" if v < 1.5 else f"{v:.2f}")
                if cv is not None and v is not None:
                    cells[-1] += f" ({'>' if v > cv else '<'} CV {cv:.4f})" if v < 1.5 else \
                        f" ({'>' if v > cv else '<'} CV {cv:.2f})"
            lines.append(f"| {name} | {it:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_learning_curve(path: Path, ds: str, points: dict[str, list[tuple[int, dict[str, Any]]]]) -> None:
    """SSIM and PSNR (overall and after a block bounce) against training iterations on a log axis, one
    line per run of dataset ``ds``, constant velocity and copy-last-frame drawn across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {k: v for k, v in points.items() if k.startswith(f"{ds}/")}
    panels = [(t, p) for t, p in CURVE_PANELS
              if any(dig(m, p) is not None for pts in runs.values() for _, m in pts)]
    if not runs or not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    any_m = next(iter(runs.values()))[-1][1]
    for ax, (title, p) in zip(axes[0], panels):
        for name, pts in sorted(runs.items()):
            xs = [it for it, m in pts if dig(m, p) is not None]
            ys = [dig(m, p) for _, m in pts if dig(m, p) is not None]
            ax.plot(xs, ys, "o-", ms=4, label=name.split("/", 1)[1].replace("_seed", ", seed "))
        for base, style in (("constant_velocity", "--"), ("copy_last_frame", ":")):
            v = dig(any_m, baseline_path(base, p))
            if v is not None:
                ax.axhline(v, ls=style, color="grey", label=BASELINES[base].label)
        ax.set_xscale("log")
        ax.set_xlabel("training iterations (batch 16)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{ds}: the learning curve (256 test clips x 20 samples, paper protocol)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
