"""The optimisers a trained method may be given by name (``--optimizer``), built in one place."""
from __future__ import annotations

from typing import Any

import torch

OPTIMIZERS = ("adam", "rmsprop", "sgd")


def build_optimizer(groups: list[dict[str, Any]], lr: float, beta1: float, name: str = "adam") -> torch.optim.Optimizer:
    """``name``'s optimiser over parameter ``groups`` (each with its ``params`` and ``lr``).

    Adam runs PyTorch's fused kernel where every parameter allows it (floating point, on CPU
    or CUDA): one kernel per parameter instead of a dozen elementwise ops, the same update up
    to float rounding (tests/test_models.py; docs/DESIGN.md, "The demo's step on each CPU
    kind"). The fused kernel reads gradients and moments as flat memory, so the training step
    calls :func:`runtime.match_param_layout` before stepping. ``sgd`` uses momentum ``beta1``
    (the original passed Adam's betas to every optimiser, which crashed for RMSprop and SGD)."""
    if name == "adam":
        params = [p for g in groups for p in g["params"]]
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        return torch.optim.Adam(groups, lr=lr, betas=(beta1, 0.999), fused=fused)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=beta1)
    raise ValueError(f"optimizer {name!r} is unknown; choose one of {list(OPTIMIZERS)}")
