"""The log-mel settings: the spectrogram's parameters and the constants that
normalise it. Shared by the JAX signal processing of jav.audio and the NumPy /
librosa reference of jav.data.mel, and part of every audio record's metadata."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class MelParams:
    """Spectrogram settings and the fixed constants that map log power to about [-1, 1].

    n_fft = 400 (a 25 ms window, as Whisper uses) rather than 1024: Griffin-Lim from
    64 ms windows smears burst onsets by up to 7 ms and invents extra ones, and is
    3x slower; from 25 ms windows onsets come back within about 3 ms. Its 40 Hz bins
    still give each of the 64 mel bands at least two bins.

    Normalisation: mel power in dB (librosa's Slaney-normalised filters, power 2,
    unnormalised STFT), floored at db_floor, then (db - db_centre) / db_half_range.
    With the defaults digital silence maps to -1, the bounce world's -50 dBFS noise
    to about -0.6, a 0.4-amplitude burst's peak to about 0.85 and a full-scale sine
    to about 1.05.
    """

    sample_rate: int = 16000
    n_fft: int = 400
    hop: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    db_floor: float = -60.0
    db_centre: float = -20.0
    db_half_range: float = 40.0
