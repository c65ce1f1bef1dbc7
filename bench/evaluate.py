"""Wall time of the full evaluation protocol and where it goes (sampling vs scoring).

A default-size Sound2Sight (g 128, r 256, z 10; freshly initialised: the cost does not
depend on training) is evaluated with the paper's protocol (``--n_past 5 --n_future 25
--nsample 100``) on ``--clips`` hand-made 48x48 grey clips, through
``evaluation.evaluate_checkpoint``, the library the CLI calls. Prints ONE JSON line.

    python bench/evaluate.py [--clips 20] [--chunk_size 2000]
"""
from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import evaluation  # noqa: E402
from cli import ArgumentParser, plain_text  # noqa: E402
from data.dataset_format import DatasetMeta  # noqa: E402
from data.features import FrameSettings  # noqa: E402
from models.sound2sight import Sound2Sight, Sound2SightConfig  # noqa: E402
from errors import run_cli  # noqa: E402

N_PAST, N_FUTURE, NSAMPLE = 5, 25, 100


def make_data(root: Path, clips: int, frames: int) -> None:
    """Moving textured squares + random |STFT| features in the project's on-disk layout."""
    rng = np.random.default_rng(0)
    (root / "test").mkdir(parents=True)
    t = np.arange(frames)[None, :, None, None]  # [1, T, 1, 1]
    start = rng.integers(0, 20, (clips, 1, 1, 1))  # [N, 1, 1, 1]
    yy, xx = np.arange(48)[None, None, :, None], np.arange(48)[None, None, None, :]
    pos = (start + t) % 28  # [N, T, 1, 1] square's top-left, moving diagonally
    inside = (yy >= pos) & (yy < pos + 20) & (xx >= pos) & (xx < pos + 20)  # [N, T, 48, 48]
    video = (inside * rng.integers(80, 256, inside.shape)).astype(np.uint8)
    np.save(root / "test" / "frames.npy", video)
    np.save(root / "test" / "stft.npy", rng.random((clips, frames, 23, 21), dtype=np.float32))
    DatasetMeta.for_features("bench", image_size=48, channels=1, num_frames=frames, fps=10,
                             splits={"test": clips}, settings=FrameSettings()).write(root)


def main(argv=None) -> dict:
    parser = ArgumentParser(description=plain_text(__doc__))
    parser.add_argument("--clips", type=int, default=20, help="test clips evaluated")
    parser.add_argument("--chunk_size", type=int, default=2000, help="clip x sample sequences per model call")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_data(tmp / "data", args.clips, N_PAST + N_FUTURE)
        cfg = Sound2SightConfig()  # default size
        torch.manual_seed(0)
        model = Sound2Sight(cfg)
        (tmp / "run" / "checkpoints").mkdir(parents=True)
        torch.save({"model_config": dataclasses.asdict(cfg), "model": model.state_dict(), "epoch": 0},
                   tmp / "run" / "checkpoints" / "best.pt")
        del model
        settings = evaluation.EvalSettings(n_past=N_PAST, n_future=N_FUTURE, nsample=NSAMPLE, num_clips=args.clips,
                                           batch_size=args.clips, chunk_size=args.chunk_size)
        res = evaluation.evaluate_checkpoint(tmp / "run" / "checkpoints" / "best.pt", str(tmp / "data"), tmp / "eval",
                                             settings, device=torch.device(args.device), tensorboard=False)
    t = res["timing"]
    wall = t["all"]
    pairs = args.clips * NSAMPLE * N_FUTURE
    result = {
        "bench": "evaluate", "clips": args.clips, "nsample": NSAMPLE, "n_past": N_PAST, "n_future": N_FUTURE,
        "wall_s": wall, "sampling_s": t.get("sampling", 0.0), "scoring_s": t.get("scoring", 0.0),
        "sampling_share": round(t.get("sampling", 0.0) / wall, 4),
        "scoring_share": round(t.get("scoring", 0.0) / wall, 4),
        "clips_per_s": round(args.clips / wall, 4),
        "scored_pairs_per_s": round(pairs / max(t.get("scoring", 0.0), 1e-9), 1),
        "torch_threads": torch.get_num_threads(), "device": args.device,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run_cli(main)
