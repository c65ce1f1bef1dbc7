"""Per-video-frame audio features: the one place where they are computed and scaled.

Each video frame owns ``samples_per_frame`` audio samples (M3SO: 4,400 Hz / 10 fps = 440).
Its feature is the magnitude of a centred STFT of just those samples (Hann window,
reflect padding, ``torch.stft``), so frame ``t``'s feature depends on frame ``t``'s sound
only. M3SO: n_fft 44, hop 22 -> [23, 21]; AudioSet Drums / YouTube Painting presets:
n_fft 88, hop 44, 704 samples per frame -> [45, 17].

Files on disk store the raw magnitude (``stft.npy``); :func:`scale_features` is the
scaling the model sees, applied by the loaders and nowhere else.
"""
from __future__ import annotations

import numpy as np
import torch

SAMPLE_RATE = 4400
FPS = 10
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 440
N_FFT = 44
HOP_LENGTH = 22


def stft_shape(samples_per_frame: int = SAMPLES_PER_FRAME, n_fft: int = N_FFT,
               hop_length: int = HOP_LENGTH) -> tuple[int, int]:
    """(frequency bins, time steps) of one frame's centred STFT."""
    return n_fft // 2 + 1, samples_per_frame // hop_length + 1


def frame_stft(audio: np.ndarray | torch.Tensor, samples_per_frame: int = SAMPLES_PER_FRAME,
               n_fft: int = N_FFT, hop_length: int = HOP_LENGTH, chunk: int = 65536) -> np.ndarray:
    """|STFT| of each video frame's own samples.

    audio: ``[..., T * samples_per_frame]`` float. Returns float32 ``[..., T, F, S]`` with
    ``(F, S) = stft_shape(...)``. Vectorised: all frames of all clips go through one
    ``torch.stft`` call per ``chunk`` frames (bounded memory).
    """
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    if x.shape[-1] % samples_per_frame:
        raise ValueError(f"audio length {x.shape[-1]} is not a multiple of samples_per_frame={samples_per_frame}")
    lead = x.shape[:-1]
    t = x.shape[-1] // samples_per_frame
    frames = x.reshape(-1, samples_per_frame)  # [N*T, L]
    window = torch.hann_window(n_fft)
    outs = []
    for start in range(0, frames.shape[0], chunk):
        spec = torch.stft(frames[start:start + chunk], n_fft=n_fft, hop_length=hop_length,
                          window=window, center=True, pad_mode="reflect", return_complex=True)
        outs.append(spec.abs())
    f, s = stft_shape(samples_per_frame, n_fft, hop_length)
    if not outs:
        return np.zeros((*lead, t, f, s), dtype=np.float32)
    mag = torch.cat(outs).reshape(*lead, t, f, s)
    return mag.numpy().astype(np.float32, copy=False)


def scale_features(magnitude: np.ndarray | torch.Tensor):
    """The scaling the audio encoder sees: ``log1p(|STFT|)``.

    A compressive scale keeps loud and quiet frames in one well-conditioned range
    (a 44-point Hann STFT of a full-scale tone peaks near 11); ``log1p`` keeps silence
    at exactly 0. Used by every loader, for generated and legacy data alike.
    """
    if isinstance(magnitude, torch.Tensor):
        return torch.log1p(magnitude)
    return np.log1p(magnitude)
