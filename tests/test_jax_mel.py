"""JAX STFT, mel filters and log-mel against librosa and jav.data.mel (the reference path)."""

import jax
import librosa
import numpy as np
import pytest

from jav.audio import log_mel, mel_filters, stft
from jav.data import bounce, mel
from jav.data.mel import MelParams

PARAMS = MelParams()


def _librosa_power(wave: np.ndarray) -> np.ndarray:
    power = librosa.feature.melspectrogram(
        y=wave,
        sr=PARAMS.sample_rate,
        n_fft=PARAMS.n_fft,
        hop_length=PARAMS.hop,
        n_mels=PARAMS.n_mels,
        fmin=PARAMS.fmin,
        fmax=PARAMS.fmax,
        center=True,
        pad_mode="constant",
        power=2.0,
    )
    return power[:, : len(wave) // PARAMS.hop].T  # [Ta, n_mels]


def test_filterbank_equals_librosa():
    for sr, n_fft, n_mels, fmin, fmax in [(16000, 400, 64, 0.0, 8000.0), (22050, 1024, 80, 30.0, 9000.0)]:
        ours = mel_filters.mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        assert ours.shape == ref.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7 * ref.max())
    assert np.allclose(mel_filters.mel_to_hz(mel_filters.hz_to_mel([0.0, 440.0, 1000.0, 7999.0])), [0.0, 440.0, 1000.0, 7999.0])
    with pytest.raises(ValueError, match="Nyquist"):
        mel_filters.mel_filterbank(16000, 400, 64, 0.0, 9000.0)


def test_stft_matches_librosa_and_inverts():
    wave = np.random.default_rng(1).standard_normal(16037).astype(np.float32)
    ours = np.asarray(jax.jit(stft.stft, static_argnums=(1, 2))(wave, 400, 160))  # [F, bins]
    ref = librosa.stft(wave, n_fft=400, hop_length=160, center=True, pad_mode="constant").T
    assert ours.shape == ref.shape == (1 + 16037 // 160, 201)
    assert np.abs(ours - ref).max() < 1e-5 * np.abs(ref).max()
    back = np.asarray(jax.jit(stft.istft, static_argnums=(1, 2, 3))(ours, 400, 160, len(wave)))
    assert np.abs(back - wave).max() < 1e-5


def test_mel_power_equals_librosa_on_bounce_clip_and_noise():
    """Relative error two ways: against the clip's largest mel power, and per
    element over every bin above the log-mel floor (db_floor, -60 dB), the bins
    that reach the features at all."""
    clip = bounce.generate_clip(0).audio
    noise = (0.3 * np.random.default_rng(0).standard_normal(len(clip))).astype(np.float32)
    waves = np.stack([clip, noise])  # [2, N]: batched over clips
    power = np.asarray(log_mel.mel_power(waves, PARAMS))
    assert power.shape == (2, len(clip) // PARAMS.hop, PARAMS.n_mels)
    floor = 10 ** (PARAMS.db_floor / 10)
    for ours, wave in zip(power, waves):
        ref = _librosa_power(wave)
        assert np.abs(ours - ref).max() / ref.max() < 1e-4
        above = ref > floor
        assert above.mean() > 0.3  # the comparison covers a good share of the bins
        assert (np.abs(ours - ref)[above] / ref[above]).max() < 1e-4

        logmel = np.asarray(log_mel.waveform_to_logmel(wave, PARAMS))
        assert np.abs(logmel - mel.waveform_to_logmel(wave, PARAMS)).max() < 1e-4
    silence = np.asarray(log_mel.waveform_to_logmel(np.zeros(16000, np.float32), PARAMS))
    assert np.all(silence == -1.0)
    logmel = np.asarray(log_mel.waveform_to_logmel(clip, PARAMS))
    assert np.allclose(np.asarray(log_mel.power_to_logmel(log_mel.logmel_to_power(logmel, PARAMS), PARAMS)), logmel, atol=1e-5)
