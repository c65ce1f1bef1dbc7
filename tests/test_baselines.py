"""The evaluation-only baselines (baselines.py): the shift estimate, the constant-velocity prediction."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.registration import phase_cross_correlation

import evaluation
from baselines import BASELINES, constant_velocity, copy_last_frame, phase_correlation, shift_frames


def test_phase_correlation_equals_skimage_on_random_shifted_images():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 48, 48, generator=gen)                        # [B, C, H, W]
    shifts = torch.randint(-12, 13, (12, 2), generator=gen)                   # [B, 2]
    for moved in (shift_frames(images, shifts),                               # zero fill: an estimate
                  torch.stack([torch.roll(im, tuple(s.tolist()), (1, 2)) for im, s in zip(images, shifts)])):
        got = phase_correlation(moved, images)
        want = [phase_cross_correlation(m[0].numpy(), im[0].numpy())[0] for m, im in zip(moved, images)]
        assert got.tolist() == np.asarray(want).astype(int).tolist()
        assert got.tolist() == shifts.tolist()


def test_phase_correlation_of_black_frames_is_zero():
    black = torch.zeros(2, 3, 16, 16)
    assert phase_correlation(black, black).tolist() == [[0, 0], [0, 0]]


def test_shift_frames_drops_what_leaves_and_fills_with_zero():
    frame = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)
    got = shift_frames(frame, torch.tensor([[1, -2]]))[0, 0]
    want = torch.zeros(4, 4)
    want[1:, :2] = frame[0, 0, :3, 2:]
    assert torch.equal(got, want)


def square_clip(batch: int, steps: int, size: int = 40, side: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Textured squares, each clip's at its own constant velocity, on black: frames ``[T, B, 2, H, W]``
    and velocities ``[B, 2]``."""
    gen = torch.Generator().manual_seed(1)
    velocity = torch.tensor([[2, 1], [-1, 3], [0, -2], [1, 0]])[:batch]
    texture = torch.rand(batch, 2, side, side, generator=gen) * 0.8 + 0.2
    frames = torch.zeros(steps, batch, 2, size, size)
    for t in range(steps):  # fixture construction only
        for b in range(batch):
            y, x = (torch.tensor([12, 12]) + t * velocity[b]).tolist()
            frames[t, b, :, y:y + side, x:x + side] = texture[b]
    return frames, velocity


def test_constant_velocity_predicts_a_moving_square_exactly():
    frames, velocity = square_clip(4, 7)
    n_past = 3
    pred = constant_velocity(frames[:n_past], 4)                              # [F, B, C, H, W]
    assert pred.shape == (4, *frames.shape[1:])
    assert phase_correlation(frames[2], frames[1]).tolist() == velocity.tolist()
    assert torch.equal(pred, frames[n_past:])


def test_constant_velocity_with_one_context_frame_copies_it():
    frames, _ = square_clip(2, 2)
    assert torch.equal(constant_velocity(frames[:1], 3), copy_last_frame(frames[:1], 3))


def test_constant_velocity_on_every_device_equals_cpu():
    """Device-agnostic: the same frames on every device present (the CPU alone where there is no GPU;
    never skipped) give the CPU's prediction, on the device the context came from."""
    frames, _ = square_clip(4, 5)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    want = constant_velocity(frames[:3], 2)
    for device in devices:
        got = constant_velocity(frames[:3].to(device), 2)
        assert got.device.type == device and torch.equal(got.cpu(), want)


def test_registry_names_are_free_and_settings_check_them():
    assert not set(BASELINES) & evaluation.RESERVED_NAMES
    assert evaluation.EvalSettings(n_past=2, n_future=2, nsample=1).baselines == tuple(BASELINES)
    with pytest.raises(ValueError, match="unknown baselines"):
        evaluation.EvalSettings(n_past=2, n_future=2, nsample=1, baselines=("optical_flow",))
