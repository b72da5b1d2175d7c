"""Audio-video synchrony: estimate how late the audio runs against the picture and
drop (or re-align) clips that are off by more than a threshold.

The visual event signal is the acceleration of the moving foreground: the centroid
of the pixels of each colour that differ from the frame's background colour,
differenced twice.
A bounce reverses a velocity, so its second difference is a hat of one frame's
half-width centred on the contact time. The audio event signal is the rectified
rise of the amplitude envelope (onsets), smoothed with the same hat. Sliding the
audio signal by a lag and correlating it with the visual signal at the frame times
gives a correlation per lag; the best lag, refined by a parabola, is the offset
(sub-frame). Fitted to scenes of few moving objects on a still background (the
bounce world); a learned synchrony model would replace `estimate_offset` for
footage of crowds or camera motion.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines import media
from data_pipelines.clip import Clip, Drop
from data_pipelines.stages.load import load_media

ENVELOPE_RATE = 1000  # Hz of the audio onset signal


def stride_for(fps: float) -> int:
    """Frames between the samples of the acceleration stencil: about 1/8 s, so that fast
    frame rates do not drown the bounce in the centroid's per-frame jitter."""
    return max(1, int(round(fps / 8)))


def visual_events(frames: np.ndarray, stride: int = 1, levels: int = 2, min_share: float = 0.2) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T] sum over foreground colours of the centroid acceleration
    |c[t+d] - 2 c[t] + c[t-d]| (pixels per stride^2), 0 where the stencil leaves the clip.

    Foreground: pixels away from the frame's median (background) colour, split by colour
    (`levels` per channel) so that each differently coloured object has its own centroid and
    two objects crossing do not read as a bounce; a colour counts where it holds at least
    `min_share` of the foreground pixels in all three stencil frames (so the blended
    colours of anti-aliased edges do not)."""
    x = frames.astype(np.int32)
    background = np.median(x.reshape(len(x), -1, 3), axis=1)  # [T, 3]
    foreground = np.abs(x - background[:, None, None, :]).sum(-1) > 24  # [T, H, W]; above compression noise
    q = (x * levels) // 256
    colour = np.where(foreground, (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2], -1)
    share_floor = min_share * np.maximum(foreground.sum(axis=(1, 2)), 1)  # [T]
    rows, cols = np.arange(x.shape[1]), np.arange(x.shape[2])
    d, out = stride, np.zeros(len(x), np.float32)
    if len(x) <= 2 * d:
        return out
    for c in np.unique(colour[colour >= 0]):
        mask = colour == c  # [T, H, W]
        count = mask.sum(axis=(1, 2)).astype(np.float64)
        safe = np.maximum(count, 1.0)
        centre = np.stack([(mask.sum(axis=1) * cols).sum(axis=1) / safe, (mask.sum(axis=2) * rows).sum(axis=1) / safe], axis=1)  # [T, 2] (x, y)
        acc = np.linalg.norm(centre[2 * d :] - 2 * centre[d:-d] + centre[: -2 * d], axis=1)
        big = (count >= share_floor) & (count > 0)
        valid = big[2 * d :] & big[d:-d] & big[: -2 * d]
        out[d:-d] += np.where(valid, acc, 0.0).astype(np.float32)
    return out


def count_events(signal_: np.ndarray, min_event: float, separation: int) -> int:
    """Local maxima of at least `min_event`, at least `separation` samples apart."""
    peaks = []
    for i in np.argsort(-signal_):
        if signal_[i] < min_event:
            break
        if all(abs(i - p) >= separation for p in peaks):
            peaks.append(i)
    return len(peaks)


def audio_onsets(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """[S] or [S, C] -> onset strength at ENVELOPE_RATE: rectified rise of the mean |x| per 1 ms."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    hop = max(1, int(round(sample_rate / ENVELOPE_RATE)))
    n = len(mono) // hop
    envelope = np.abs(mono[: n * hop]).reshape(n, hop).mean(axis=1)
    rise = np.maximum(envelope[3:] - envelope[:-3], 0.0)  # rise over 3 ms
    return np.concatenate([np.zeros(3), rise])


def estimate_offset(
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray,
    sample_rate: int,
    audio_start: float = 0.0,
    max_offset: float = 0.5,
    step: float = 0.005,
    min_event: float = 0.2,
) -> tuple[float, float, int, float]:
    """-> (offset seconds the audio is late by, confidence = peak correlation in [-1, 1],
    number of visual events, margin = the peak minus the best correlation more than one
    frame away from it: how clearly this lag beats the other candidates).

    `audio` starts `audio_start` seconds after the first frame (negative: before it),
    so audio read with margins around the clip lets every lag see the whole clip. Without a
    visual event of at least `min_event` pixels/stride^2 the confidence is 0."""
    d = stride_for(fps)
    vis = visual_events(frames, d)
    events = count_events(vis, min_event, 2 * d)
    onsets = audio_onsets(audio, sample_rate)
    if events == 0 or onsets.std() == 0:  # nothing changes course, or no sound
        return 0.0, 0.0, events, 0.0
    half = ENVELOPE_RATE * d / fps  # hat half-width in envelope samples
    u = np.arange(-int(half), int(half) + 1)
    smooth = np.convolve(onsets, np.maximum(0.0, 1 - np.abs(u) / half), mode="same")
    times = audio_start + np.arange(len(smooth)) / ENVELOPE_RATE
    lags = np.arange(-max_offset, max_offset + step / 2, step)
    inner = slice(d, len(frames) - d)
    frame_times = np.arange(len(frames))[inner] / fps
    target = vis[inner] - vis[inner].mean()
    predicted = np.interp(frame_times[None, :] + lags[:, None], times, smooth, left=0.0, right=0.0)
    predicted -= predicted.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(predicted, axis=1) * np.linalg.norm(target)
    corr = np.where(norm > 0, predicted @ target / np.maximum(norm, 1e-12), -1.0)
    best = int(np.argmax(corr))
    lag = lags[best]
    far = np.abs(lags - lag) > 1.0 / fps
    margin = float(corr[best] - corr[far].max()) if far.any() else float(corr[best])
    if 0 < best < len(lags) - 1:
        a, b, c = corr[best - 1], corr[best], corr[best + 1]
        denom = a - 2 * b + c
        if denom < 0:
            lag += step * 0.5 * (a - c) / denom
    return float(lag), float(corr[best]), events, margin


def sync(
    clip: Clip, max_offset: float = 0.5, threshold: float = 0.15, min_confidence: float = 0.5, min_events: int = 2, min_margin: float = 0.05, mode: str = "drop"
) -> list:
    """Record scores["av_offset"] (seconds the audio is late; None when it cannot be
    judged: confidence below `min_confidence`, fewer than `min_events` visual events, or a
    peak that beats lags more than a frame away by less than `min_margin`),
    scores["av_sync_confidence"], scores["av_sync_margin"] and scores["av_events"]. With a confident estimate beyond
    `threshold`: mode "drop" drops the clip ("av_offset"), "realign" keeps it with
    `audio_offset = -av_offset` (its audio re-read shifted), "score" only records."""
    if mode not in ("drop", "realign", "score"):
        raise ValueError(f"sync: mode={mode!r}; use 'drop', 'realign' or 'score'")
    if not (clip.has_audio and clip.has_video):
        return [dataclasses.replace(clip, scores={**clip.scores, "av_offset": None, "av_sync_confidence": 0.0})]
    try:
        frames = clip.video if clip.video is not None else load_media(clip, audio=False).video
        end = clip.end if clip.end is not None else clip.source_duration
        margin = max_offset + 1.0 / (clip.fps or 1.0)
        audio, rate = media.read_audio(clip.source, clip.start - clip.audio_offset - margin, end - clip.audio_offset + margin, channels=1)
        offset, confidence, events, distinct = estimate_offset(frames, clip.fps, audio, rate, -margin, max_offset)
    except Exception as e:  # noqa: BLE001 -- a stage never raises on bad input
        return [Drop(clip.without_media(), "sync", "corrupt", f"{clip.source}: {e}")]
    # a best lag at the edge of the search range is an unresolved peak, not a measurement
    judged = confidence >= min_confidence and events >= min_events and distinct >= min_margin and abs(offset) < max_offset - 0.01
    clip = dataclasses.replace(
        clip, scores={**clip.scores, "av_offset": offset if judged else None, "av_sync_confidence": confidence, "av_sync_margin": distinct, "av_events": events}
    )
    if not judged or abs(offset) <= threshold or mode == "score":
        return [clip]
    if mode == "drop":
        return [
            Drop(
                clip.without_media(),
                "sync",
                "av_offset",
                f"audio {offset * 1000:+.0f} ms against the picture (confidence {confidence:.2f}), beyond threshold={threshold} s",
            )
        ]
    shifted = dataclasses.replace(clip, audio_offset=clip.audio_offset - offset)
    if clip.audio is not None:
        shifted = load_media(shifted, sample_rate=clip.sample_rate, channels=clip.audio.shape[1])
    return [shifted]
