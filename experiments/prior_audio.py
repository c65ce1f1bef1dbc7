"""Does a trained prior read the sound? Its mean's spread over clips and its change under swapped audio.

For each checkpoint, the prior runs teacher-forced over the first ``--clips`` test clips
(the training's computation, in eval mode) and this prints one JSON line with the figures
of :mod:`prior_monitor` (the same ones training logs per epoch):

* ``mu_spread``: the prior mean's standard deviation over clips (mean over steps and z
  dimensions): 0 when the prior outputs the same distribution whatever the clip;
* ``audio_change``: the mean absolute change of the prior mean when every clip's audio is
  replaced by another clip's: 0 when the prior ignores the sound;
* ``sigma``: the prior's mean standard deviation; ``kl``: the mean KL(posterior || prior)
  per step and clip.

A prior that ignores the sound cannot pass it on: in this model z is the audio's only way
to the predicted frames.

    python experiments/prior_audio.py --data_root DATA CHECKPOINT [CHECKPOINT ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import runtime  # noqa: E402
from cli import ArgumentParser, plain_text  # noqa: E402
from checkpoints import load_model  # noqa: E402
from data import open_dataset  # noqa: E402
from prior_monitor import prior_stats  # noqa: E402
from errors import InputError, run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    p = ArgumentParser(description=plain_text(__doc__))
    p.add_argument("checkpoints", nargs="+", help="checkpoint files (train_sound2sight.py's .pt)")
    p.add_argument("--data_root", required=True, help="the dataset the checkpoints were trained on")
    p.add_argument("--clips", type=int, default=64, help="test clips (at least 2)")
    p.add_argument("--frames", type=int, default=20, help="frames per clip")
    args = p.parse_args(argv)
    device = torch.device("cpu")
    rows = []
    for path in args.checkpoints:
        model, ckpt = load_model(path, map_location=device)
        data = open_dataset(args.data_root, "test", args.frames, image_width=model.cfg.image_width,
                            channels=model.cfg.channels)
        frames, audio = runtime.to_time_major(next(iter(DataLoader(data, batch_size=max(2, args.clips)))), device)
        stats = prior_stats(model, frames, audio if model.cfg.use_audio else None)
        if stats is None:  # a method without a learned prior (methods.LatentPrior)
            raise InputError(f"checkpoint {path} is a model without a learned prior; it has no prior figures")
        stats = stats.as_dict()
        row = {"checkpoint": str(path), "epoch": ckpt.get("epoch"), "use_audio": model.cfg.use_audio,
               **{k: round(v, 6) for k, v in stats.items()}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    run_cli(main)
