"""Shot boundary detection and splitting: a hard cut is a frame whose colour
histogram differs sharply from the previous frame's (and more than its neighbours' do)."""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines import media
from data_pipelines.clip import Clip, Drop


def colour_histograms(frames: np.ndarray, bins: int = 8) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, bins**3] joint RGB histograms, each summing to 1."""
    q = (frames.astype(np.int32) * bins) // 256  # [T, H, W, 3]
    index = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]  # [T, H, W]
    flat = index.reshape(len(frames), -1) + (np.arange(len(frames)) * bins**3)[:, None]  # one bincount for all frames
    hist = np.bincount(flat.reshape(-1), minlength=len(frames) * bins**3).reshape(len(frames), -1)
    return hist.astype(np.float64) / flat.shape[1]


def cut_scores(hist: np.ndarray) -> np.ndarray:
    """[T, B] histograms -> [T-1] score of a cut before frame t+1: half the L1 distance of
    consecutive histograms (the fraction of pixels whose colour bin changed), in [0, 1]."""
    return 0.5 * np.abs(np.diff(hist, axis=0)).sum(axis=1)


def detect_cuts(frames: np.ndarray, threshold: float = 0.4, bins: int = 8, min_shot_frames: int = 1) -> list[int]:
    """Frame indices where a new shot starts in frames [T, H, W, 3] (see `cuts_from_histograms`)."""
    return cuts_from_histograms(colour_histograms(frames, bins), threshold, min_shot_frames)


def cuts_from_histograms(hist: np.ndarray, threshold: float = 0.4, min_shot_frames: int = 1) -> list[int]:
    """Frame indices where a new shot starts: the score crosses `threshold` and is a local
    maximum, with at least `min_shot_frames` frames between cuts."""
    scores = cut_scores(hist)
    cuts = []
    for i, s in enumerate(scores):
        if s < threshold:
            continue
        left = scores[i - 1] if i > 0 else 0.0
        right = scores[i + 1] if i + 1 < len(scores) else 0.0
        if s < left or s < right:
            continue
        frame = i + 1
        if (cuts and frame - cuts[-1] < min_shot_frames) or frame < min_shot_frames:
            continue
        cuts.append(frame)
    return cuts


def shots(clip: Clip, threshold: float = 0.4, bins: int = 8, min_shot_frames: int = 1, max_side: int = 128) -> list:
    """Split a clip into its shots. Frames are decoded one at a time (shrunk to `max_side`)
    and only their histograms kept, so long sources fit in memory. Every emitted clip
    records the cut times found in the source (`scores["source_cuts"]`, seconds) and its
    `scores["shot_index"]`; emitted clips carry no media."""
    try:
        if clip.video is not None:
            hist = colour_histograms(clip.video, bins)
        else:
            parts, batch = [], []
            for frame in media.iter_video(clip.source, clip.start, clip.end, clip.fps, max_side):
                batch.append(frame)
                if len(batch) == 64:
                    parts.append(colour_histograms(np.stack(batch), bins))
                    batch = []
            parts += [colour_histograms(np.stack(batch), bins)] if batch else []
            hist = np.concatenate(parts) if parts else np.zeros((0, bins**3))
        if len(hist) == 0:
            raise media.MediaError(f"no video frames in [{clip.start}, {clip.end})")
    except Exception as e:  # noqa: BLE001 -- a stage never raises on bad input
        return [Drop(clip.without_media(), "shots", "corrupt", f"{clip.source}: {e}")]
    fps = clip.fps or 1.0
    first_frame = int(round(clip.start * fps))
    cuts = cuts_from_histograms(hist, threshold, min_shot_frames)
    bounds = [0, *cuts, len(hist)]
    source_cuts = [round((first_frame + c) / fps, 6) for c in cuts]
    out = []
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        scores = dict(clip.scores, source_cuts=source_cuts, shot_index=k)
        out.append(
            dataclasses.replace(clip, start=(first_frame + a) / fps, end=(first_frame + b) / fps, num_frames=b - a, video=None, audio=None, scores=scores)
        )
    return out
