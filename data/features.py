"""Per-video-frame audio features: the one place where they are defined, computed and scaled.

Each video frame owns ``samples_per_frame`` audio samples (M3SO: 4,400 Hz / 10 fps = 440),
and its feature map ``[F, S]`` is computed from those samples only, so frame ``t``'s feature
depends on frame ``t``'s sound only. Every kind uses the same framing: a centred analysis
window of ``n_fft`` samples every ``hop_length`` samples (Hann, reflect padding), so the
time axis is ``S = samples_per_frame // hop_length + 1`` for every kind.

The registry :data:`FEATURES` maps a kind's name (``--features``, ``dataset.json``'s
``"features"``) to a :class:`FeatureKind`: its file name in each split folder, how it is
computed, its shape, the parameters ``dataset.json`` records for it (under the kind's name)
and the scaling the model sees. Kinds:

* ``stft``: ``|STFT|`` (``torch.stft``); stored raw in ``stft.npy``, the model sees
  ``log1p`` of it (:func:`scale_features`). M3SO: n_fft 44, hop 22 -> [23, 21]; AudioSet
  Drums / YouTube Painting presets: n_fft 88, hop 44, 704 samples per frame -> [45, 17].
  ``stft.npy`` is written for every dataset, whatever kind the model reads.
* ``mfcc``: librosa's MFCCs of the same frames: the power ``|STFT|^2`` through ``n_mels`` Slaney mel
  filters (0 Hz to Nyquist), ``power_to_db`` per value (no ``top_db`` clipping, which
  would tie a frame to the loudest frame of the batch), orthonormal DCT-II, the first
  ``n_mfcc`` coefficients; stored in ``mfcc.npy``. Already log-scaled (negative values
  too), so the model sees it as stored. M3SO: 32 coefficients -> [32, 21].

Adding a kind: write its compute function and add one :class:`FeatureKind` to
:data:`FEATURES`; the generator, ``data.prepare_av``, the loaders and ``dataset.json`` pick
it up from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch

SAMPLE_RATE = 4400
FPS = 10
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 440
N_FFT = 44
HOP_LENGTH = 22
N_MFCC = 32  # M3SO's MFCC variant: [32, 21]
N_MELS = 32  # <= 34, the most mel bands that each still cover an FFT bin at 4,400 Hz / n_fft 44


@dataclass(frozen=True)
class FrameSettings:
    """How each video frame's samples are analysed; the defaults are M3SO's.

    ``n_mfcc`` and ``n_mels`` matter to the ``mfcc`` kind only.
    """

    sample_rate: int = SAMPLE_RATE
    samples_per_frame: int = SAMPLES_PER_FRAME
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    n_mfcc: int = N_MFCC
    n_mels: int = N_MELS


def stft_shape(samples_per_frame: int = SAMPLES_PER_FRAME, n_fft: int = N_FFT,
               hop_length: int = HOP_LENGTH) -> tuple[int, int]:
    """(frequency bins, time steps) of one frame's centred STFT."""
    return n_fft // 2 + 1, samples_per_frame // hop_length + 1


def _frames(audio: np.ndarray | torch.Tensor, samples_per_frame: int) -> tuple[np.ndarray, tuple[int, ...], int]:
    """``audio [..., T * L]`` -> (float32 frames ``[prod(...) * T, L]``, the leading shape, T)."""
    x = np.asarray(audio, dtype=np.float32)
    if x.shape[-1] % samples_per_frame:
        raise ValueError(f"audio length {x.shape[-1]} is not a multiple of samples_per_frame={samples_per_frame}")
    return x.reshape(-1, samples_per_frame), x.shape[:-1], x.shape[-1] // samples_per_frame


def frame_stft(audio: np.ndarray | torch.Tensor, samples_per_frame: int = SAMPLES_PER_FRAME,
               n_fft: int = N_FFT, hop_length: int = HOP_LENGTH, chunk: int = 65536) -> np.ndarray:
    """|STFT| of each video frame's own samples.

    audio: ``[..., T * samples_per_frame]`` float. Returns float32 ``[..., T, F, S]`` with
    ``(F, S) = stft_shape(...)``. Vectorised: all frames of all clips go through one
    ``torch.stft`` call per ``chunk`` frames (bounded memory).
    """
    frames_np, lead, t = _frames(audio, samples_per_frame)
    frames = torch.as_tensor(frames_np)  # [N*T, L]
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
    """The scaling the audio encoder sees for ``|STFT|``: ``log1p``.

    A compressive scale keeps loud and quiet frames in one well-conditioned range
    (a 44-point Hann STFT of a full-scale tone peaks near 11); ``log1p`` keeps silence
    at exactly 0. Used by every loader of STFT features, generated and legacy alike.
    """
    if isinstance(magnitude, torch.Tensor):
        return torch.log1p(magnitude)
    return np.log1p(magnitude)


def _identity(features: np.ndarray | torch.Tensor):
    """Features the model reads as stored (already log-scaled)."""
    return features


@lru_cache(maxsize=64)
def max_mel_bands(sample_rate: int, n_fft: int, limit: int = 512) -> int:
    """The most Slaney mel bands (0 Hz to Nyquist) of which none is empty, i.e. each
    triangle covers at least one of the ``n_fft // 2 + 1`` FFT bins (librosa warns of
    empty filters otherwise). 4,400 Hz / n_fft 44: 34; 7,040 Hz / n_fft 88: 54."""
    import librosa

    best = 0
    for n_mels in range(1, limit + 1):
        weights = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmax=sample_rate / 2.0)
        if not (weights.max(axis=1) > 0).all():
            break
        best = n_mels
    return best


def _check_stft(settings: FrameSettings) -> None:
    """Raise ValueError naming the setting when the framing cannot work."""
    if settings.hop_length < 1:
        raise ValueError(f"hop_length {settings.hop_length} must be >= 1")
    if not (2 <= settings.n_fft and settings.n_fft // 2 < settings.samples_per_frame):
        raise ValueError(f"n_fft {settings.n_fft} must be >= 2 with n_fft // 2 < samples_per_frame = "
                         f"{settings.samples_per_frame} (reflect padding)")


def _check_mfcc(settings: FrameSettings) -> None:
    _check_stft(settings)
    if not 1 <= settings.n_mfcc <= settings.n_mels:
        raise ValueError(f"n_mfcc {settings.n_mfcc} must be between 1 and n_mels = {settings.n_mels}")
    most = max_mel_bands(settings.sample_rate, settings.n_fft)
    if settings.n_mels > most:
        raise ValueError(f"n_mels {settings.n_mels} leaves mel bands with no FFT bin at {settings.sample_rate} Hz "
                         f"and n_fft {settings.n_fft}; use n_mels <= {most} (or a larger n_fft)")


def _stft_compute(audio: np.ndarray | torch.Tensor, settings: FrameSettings) -> np.ndarray:
    return frame_stft(audio, settings.samples_per_frame, settings.n_fft, settings.hop_length)


def frame_mfcc(audio: np.ndarray | torch.Tensor, settings: FrameSettings = FrameSettings(),
               chunk: int = 16384) -> np.ndarray:
    """librosa MFCCs of each video frame's own samples.

    audio: ``[..., T * samples_per_frame]`` float. Returns float32 ``[..., T, n_mfcc, S]``,
    ``S`` as :func:`stft_shape`. The power spectrum is ``frame_stft(...) ** 2``, the very
    spectrum of ``stft.npy`` (librosa's own centred STFT frames the two edge steps slightly
    differently from reflect padding); librosa does the rest: mel filters, ``power_to_db``,
    DCT. Vectorised: ``chunk`` video frames per call along librosa's leading batch axis.
    BLAS runs single-threaded here so the bytes do not depend on the number of threads
    (the generator promises the same files for any ``--workers``).
    """
    import librosa
    from threadpoolctl import threadpool_limits

    _check_mfcc(settings)
    frames, lead, t = _frames(audio, settings.samples_per_frame)  # [N*T, L]
    s_steps = stft_shape(settings.samples_per_frame, settings.n_fft, settings.hop_length)[1]
    out = np.empty((frames.shape[0], settings.n_mfcc, s_steps), dtype=np.float32)  # [N*T, n_mfcc, S]
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, frames.shape[0], chunk):
            mag = frame_stft(frames[start:start + chunk], settings.samples_per_frame, settings.n_fft,
                             settings.hop_length)[:, 0]  # [n, F, S]
            mel = librosa.feature.melspectrogram(S=np.square(mag), sr=settings.sample_rate, n_fft=settings.n_fft,
                                                 n_mels=settings.n_mels, fmax=settings.sample_rate / 2.0)  # [n, M, S]
            db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)  # per value: no batch-wide clip
            out[start:start + chunk] = librosa.feature.mfcc(S=db, n_mfcc=settings.n_mfcc, dct_type=2, norm="ortho")
    return out.reshape(*lead, t, settings.n_mfcc, s_steps)


def _mfcc_compute(audio: np.ndarray | torch.Tensor, settings: FrameSettings) -> np.ndarray:
    return frame_mfcc(audio, settings)


def _stft_params(settings: FrameSettings) -> dict[str, Any]:
    """``dataset.json``'s ``"stft"`` block (the format every existing dataset has)."""
    return {"n_fft": settings.n_fft, "hop_length": settings.hop_length, "center": True, "window": "hann",
            "shape": list(stft_shape(settings.samples_per_frame, settings.n_fft, settings.hop_length))}


def _mfcc_params(settings: FrameSettings) -> dict[str, Any]:
    """``dataset.json``'s ``"mfcc"`` block."""
    s_steps = stft_shape(settings.samples_per_frame, settings.n_fft, settings.hop_length)[1]
    return {"n_mfcc": settings.n_mfcc, "n_mels": settings.n_mels, "n_fft": settings.n_fft,
            "hop_length": settings.hop_length, "center": True, "window": "hann",
            "fmax": settings.sample_rate / 2.0, "shape": [settings.n_mfcc, s_steps], "file": "mfcc.npy",
            "scaled": "librosa: power_to_db of Slaney mel power (no top_db), orthonormal DCT-II; "
                      "the model reads it as stored"}


@dataclass(frozen=True)
class FeatureKind:
    """One kind of per-frame audio feature.

    ``compute(audio [..., T * L], settings) -> float32 [..., T, F, S]``;
    ``shape(settings) -> (F, S)``; ``params(settings)``: the block ``dataset.json`` records
    under ``name`` (it holds ``"shape": [F, S]``); ``check(settings)`` raises ValueError
    whose message starts with the bad setting's field name (``data.prepare_av`` turns it
    into that flag); ``scale``: what the model sees of the stored array (numpy or torch in,
    the same type out).
    """

    name: str
    file: str
    compute: Callable[[np.ndarray | torch.Tensor, FrameSettings], np.ndarray]
    shape: Callable[[FrameSettings], tuple[int, int]]
    params: Callable[[FrameSettings], dict[str, Any]]
    check: Callable[[FrameSettings], None]
    scale: Callable[[Any], Any]
    summary: str

    def __reduce__(self):
        # pickled by name (the functions may be lambdas): a DataLoader worker gets the registry's entry
        return get_feature, (self.name,)


FEATURES: dict[str, FeatureKind] = {
    "stft": FeatureKind(
        name="stft", file="stft.npy", compute=_stft_compute,
        shape=lambda s: stft_shape(s.samples_per_frame, s.n_fft, s.hop_length),
        params=_stft_params, check=_check_stft, scale=scale_features,
        summary="raw |STFT| per frame; the model sees log1p of it"),
    "mfcc": FeatureKind(
        name="mfcc", file="mfcc.npy", compute=_mfcc_compute,
        shape=lambda s: (s.n_mfcc, stft_shape(s.samples_per_frame, s.n_fft, s.hop_length)[1]),
        params=_mfcc_params, check=_check_mfcc, scale=_identity,
        summary="librosa MFCCs per frame (already log-scaled; read as stored)"),
}
#: The kind every dataset stores (``stft.npy``) and the default the model reads.
DEFAULT_FEATURE = "stft"


def get_feature(name: str) -> FeatureKind:
    """The registered kind called ``name``; ValueError listing the choices otherwise."""
    try:
        return FEATURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown audio feature kind {name!r}; choose one of {', '.join(FEATURES)}") from None
