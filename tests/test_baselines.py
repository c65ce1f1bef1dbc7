"""The evaluation-only baselines (baselines.py)."""
from __future__ import annotations

import pytest
import torch

import evaluation
from baselines import BASELINES, copy_last_frame


def test_copy_last_frame_repeats_the_last_context_frame():
    context = torch.rand(3, 2, 1, 8, 8)                                      # [n_past, B, C, H, W]
    assert torch.equal(copy_last_frame(context, 4), context[2:].repeat(4, 1, 1, 1, 1))


def test_registry_names_are_free_and_settings_check_them():
    assert not set(BASELINES) & evaluation.RESERVED_NAMES
    assert evaluation.EvalSettings(n_past=2, n_future=2, nsample=1).baselines == tuple(BASELINES)
    with pytest.raises(ValueError, match="unknown baselines"):
        evaluation.EvalSettings(n_past=2, n_future=2, nsample=1, baselines=("optical_flow",))
