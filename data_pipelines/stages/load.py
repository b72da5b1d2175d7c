"""The load stage: decode a clip's time range into `clip.video` [T, H, W, 3] uint8 and
`clip.audio` [S, C] float32 (optionally resampled and mixed to a channel count)."""

from __future__ import annotations

import dataclasses

from data_pipelines import media
from data_pipelines.clip import Clip, Drop


def load_media(clip: Clip, audio: bool = True, sample_rate: int | None = None, channels: int | None = None) -> Clip:
    """The clip with its media decoded (raises media.MediaError). The audio window follows
    `clip.audio_offset` (a re-aligned clip reads its audio shifted)."""
    video = media.read_video(clip.source, clip.start, clip.end, clip.fps) if clip.has_video else None
    end = clip.end if clip.end is not None else clip.source_duration
    wave, rate = None, clip.sample_rate
    if audio and clip.has_audio:
        wave, rate = media.read_audio(clip.source, clip.start - clip.audio_offset, end - clip.audio_offset, sample_rate=sample_rate, channels=channels)
    return dataclasses.replace(
        clip,
        video=video,
        audio=wave,
        sample_rate=rate,
        audio_channels=wave.shape[1] if wave is not None else clip.audio_channels,
        num_frames=len(video) if video is not None else clip.num_frames,
        scores=dict(clip.scores),
    )


def load(clip: Clip, audio: bool = True, sample_rate: int | None = None, channels: int | None = None) -> list:
    """Decode [start, end). `sample_rate` resamples the audio; `channels` 1 or 2 mixes it.
    Drop "corrupt" when decoding fails."""
    try:
        return [load_media(clip, audio, sample_rate, channels)]
    except Exception as e:  # noqa: BLE001 -- a stage never raises on bad input
        return [Drop(clip.without_media(), "load", "corrupt", f"{clip.source} [{clip.start}, {clip.end}): {e}")]
