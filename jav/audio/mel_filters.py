"""The mel filterbank of librosa.filters.mel (Slaney mel scale, Slaney area
normalisation), built in NumPy so that no librosa call runs at feature time.

Slaney scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above it
(27 mels per factor 6.4). Each filter is a triangle between its neighbours'
centre frequencies, scaled to unit area (2 / bandwidth), so a band's power is a
density and wide high bands do not outweigh narrow low ones.
"""

from __future__ import annotations

import functools

import numpy as np

_HZ_PER_MEL = 200.0 / 3
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _HZ_PER_MEL
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    log_part = _BREAK_MEL + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return np.where(hz >= _BREAK_HZ, log_part, hz / _HZ_PER_MEL)


def mel_to_hz(mel) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    log_part = _BREAK_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _BREAK_MEL) - _BREAK_MEL))
    return np.where(mel >= _BREAK_MEL, log_part, mel * _HZ_PER_MEL)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Filter weights [n_mels, n_fft // 2 + 1] float32; mel power = weights @ |STFT|^2."""
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(
            f"mel band [{fmin}, {fmax}] Hz must lie in [0, {sample_rate / 2}] (the Nyquist frequency) with fmin < fmax; change MelParams.fmin / fmax"
        )
    bin_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # [n_mels + 2]
    width = np.diff(edges)
    offset = edges[:, None] - bin_hz[None, :]  # [n_mels + 2, bins]
    rising = -offset[:-2] / width[:-1, None]
    falling = offset[2:] / width[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)
