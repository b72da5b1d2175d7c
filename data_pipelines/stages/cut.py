"""Cutting shots into clips whose durations are the configured buckets (seconds),
frame-exact: a clip of bucket b holds round(b * fps) frames."""

from __future__ import annotations

import dataclasses

from data_pipelines.clip import Clip, Drop


def cut(clip: Clip, buckets=(1.0, 2.0, 4.0), max_clips: int = 8, trim: float = 0.0) -> list:
    """Greedily fill the clip with the longest bucket that fits, after trimming `trim`
    seconds from each end (e.g. to keep away from a cut's neighbourhood). Loaded
    media are sliced (frame-exact), not decoded again. The remainder is discarded; a clip shorter than the smallest bucket is dropped
    ("too_short"). Each clip records `scores["duration_bucket"]`."""
    if not buckets:
        raise ValueError("cut: buckets is empty; pass durations in seconds, e.g. buckets=[1, 2, 4]")
    fps = clip.fps or 0.0
    end = clip.end if clip.end is not None else clip.source_duration
    if not fps or end is None:
        return [Drop(clip.without_media(), "cut", "corrupt", f"{clip.source}: unknown fps or duration; run probe first")]
    origin = int(round(clip.start * fps))
    first = origin + int(round(trim * fps))
    last = int(round(end * fps)) - int(round(trim * fps))  # exclusive
    sizes = sorted({max(1, int(round(b * fps))): float(b) for b in buckets}.items(), reverse=True)
    out, at = [], first
    while len(out) < max_clips:
        fit = next(((n, b) for n, b in sizes if at + n <= last), None)
        if fit is None:
            break
        n, b = fit
        out.append(
            dataclasses.replace(
                clip,
                start=at / fps,
                end=(at + n) / fps,
                num_frames=n,
                video=_frames(clip, at - origin, n),
                audio=_samples(clip, (at - origin) / fps, n / fps),
                scores=dict(clip.scores, duration_bucket=b),
            )
        )
        at += n
    if not out:
        return [Drop(clip.without_media(), "cut", "too_short", f"{(last - first) / fps:.3f} s is shorter than the smallest bucket {min(buckets)} s")]
    return out


def _frames(clip: Clip, offset: int, n: int):
    if clip.video is None:
        return None
    return clip.video[offset : offset + n] if offset + n <= len(clip.video) else None


def _samples(clip: Clip, offset: float, length: float):
    if clip.audio is None or not clip.sample_rate:
        return None
    a = int(round(offset * clip.sample_rate))
    return clip.audio[a : a + int(round(length * clip.sample_rate))]
