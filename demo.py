"""The demo (``python train_sound2sight.py --demo``): its recipe, its data and its verdict.

One place for what the demo is, so that the training script, the benchmarks that time the
demo's step (``bench/train_step.py --demo``) and the docs all read the same recipe.

The recipe is the main job on a fresh 2-core machine: small enough to finish inside 10
minutes there, and chosen by ``bench/learning.py`` to beat copy-last-frame in that time
(README, "Time to quality"): the paper's model at conv width 16 with 128-wide LSTMs and
transformers, 1,500 iterations of batch 16 on 4,096 clips, the decoder's output bias
started dark (M3SO frames are 93% black), a cosine learning rate, and the latent's
log-variance heads started at -4 so that the prior keeps reading the sound (RESULTS.md,
"Keeping the prior on the sound"). Why those widths: docs/DESIGN.md, "The demo's step on
each CPU kind".
"""
from __future__ import annotations

import argparse
from pathlib import Path

#: Flag defaults under ``--demo``; an explicit flag still wins.
DEFAULTS: dict[str, object] = {
    "dataset": "m3so_nb", "log_dir": "logs/demo", "n_past": 5, "n_future": 10, "n_eval": 15,
    "batch_size": 16, "niter": 30, "epoch_size": 50, "nf": 16, "rnn_size": 128, "disc_rnn_size": 128,
    "data_threads": 0, "save_every": 0,
    "output_bias": -6.0, "lr_schedule": "cosine", "val_clips": 64, "val_every": 3, "logvar_bias": -4.0,
}
#: The M3SO-NB the demo makes on the spot (``M3SO_Gen_Code.generate_m3so.generate``'s arguments).
DATA: dict[str, int] = {"num_train": 4096, "num_test": 256, "seed": 0}
#: Test clips of the closing evaluation (all of DATA's).
EVAL_CLIPS = 256


def ensure_data(args: argparse.Namespace, argv: list[str]) -> None:
    """Without an explicit ``--data_root`` in ``argv``: make (once) the small M3SO-NB beside the
    logs and point ``args.data_root`` at it."""
    if any(a == "--data_root" or a.startswith("--data_root=") for a in argv):
        return
    from M3SO_Gen_Code.generate_m3so import generate

    root = Path(args.log_dir) / "m3so_nb_data"
    if not (root / "dataset.json").is_file():
        print(f"demo: making a small M3SO-NB ({DATA['num_train']} train / {DATA['num_test']} test clips) in {root}")
        generate(root, no_block=True, overwrite=True, **DATA)
    args.data_root = str(root)


def evaluate(args: argparse.Namespace, log_dir: Path, n_eval: int, label: str = "Sound2Sight",
             again: bool = True) -> dict:
    """Score the FINAL checkpoint on the test split with the paper protocol (``best.pt`` is chosen
    on the first test clips, so scoring it there would flatter it), print the verdict and return
    the evaluation's metrics. With ``again`` False an evaluation already on disk for this
    checkpoint and these settings is shown instead of redone."""
    import json

    import evaluation
    import runtime
    from checkpoints import read_checkpoint

    last = log_dir / "checkpoints" / "last.pt"
    settings = evaluation.EvalSettings(n_past=args.n_past, n_future=n_eval - args.n_past, nsample=args.eval_nsample,
                                       seed=args.seed, num_clips=EVAL_CLIPS, batch_size=32, num_gifs=4,
                                       shuffle_audio=True)
    eval_dir = evaluation.eval_dir(last, {"epoch": read_checkpoint(last).get("epoch")}, settings)
    if not again and (eval_dir / "metrics.json").is_file():
        m = json.loads((eval_dir / "metrics.json").read_text())
        print(f"its evaluation ({eval_dir}; report: {eval_dir / 'report.html'}; --redo_eval evaluates again):")
    else:
        m = evaluation.evaluate_checkpoint(last, args.data_root, eval_dir, settings,
                                           device=runtime.get_device(args.device),
                                           tensorboard=not args.no_tensorboard)
    print(table(m, label))
    print(audio_line(m))
    print(f"look at: {eval_dir}/gifs/, {eval_dir}/curves.png, {log_dir}/samples/, {log_dir}/losses.png")
    return m


def table(m: dict, label: str = "Sound2Sight") -> str:
    """The demo's verdict: the model (``label``: its method's) against copy-last-frame (the baseline
    to beat), with every other registered baseline beside it for scale (paper protocol)."""
    from baselines import BASELINES

    model, base = m["paper"], m["copy_last_frame"]["paper"]
    others = [b for b in BASELINES.values() if b.name != "copy_last_frame" and b.name in m]
    verdict = lambda a, b: "beats" if a > b else "does NOT beat"  # noqa: E731
    head = "".join(f"   {b.label:>17}" for b in others)
    lines = [f"demo evaluation: {m['num_clips']} test clips x {m['nsample']} samples, paper protocol "
             f"(per frame the best of the samples)",
             f"            {label:>11}   copy last frame{head}"]
    for metric, name, fmt in (("ssim", "SSIM     ", "{:.4f}"), ("psnr", "PSNR (dB)", "{:.2f}")):
        extra = "".join(f"   {fmt.format(m[b.name]['paper'][metric]):>17}" for b in others)
        lines.append(f"  {name} {fmt.format(model[metric]):>11}   {fmt.format(base[metric]):>15}{extra}   "
                     f"({verdict(model[metric], base[metric])} copy last frame)")
    return "\n".join(lines)


def audio_line(m: dict) -> str:
    """What giving every test clip another clip's audio costs the model (the evaluation's shuffle
    drop, paper protocol; positive: the sound helps), and whether its prior reads the sound."""
    if not m.get("use_audio"):
        return "audio: this model reads no audio (no-audio ablation)"
    drop = m["audio_shuffled"]["drop"]["paper"]
    prior = m.get("prior") or {}
    verdict = "the sound helps" if drop["ssim"] > 0 and drop["psnr"] > 0 else "the sound does NOT help"
    return (f"  swapped audio costs SSIM {drop['ssim']:+.4f}, PSNR {drop['psnr']:+.2f} dB ({verdict}); "
            f"prior's change under swapped audio {prior.get('audio_change', float('nan')):.3g}")
