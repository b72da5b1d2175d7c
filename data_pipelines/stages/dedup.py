"""Near-duplicate removal by perceptual hash. `phash` (a per-clip stage) records a
64-bit hash (DCT of a mosaic of four frames, plus colour); `near_duplicates` (run by the engine
once every clip is hashed) keeps the best clip of each group within a Hamming radius."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import fft

from data_pipelines.clip import Clip, Drop
from data_pipelines.stages.filters import luma
from data_pipelines.stages.load import load_media


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] averaging weights: output cell i covers input [i * n_in / n_out, (i + 1) * n_in / n_out)."""
    edges = np.arange(n_out + 1) * n_in / n_out
    lo, hi = np.arange(n_in)[None, :], np.arange(1, n_in + 1)[None, :]
    overlap = np.clip(np.minimum(hi, edges[1:, None]) - np.maximum(lo, edges[:-1, None]), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Area-average resize of [H, W] to [size, size] (exact overlap weights, any ratio)."""
    h, w = image.shape
    return _area_matrix(h, size) @ image.astype(np.float64) @ _area_matrix(w, size).T


def mosaic(frames: np.ndarray) -> np.ndarray:
    """Luma of the frames at 1/8, 3/8, 5/8, 7/8 of the clip, each 16 x 16, tiled 2 x 2 -> [32, 32]."""
    picks = [min(len(frames) - 1, int(f * len(frames))) for f in (1 / 8, 3 / 8, 5 / 8, 7 / 8)]
    tiles = [_resize(luma(frames[i : i + 1])[0], 16) for i in picks]
    return np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])


def colour_bits(frames: np.ndarray) -> list[bool]:
    """8 bits of colour, which luma alone misses: the chroma (Cb, Cr) of the background (median
    pixel) and of the foreground (mean of pixels whose luma stands out from the median), each
    in 4 levels, Gray-coded so that a small shift flips at most one bit."""
    x = frames.astype(np.float64)
    y = luma(frames).astype(np.float64)
    cb, cr = (x[..., 2] - y) * 0.564 + 128, (x[..., 0] - y) * 0.713 + 128
    background = [np.median(cb), np.median(cr)]
    mask = np.abs(y - np.median(y)) > 12
    foreground = [cb[mask].mean(), cr[mask].mean()] if mask.any() else background
    bits = []
    for value in (*background, *foreground):
        level = int(np.clip((value - 64) // 32, 0, 3))
        gray = level ^ (level >> 1)
        bits += [bool(gray & 2), bool(gray & 1)]
    return bits


def phash_frames(frames: np.ndarray) -> str:
    """64-bit perceptual hash (hex) of a clip: the signs, against their median, of 56 low DCT
    coefficients of the luma mosaic (the DC term left out), then the 8 `colour_bits`."""
    coeffs = fft.dctn(mosaic(frames), norm="ortho")[:8, :8].reshape(-1)[1:57]
    bits = [bool(b) for b in coeffs > np.median(coeffs)] + colour_bits(frames)
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def phash(clip: Clip) -> list:
    """Record scores["phash"] (16 hex digits)."""
    try:
        frames = clip.video if clip.video is not None else load_media(clip, audio=False).video
        return [dataclasses.replace(clip, scores={**clip.scores, "phash": phash_frames(frames)})]
    except Exception as e:  # noqa: BLE001 -- a stage never raises on bad input
        return [Drop(clip.without_media(), "phash", "corrupt", f"{clip.source}: {e}")]


def near_duplicates(entries, max_hamming: int = 3) -> set:
    """entries: [(key, phash_hex, quality)] -> keys to drop. Within each group of hashes
    linked by Hamming distance <= max_hamming, the entry of highest quality (ties: the
    smallest key) is kept. Deterministic whatever the input order."""
    items = sorted(entries, key=lambda e: (-float(e[2]), str(e[0])))
    kept, drop = [], set()
    for key, h, _ in items:
        if any(hamming(h, k) <= max_hamming for k in kept):
            drop.add(key)
        else:
            kept.append(h)
    return drop


def clip_quality(clip: Clip) -> float:
    """Which near-duplicate to keep: more pixels first, then sharper, then longer."""
    return float((clip.width or 0) * (clip.height or 0)) + min(float(clip.scores.get("sharpness") or 0.0), 999.0) / 1000.0 + min(clip.duration, 99.0) * 1e-6
