"""The weights-only copy the repository ships (checkpoints.export_weights) samples exactly what its
training checkpoint samples, and loads with torch.load(weights_only=True)."""
from __future__ import annotations

import torch

from checkpoints import export_weights, load_model
from test_train import run


def test_an_exported_model_samples_what_its_checkpoint_samples(tmp_path, tiny_data):
    log = run(tmp_path / "run", tiny_data, "--niter", "1", "--epoch_size", "1")
    src = log / "checkpoints" / "last.pt"
    export_weights(src, tmp_path / "shipped.pt")
    raw = torch.load(tmp_path / "shipped.pt", weights_only=True)
    assert set(raw) == {"method", "model_config", "model", "epoch", "iterations", "args", "shipped_from"}
    assert not any(k.startswith("disc.") for k in raw["model"]) and raw["model_config"]["use_disc"] is False
    assert raw["args"]["no_disc"] is False  # how it was trained stays on record
    full, _ = load_model(src)
    shipped, _ = load_model(tmp_path / "shipped.pt")
    g = torch.Generator().manual_seed(0)
    frames, audio = torch.rand(6, 2, 1, 48, 48, generator=g), torch.rand(6, 2, 1, 23, 21, generator=g)
    eps = torch.randn(5, 2 * 3, full.noise_dim, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(shipped.sample(frames[:3], audio, 3, 3, eps=eps),
                                   full.sample(frames[:3], audio, 3, 3, eps=eps), rtol=0, atol=0)
