"""data/features.py: the feature registry, the per-frame STFT and librosa MFCCs."""
from __future__ import annotations

import pickle
import warnings

import librosa
import numpy as np
import pytest
import torch

from data.features import (FEATURES, FrameSettings, frame_mfcc, frame_stft, get_feature, max_mel_bands,
                           scale_features, stft_shape)

M3SO = FrameSettings()  # 4,400 Hz, 440 samples per frame, n_fft 44, hop 22, 32 MFCCs from 32 mel bands
AV = FrameSettings(sample_rate=7040, samples_per_frame=704, n_fft=88, hop_length=44, n_mfcc=32, n_mels=40)


def audio(clips: int, frames: int, settings: FrameSettings, seed: int = 0) -> np.ndarray:
    """float32 [clips, frames * L]: a tone per frame plus a little noise."""
    rng = np.random.default_rng(seed)
    n = np.arange(frames * settings.samples_per_frame)
    freq = rng.uniform(100, settings.sample_rate / 2 - 100, (clips, frames)).repeat(settings.samples_per_frame, 1)
    wave = 0.5 * np.sin(2 * np.pi * freq * n / settings.sample_rate) + 0.01 * rng.standard_normal(freq.shape)
    return wave.astype(np.float32)


def test_registry_names_files_shapes_and_scaling():
    assert set(FEATURES) == {"stft", "mfcc"}
    assert get_feature("stft").file == "stft.npy" and get_feature("mfcc").file == "mfcc.npy"
    assert get_feature("stft").shape(M3SO) == (23, 21) and get_feature("mfcc").shape(M3SO) == (32, 21)
    assert get_feature("stft").shape(AV) == (45, 17) and get_feature("mfcc").shape(AV) == (32, 17)
    x = torch.rand(2, 3)
    assert torch.equal(get_feature("stft").scale(x), scale_features(x))
    assert get_feature("mfcc").scale(x) is x  # MFCCs are log-scaled already
    assert get_feature("stft").params(M3SO) == {"n_fft": 44, "hop_length": 22, "center": True, "window": "hann",
                                                "shape": [23, 21]}
    block = get_feature("mfcc").params(M3SO)
    assert block["shape"] == [32, 21] and block["file"] == "mfcc.npy" and block["n_mels"] == 32
    with pytest.raises(ValueError, match="unknown audio feature kind 'wavelets'; choose one of stft, mfcc"):
        get_feature("wavelets")
    # a kind pickles by name (DataLoader workers receive the registry's own entry)
    assert pickle.loads(pickle.dumps(get_feature("mfcc"))) is get_feature("mfcc")


@pytest.mark.parametrize("settings", [M3SO, AV], ids=["m3so", "av"])
def test_every_kind_computes_its_shape_frame_by_frame(settings):
    a = audio(3, 4, settings)
    for kind in FEATURES.values():
        feats = kind.compute(a, settings)
        assert feats.shape == (3, 4, *kind.shape(settings)) and feats.dtype == np.float32
        assert np.isfinite(feats).all()
        # frame t's feature depends on frame t's samples only, whatever else is in the batch
        one = kind.compute(a[1, settings.samples_per_frame:2 * settings.samples_per_frame], settings)
        np.testing.assert_allclose(one[0], feats[1, 1], rtol=1e-5, atol=1e-4)
    assert get_feature("mfcc").shape(settings)[1] == stft_shape(settings.samples_per_frame, settings.n_fft,
                                                                 settings.hop_length)[1]


@pytest.mark.parametrize("settings", [M3SO, AV], ids=["m3so", "av"])
def test_mfcc_is_librosa_of_each_frame_and_warns_nothing(settings):
    a = audio(2, 3, settings, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. librosa's "Empty filters detected in mel frequency basis"
        got = frame_mfcc(a, settings)
    power = frame_stft(a, settings.samples_per_frame, settings.n_fft, settings.hop_length) ** 2  # [2, 3, F, S]
    basis = librosa.filters.mel(sr=settings.sample_rate, n_fft=settings.n_fft, n_mels=settings.n_mels)
    mel = np.einsum("mf,ntfs->ntms", basis.astype(np.float64), power.astype(np.float64))
    want = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=settings.n_mfcc)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-3)
    # the same framing as librosa's own centred STFT, apart from its edge steps
    frames = a.reshape(-1, settings.samples_per_frame)
    mel_y = librosa.feature.melspectrogram(y=frames, sr=settings.sample_rate, n_fft=settings.n_fft,
                                           hop_length=settings.hop_length, pad_mode="reflect", n_mels=settings.n_mels)
    direct = librosa.feature.mfcc(S=librosa.power_to_db(mel_y, top_db=None), n_mfcc=settings.n_mfcc)
    np.testing.assert_allclose(got.reshape(direct.shape)[..., 1:-1], direct[..., 1:-1], rtol=1e-4, atol=2e-3)


def test_mfcc_tracks_spectral_shape():
    # A higher tone puts its energy in higher mel bands; the DCT keeps that (c1 falls).
    t = np.arange(704 * 2) / 7040
    low = frame_mfcc(np.sin(2 * np.pi * 300 * t), AV)
    high = frame_mfcc(np.sin(2 * np.pi * 3000 * t), AV)
    assert low.shape == (2, 32, 17)
    assert low[:, 1].mean() > high[:, 1].mean() + 1.0


def test_mfcc_settings_are_checked():
    assert max_mel_bands(4400, 44) == 34 and max_mel_bands(7040, 88) == 54
    with pytest.raises(ValueError, match="n_mels 40 leaves mel bands with no FFT bin .* use n_mels <= 34"):
        frame_mfcc(np.zeros(440, np.float32), FrameSettings(n_mels=40))
    with pytest.raises(ValueError, match="n_mfcc 33 must be between 1 and n_mels = 32"):
        get_feature("mfcc").check(FrameSettings(n_mfcc=33))
    with pytest.raises(ValueError, match="not a multiple of samples_per_frame=440"):
        frame_mfcc(np.zeros(441, np.float32))
