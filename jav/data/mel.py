"""Log-mel spectrograms as the model's audio representation, and their inversion to sound.

Until jav has a learned audio VAE, audio tokens are frames of a normalised log-mel
spectrogram (16 kHz, hop 160, 64 bins, as LTX-2's audio VAE takes in); Griffin-Lim
turns generated spectrograms back into waveforms. NumPy and librosa for now.
"""

import librosa
import numpy as np

from jav.audio.mel_params import MelParams


def waveform_to_logmel(wave: np.ndarray, params: MelParams = MelParams()) -> np.ndarray:
    """Normalised log-mel [Ta, n_mels] float32 with Ta = len(wave) // hop.

    Frame j is centred at time j * hop / sample_rate (the signal is taken as silent
    before it starts), which is where callers place audio token j in time.
    """
    wave = np.asarray(wave, np.float32)
    num_frames = len(wave) // params.hop
    power = librosa.feature.melspectrogram(
        y=wave,
        sr=params.sample_rate,
        n_fft=params.n_fft,
        hop_length=params.hop,
        n_mels=params.n_mels,
        fmin=params.fmin,
        fmax=params.fmax,
        center=True,
        pad_mode="constant",
        power=2.0,
    )[:, :num_frames]  # [n_mels, Ta]
    db = np.maximum(10 * np.log10(np.maximum(power.astype(np.float64), 1e-30)), params.db_floor)
    return ((db - params.db_centre) / params.db_half_range).T.astype(np.float32)


def logmel_to_waveform(logmel: np.ndarray, params: MelParams = MelParams(), n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Waveform [Ta * hop] float32 from a normalised log-mel [Ta, n_mels].

    Undoes the normalisation, inverts the mel filters (librosa's non-negative least
    squares) and runs n_iter rounds of fast Griffin-Lim from a phase drawn with seed.
    """
    db = np.asarray(logmel, np.float64) * params.db_half_range + params.db_centre
    power = 10 ** (db.T / 10)  # [n_mels, Ta]
    # One more frame, centred on the clip's end, so the last hop is not left silent.
    power = np.concatenate([power, power[:, -1:]], axis=1)
    magnitude = librosa.feature.inverse.mel_to_stft(
        power, sr=params.sample_rate, n_fft=params.n_fft, power=2.0, fmin=params.fmin, fmax=params.fmax
    )  # [n_fft // 2 + 1, Ta + 1]
    wave = librosa.griffinlim(
        magnitude,
        n_iter=n_iter,
        hop_length=params.hop,
        n_fft=params.n_fft,
        center=True,
        pad_mode="constant",
        length=logmel.shape[0] * params.hop,
        random_state=seed,
    )
    return wave.astype(np.float32)


def frame_times(num_frames: int, params: MelParams = MelParams()) -> np.ndarray:
    """Centre time (seconds) of each log-mel frame."""
    return np.arange(num_frames) * params.hop / params.sample_rate
