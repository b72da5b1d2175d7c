"""The probe stage: what a source file holds (container, streams, duration, fps,
resolution, sample rate, channels), and the drops for files that cannot be used."""

from __future__ import annotations

import dataclasses

from data_pipelines import media
from data_pipelines.clip import Clip, Drop


def probe(clip: Clip, require_video: bool = True, min_frames: int = 2, check_truncation: float = 0.9) -> list:
    """Fill the clip's source fields from the file.

    Drops: "corrupt" (zero-byte, truncated, unreadable), "no_video_track",
    "single_frame" (fewer than `min_frames` video frames)."""
    try:
        info = media.probe(clip.source, check_truncation=check_truncation)
    except media.MediaError as e:
        return [Drop(clip.without_media(), "probe", "corrupt", str(e))]
    except Exception as e:  # noqa: BLE001 -- a stage never raises on bad input
        return [Drop(clip.without_media(), "probe", "corrupt", f"{clip.source}: {type(e).__name__}: {e}")]
    out = dataclasses.replace(
        clip,
        container=info["container"],
        fps=info["fps"],
        width=info["width"],
        height=info["height"],
        num_frames=info["num_frames"],
        sample_rate=info["sample_rate"],
        audio_channels=info["audio_channels"],
        has_video=info["has_video"],
        has_audio=info["has_audio"],
        source_duration=info["duration"],
        scores=dict(clip.scores),
    )
    if require_video and not info["has_video"]:
        return [Drop(out, "probe", "no_video_track", f"{clip.source} has no video stream")]
    if info["has_video"] and info["num_frames"] < min_frames:
        return [Drop(out, "probe", "single_frame", f"{clip.source} has {info['num_frames']} video frame(s), fewer than min_frames={min_frames}")]
    return [out]
