"""mp4 with muxed H.264 + AAC: frames survive, and the soundtrack is not late."""

import numpy as np
import pytest

from jav.data.bounce import generate_clip
from jav.data.bounce_metrics import audio_onsets, clip_metrics
from jav.media import read_mp4, write_mp4, write_wav


def test_mp4_round_trip_keeps_frames_and_audio_timing(tmp_path):
    clip = generate_clip(3)
    path = tmp_path / "clip.mp4"
    write_mp4(path, clip.frames, 8, clip.audio, 16000)
    frames, fps, wave, rate = read_mp4(path)
    assert frames.shape == clip.frames.shape and fps == 8 and rate == 16000
    assert np.abs(frames.astype(int) - clip.frames).mean() < 6  # lossy, but close
    assert len(wave) >= len(clip.audio)
    before, after = audio_onsets(clip.audio), audio_onsets(wave[: len(clip.audio)])
    assert len(before) == len(after)
    # AAC priming trimmed: onsets within 1 ms (64 ms late if the priming were kept)
    assert np.abs(before - after).max() < 1e-3
    m = clip_metrics(frames, wave[: len(clip.audio)], clip.caption)
    assert m["colour_accuracy"] == 1.0 and m["pitch_agreement"] == 1.0


def test_mp4_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32), 8)


def test_wav_is_written(tmp_path):
    import soundfile

    write_wav(tmp_path / "a.wav", np.sin(np.arange(1600) / 5.0) * 0.5, 16000)
    data, rate = soundfile.read(tmp_path / "a.wav")
    assert rate == 16000 and len(data) == 1600 and abs(data.max() - 0.5) < 1e-3
