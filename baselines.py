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


# ------------------------------------------------------------------ constant velocity
def phase_correlation(reference: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """Integer-pixel displacement ``d [B, 2]`` (rows, columns) with ``reference(p) ~ moving(p - d)``.

    reference, moving: ``[B, C, H, W]``. The peak of the inverse FFT of the normalised
    cross-power spectrum ``R = F(ref) conj(F(mov)) / |F(ref) conj(F(mov))|`` (channels summed
    before normalising: one displacement for all of them), as
    ``skimage.registration.phase_cross_correlation(reference, moving)`` for one channel:
    the same floor against division by zero, the first maximum in row-major order, and
    peaks past half the size read as negative shifts. Frames without structure (e.g. all
    black) give a zero spectrum and the displacement 0."""
    ref, mov = reference.float(), moving.float()
    height, width = ref.shape[-2:]
    product = (torch.fft.fft2(ref) * torch.fft.fft2(mov).conj()).sum(1)             # [B, H, W]
    product = product / product.abs().clamp_min(100 * torch.finfo(ref.dtype).eps)
    peak = torch.fft.ifft2(product).abs().flatten(1).argmax(1)                       # [B]
    shift = torch.stack([peak // width, peak % width], 1)                            # [B, 2]
    size = torch.tensor([height, width], device=shift.device)
    return torch.where(shift > size // 2, shift - size, shift)


def shift_frames(frames: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``frames [N, C, H, W]`` moved by ``shift [N, 2]`` integer pixels (rows, columns):
    ``out[n, :, y, x] = frames[n, :, y - dy, x - dx]``; what leaves the canvas is dropped and
    the uncovered area is 0 (M3SO's black background)."""
    n, _, height, width = frames.shape
    rows = torch.arange(height, device=frames.device) - shift[:, :1]                # [N, H] source rows
    cols = torch.arange(width, device=frames.device) - shift[:, 1:]                 # [N, W] source columns
    inside = (((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :])
    r, c = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    moved = frames[torch.arange(n, device=frames.device)[:, None, None], :, r[:, :, None], c[:, None, :]]
    return (moved * inside[..., None]).permute(0, 3, 1, 2)                           # [N, H, W, C] -> [N, C, H, W]


def constant_velocity(context: torch.Tensor, n_future: int) -> torch.Tensor:
    """The last context frame moved by ``k * d`` for the k-th future frame, ``d`` the
    displacement between the last two context frames (:func:`phase_correlation`; 0 with one
    context frame). ``context [n_past, B, C, H, W]`` -> ``[n_future, B, C, H, W]``."""
    last = context[-1]                                                               # [B, C, H, W]
    batch = last.shape[0]
    if context.shape[0] < 2:
        step = torch.zeros(batch, 2, dtype=torch.long, device=context.device)
    else:
        step = phase_correlation(last, context[-2])                                  # [B, 2]
    k = torch.arange(1, n_future + 1, device=context.device)[:, None, None]          # [F, 1, 1]
    shifts = (k * step).reshape(n_future * batch, 2)                                 # [F*B, 2]
    moved = shift_frames(last.repeat(n_future, 1, 1, 1), shifts)                     # [F*B, C, H, W]
    return moved.reshape(n_future, *last.shape)


BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("copy_last_frame", "copy last frame", "copy_last", copy_last_frame),
    Baseline("constant_velocity", "constant velocity", "constant_velocity", constant_velocity),
)}
