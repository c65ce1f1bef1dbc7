"""The model the repository ships (models/pretrained/m3so_sound2sight.pt, card beside it)."""
from __future__ import annotations

from pathlib import Path

import torch

from checkpoints import load_model

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "pretrained" / "m3so_sound2sight.pt"


def test_the_shipped_model_loads_says_how_it_was_trained_and_samples():
    assert SHIPPED.stat().st_size <= 10 * 2 ** 20
    model, ckpt = load_model(SHIPPED)  # torch.load(weights_only=True)
    args = ckpt["args"]
    assert (ckpt["method"], ckpt["epoch"], ckpt["iterations"]) == ("sound2sight", 240, 12000)
    assert (args["n_past"], args["n_future"], args["batch_size"], args["nf"], args["rnn_size"], args["seed"],
            args["logvar_bias"], args["lr_schedule"]) == (5, 15, 16, 16, 128, 1, -4.0, "cosine")
    assert (model.cfg.image_width, model.cfg.channels, tuple(model.cfg.audio_shape)) == (48, 1, (23, 21))
    g = torch.Generator().manual_seed(0)
    frames, audio = torch.rand(8, 2, 1, 48, 48, generator=g), torch.rand(8, 2, 1, 23, 21, generator=g)
    with torch.no_grad():
        out = model.sample(frames[:5], audio, 2, 3)
    assert out.shape == (8, 2, 2, 1, 48, 48) and torch.isfinite(out).all() and 0 <= out.min() <= out.max() <= 1
