"""Evaluation-only baselines by name: deterministic predictors scored beside every trained model.

A baseline turns the context frames into the future frames without training:
``predict(context [n_past, B, C, H, W], n_future) -> [n_future, B, C, H, W]``. The
evaluation (:mod:`evaluation`), the training's validation (:func:`training.validate`) and
the study's report (:mod:`experiments.report`) loop over :data:`BASELINES`, so a new
baseline is one function and one entry here.

Where each one shows up (``<name>`` is the registry key, ``<column>`` :attr:`Baseline.column`):

* ``metrics.json``: a top-level block ``<name>`` with one entry per protocol (the same numbers
  under each: one deterministic "sample"), ``events.<name>`` (event-aligned means) and the
  map ``baselines`` (name -> label) of the baselines evaluated;
* the evaluation's ``metrics.csv``: columns ``<name>_<protocol>_<metric>``; TensorBoard
  ``eval/<protocol>/<name>_<metric>``; a line in ``curves.png``, a bar in ``events.png``, a
  figure in the headline;
* the training's ``metrics.csv``: ``val_<column>_<metric>`` (copy-last-frame's column is
  ``copy_last``, so its figures keep their names ``val_copy_last_<metric>``);
* the study's ``tables.md``: one row per baseline (label), a curve in ``curves_<dataset>.png``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

#: ``(context [n_past, B, C, H, W], n_future) -> [n_future, B, C, H, W]``
Predict = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class Baseline:
    """A deterministic predictor of the future frames from the context frames alone."""

    name: str      # registry key; metrics.json's block, the evaluation's csv/TensorBoard prefix
    label: str     # in plots, tables and the headline
    column: str    # the training log's validation columns: val_<column>_<metric>
    predict: Predict


# ------------------------------------------------------------------ copy last frame
def copy_last_frame(context: torch.Tensor, n_future: int) -> torch.Tensor:
    """``context [n_past, B, C, H, W]`` -> its last frame repeated, ``[n_future, B, C, H, W]`` (a view)."""
    return context[-1:].expand(n_future, *context.shape[1:])


BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("copy_last_frame", "copy last frame", "copy_last", copy_last_frame),
)}
