"""Quality filters. Each records its measurement in `clip.scores` (also when it keeps
the clip) and returns the clip or a Drop naming what was measured against which threshold.

Video filters work on clip.video [T, H, W, 3] uint8, audio filters on clip.audio [S, C]
float32; a clip without loaded media is loaded first.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import signal

from data_pipelines.clip import Clip, Drop
from data_pipelines.stages.load import load_media

SILENCE_FLOOR_DBFS = -120.0


# --- pure measurements -------------------------------------------------------------------------


def luma(frames: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, H, W] float32 luma (BT.601 weights), 0..255."""
    return frames.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)


def motion_score(frames: np.ndarray) -> float:
    """Mean absolute luma change between consecutive frames, as a fraction of full scale."""
    if len(frames) < 2:
        return 0.0
    return float(np.abs(np.diff(luma(frames), axis=0)).mean() / 255.0)


def frozen_fraction(frames: np.ndarray, tolerance: float = 0.5) -> float:
    """Fraction of consecutive frame pairs whose mean absolute difference is below `tolerance` (0..255)."""
    if len(frames) < 2:
        return 1.0
    diffs = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    return float((diffs < tolerance).mean())


def black_fraction(frames: np.ndarray, max_luma: float = 16.0) -> float:
    """Fraction of frames whose mean luma is at most `max_luma` (0..255)."""
    return float((luma(frames).mean(axis=(1, 2)) <= max_luma).mean())


def sharpness(frames: np.ndarray, max_frames: int = 8) -> float:
    """Median over up to `max_frames` frames of the variance of the luma Laplacian."""
    pick = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    y = luma(frames[pick])
    lap = y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:] - 4 * y[:, 1:-1, 1:-1]
    return float(np.median(lap.reshape(len(pick), -1).var(axis=1)))


def dbfs(x: float) -> float:
    return float(max(SILENCE_FLOOR_DBFS, 20 * np.log10(max(x, 1e-12))))


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level relative to 1.0, in dB (floored at -120)."""
    return dbfs(float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))) if audio.size else SILENCE_FLOOR_DBFS


def peak_dbfs(audio: np.ndarray) -> float:
    return dbfs(float(np.abs(audio).max())) if audio.size else SILENCE_FLOOR_DBFS


def _k_weighting(rate: float):
    """The two biquads of BS.1770 K-weighting re-derived for any sample rate from the
    standard's analogue parameters (shelf: 1681.974 Hz, +3.99984 dB, Q 0.7071752;
    high-pass: 38.13547 Hz, Q 0.5003270), by the bilinear transform."""
    k = np.tan(np.pi * 1681.974 / rate)
    q, vh = 0.7071752, 10 ** (3.99984 / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = ([(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0], [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    k, q = np.tan(np.pi * 38.13547 / rate), 0.5003270
    a0 = 1 + k / q + k * k
    high_pass = ([1.0, -2.0, 1.0], [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    return shelf, high_pass


def loudness_lufs(audio: np.ndarray, rate: int) -> float:
    """Ungated BS.1770-style loudness of [S, C] audio: K-weighting (a +4 dB shelf above ~1.7 kHz
    and a 38 Hz high-pass, `_k_weighting`), channels summed with weight 1.
    A full-scale 1 kHz sine reads about -3 LUFS. Short clips, so no gating: "LUFS-ish"."""
    if audio.size == 0:
        return SILENCE_FLOOR_DBFS
    x = audio.astype(np.float64)
    for b, a in _k_weighting(rate):
        x = signal.lfilter(b, a, x, axis=0)
    power = float(np.mean(np.square(x), axis=0).sum())
    return float(max(SILENCE_FLOOR_DBFS, -0.691 + 10 * np.log10(max(power, 1e-30))))


def clip_fraction(audio: np.ndarray, level: float = 0.999) -> float:
    """Fraction of samples at or beyond `level` of full scale."""
    return float((np.abs(audio) >= level).mean()) if audio.size else 0.0


# --- stages ------------------------------------------------------------------------------------


def _loaded(clip: Clip, stage: str, need_audio: bool = False):
    """(clip with media, None) or (None, Drop) when decoding fails."""
    if clip.video is not None and (not need_audio or clip.audio is not None or not clip.has_audio):
        return clip, None
    try:
        return load_media(clip), None
    except Exception as e:  # noqa: BLE001 -- a stage never raises on bad input
        return None, Drop(clip.without_media(), stage, "corrupt", f"{clip.source}: {e}")


def _scored(clip: Clip, **scores) -> Clip:
    return dataclasses.replace(clip, scores={**clip.scores, **scores})


def filter_duration(clip: Clip, min_seconds: float = 1.0, max_seconds: float | None = None) -> list:
    d = clip.duration
    clip = _scored(clip, duration=d)
    if d < min_seconds - 1e-6:
        return [Drop(clip.without_media(), "filter_duration", "too_short", f"duration {d:.3f} s < min_seconds={min_seconds}")]
    if max_seconds is not None and d > max_seconds + 1e-6:
        return [Drop(clip.without_media(), "filter_duration", "too_long", f"duration {d:.3f} s > max_seconds={max_seconds}")]
    return [clip]


def filter_resolution(clip: Clip, min_side: int = 32) -> list:
    side = min(clip.width or 0, clip.height or 0)
    clip = _scored(clip, min_side=side)
    if side < min_side:
        return [Drop(clip.without_media(), "filter_resolution", "low_resolution", f"min side {side} px < min_side={min_side}")]
    return [clip]


def filter_fps(clip: Clip, min_fps: float = 8.0, max_fps: float = 120.0) -> list:
    fps = clip.fps or 0.0
    clip = _scored(clip, fps=fps)
    if not min_fps <= fps <= max_fps:
        return [Drop(clip.without_media(), "filter_fps", "bad_fps", f"fps {fps:g} outside [{min_fps}, {max_fps}]")]
    return [clip]


def _video_filter(clip: Clip, stage: str, reason: str, score: str, measure, fails, message) -> list:
    """Loads the clip's frames, records `score` = measure(frames) and drops the clip
    for `reason` when fails(score), explaining with message(score)."""
    clip, drop = _loaded(clip, stage)
    if drop:
        return [drop]
    value = measure(clip.video)
    clip = _scored(clip, **{score: value})
    if fails(value):
        return [Drop(clip.without_media(), stage, reason, message(value))]
    return [clip]


def filter_frozen(clip: Clip, tolerance: float = 0.5, max_fraction: float = 0.5) -> list:
    return _video_filter(
        clip,
        "filter_frozen",
        "frozen_video",
        "frozen_fraction",
        lambda v: frozen_fraction(v, tolerance),
        lambda f: f > max_fraction,
        lambda f: f"{f:.2f} of frame pairs unchanged (mean |diff| < {tolerance}) > max_fraction={max_fraction}",
    )


def filter_motion(clip: Clip, min_motion: float = 0.002) -> list:
    return _video_filter(
        clip, "filter_motion", "static_video", "motion", motion_score, lambda m: m < min_motion, lambda m: f"motion {m:.5f} < min_motion={min_motion}"
    )


def filter_black(clip: Clip, max_luma: float = 16.0, max_fraction: float = 0.5) -> list:
    return _video_filter(
        clip,
        "filter_black",
        "black_frames",
        "black_fraction",
        lambda v: black_fraction(v, max_luma),
        lambda f: f > max_fraction,
        lambda f: f"{f:.2f} of frames have mean luma <= {max_luma} > max_fraction={max_fraction}",
    )


def filter_blur(clip: Clip, min_sharpness: float = 5.0) -> list:
    return _video_filter(
        clip,
        "filter_blur",
        "blurry",
        "sharpness",
        sharpness,
        lambda s: s < min_sharpness,
        lambda s: f"Laplacian variance {s:.2f} < min_sharpness={min_sharpness}",
    )


def filter_audio_track(clip: Clip, require: bool = True) -> list:
    if require and not clip.has_audio:
        return [Drop(clip.without_media(), "filter_audio_track", "no_audio_track", f"{clip.source} has no audio stream")]
    return [clip]


def filter_silence(clip: Clip, min_dbfs: float = -60.0) -> list:
    if not clip.has_audio:
        return [clip]
    clip, drop = _loaded(clip, "filter_silence", need_audio=True)
    if drop:
        return [drop]
    level = rms_dbfs(clip.audio)
    clip = _scored(clip, rms_dbfs=level)
    if level < min_dbfs:
        return [Drop(clip.without_media(), "filter_silence", "silent_audio", f"RMS {level:.1f} dBFS < min_dbfs={min_dbfs}")]
    return [clip]


def filter_loudness(clip: Clip, max_rms_dbfs: float = -6.0, max_clip_fraction: float = 0.001) -> list:
    """Too loud (RMS above `max_rms_dbfs`) or clipped (more than `max_clip_fraction` of samples at
    full scale). Also records scores["loudness_lufs"] (see `loudness_lufs`) for loudness normalisation."""
    if not clip.has_audio:
        return [clip]
    clip, drop = _loaded(clip, "filter_loudness", need_audio=True)
    if drop:
        return [drop]
    level, peak, frac = rms_dbfs(clip.audio), peak_dbfs(clip.audio), clip_fraction(clip.audio)
    clip = _scored(
        clip, rms_dbfs=level, peak_dbfs=peak, clip_fraction=frac, loudness_lufs=loudness_lufs(clip.audio, clip.sample_rate) if clip.sample_rate else None
    )
    if frac > max_clip_fraction:
        return [Drop(clip.without_media(), "filter_loudness", "clipping", f"{frac:.4f} of samples at full scale > max_clip_fraction={max_clip_fraction}")]
    if level > max_rms_dbfs:
        return [Drop(clip.without_media(), "filter_loudness", "too_loud", f"RMS {level:.1f} dBFS > max_rms_dbfs={max_rms_dbfs}")]
    return [clip]
