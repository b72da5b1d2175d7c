"""Log-mel features and their Griffin-Lim inverse, measured with the bounce world's own metrics."""

import time

import numpy as np

from jav.data import bounce, bounce_metrics, mel
from jav.data.mel import MelParams

PARAMS = MelParams()


def test_shapes_and_frame_times():
    for length in (32000, 32159, 16080):
        logmel = mel.waveform_to_logmel(np.zeros(length, np.float32))
        assert logmel.shape == (length // 160, 64) and logmel.dtype == np.float32
    times = mel.frame_times(200)
    assert times.shape == (200,) and times[0] == 0.0 and np.isclose(times[1], 0.01) and np.isclose(times[-1], 1.99)


def test_normalisation_is_fixed_and_about_unit_range():
    assert np.all(mel.waveform_to_logmel(np.zeros(32000, np.float32)) == -1.0)
    logmel = mel.waveform_to_logmel(bounce.generate_clip(0).audio)
    assert -1.0 <= logmel.min() and logmel.max() <= 1.0
    # The -50 dBFS noise sits near -0.6 in the bands a burst does not reach.
    assert -0.75 < np.median(logmel[:, 40:]) < -0.5
    # Fixed constants: twice the amplitude is 6 dB, the same shift in every clip.
    loud = mel.waveform_to_logmel(2 * bounce.generate_clip(0).audio)
    peak = logmel > 0
    assert np.allclose(loud[peak] - logmel[peak], 20 * np.log10(2) / PARAMS.db_half_range, atol=1e-4)


def test_frame_j_is_centred_at_j_hops():
    # A 1 kHz tone starting at 1.0 s: frames whose window ends before it stay silent.
    sr, start = 16000, 1.0
    t = np.arange(32000) / sr
    wave = np.where(t >= start, 0.5 * np.sin(2 * np.pi * 1000 * t), 0).astype(np.float32)
    loudness = mel.waveform_to_logmel(wave).max(axis=1)
    half_window = PARAMS.n_fft / 2 / sr
    times = mel.frame_times(len(loudness))
    assert np.all(loudness[times + half_window < start] == -1.0)
    assert np.all(loudness[times - half_window >= start] > 0.5)


def test_griffin_lim_round_trip_keeps_onsets_and_pitch():
    for seed in (0, 1, 5):
        clip = bounce.generate_clip(seed)
        start = time.perf_counter()
        wave = mel.logmel_to_waveform(mel.waveform_to_logmel(clip.audio))
        seconds = time.perf_counter() - start
        print(f"seed {seed}: round trip of {len(clip.audio) / 16000:.1f} s of audio in {seconds:.2f} s")
        assert wave.shape == clip.audio.shape and wave.dtype == np.float32

        before, after = bounce_metrics.audio_onsets(clip.audio), bounce_metrics.audio_onsets(wave)
        assert np.abs(before[:, None] - after[None, :]).min(axis=1).max() < 0.010
        original = bounce_metrics.clip_metrics(clip.frames, clip.audio, clip.caption)
        round_trip = bounce_metrics.clip_metrics(clip.frames, wave, clip.caption)
        assert round_trip["pitch_agreement"] == 1.0
        assert round_trip["sync_error_ms"] < original["sync_error_ms"] + 5


def test_griffin_lim_is_deterministic():
    logmel = mel.waveform_to_logmel(bounce.generate_clip(2).audio[:8000])
    assert np.array_equal(mel.logmel_to_waveform(logmel, n_iter=4), mel.logmel_to_waveform(logmel, n_iter=4))
