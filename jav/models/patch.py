"""Patchify video [B, T, H, W, C] and audio [B, Ta, Ca] into tokens, the inverse,
and each token's (t seconds, h, w) position for MM-RoPE."""

from __future__ import annotations

from typing import Sequence

import einops
import jax
import jax.numpy as jnp
import numpy as np


def video_grid(shape_thw: Sequence[int], patch: Sequence[int]) -> tuple[int, int, int]:
    """Token grid (T', H', W') of a [T, H, W] clip; errors name the offending axis."""
    grid = []
    for name, n, p in zip("THW", shape_thw, patch):
        if n % p:
            raise ValueError(f"video {name}={n} is not divisible by its patch size {p}; pad the clip or change model.video.patch")
        grid.append(n // p)
    return tuple(grid)


def patchify_video(x: jax.Array, patch: Sequence[int]) -> jax.Array:
    pt, ph, pw = patch
    video_grid(x.shape[1:4], patch)
    return einops.rearrange(x, "b (t pt) (h ph) (w pw) c -> b (t h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)


def unpatchify_video(tokens: jax.Array, grid: Sequence[int], patch: Sequence[int], channels: int) -> jax.Array:
    (t, h, w), (pt, ph, pw) = grid, patch
    return einops.rearrange(tokens, "b (t h w) (pt ph pw c) -> b (t pt) (h ph) (w pw) c", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw, c=channels)


def patchify_audio(x: jax.Array, patch: int) -> jax.Array:
    if x.shape[1] % patch:
        raise ValueError(f"audio length {x.shape[1]} is not divisible by model.audio.patch={patch}")
    return einops.rearrange(x, "b (t p) c -> b t (p c)", p=patch)


def unpatchify_audio(tokens: jax.Array, patch: int, channels: int) -> jax.Array:
    return einops.rearrange(tokens, "b t (p c) -> b (t p) c", p=patch, c=channels)


def token_times(frame_times: np.ndarray, patch: int) -> np.ndarray:
    """Time of each temporal token: the mean time of the frames it covers."""
    frame_times = np.asarray(frame_times, np.float64)
    return frame_times.reshape(-1, patch).mean(axis=1)


def video_positions(frame_times: np.ndarray, hw: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """[T'*H'*W', 3] positions (t seconds, h, w) in the token order of `patchify_video`."""
    pt, ph, pw = patch
    t = token_times(frame_times, pt)
    h = np.arange(hw[0] // ph, dtype=np.float64)
    w = np.arange(hw[1] // pw, dtype=np.float64)
    tt, hh, ww = np.meshgrid(t, h, w, indexing="ij")
    return np.stack([tt, hh, ww], axis=-1).reshape(-1, 3).astype(np.float32)


def audio_positions(frame_times: np.ndarray, patch: int) -> np.ndarray:
    """[Ta', 3] positions (t seconds, 0, 0)."""
    t = token_times(frame_times, patch)
    return np.stack([t, np.zeros_like(t), np.zeros_like(t)], axis=-1).astype(np.float32)


def first_frame_tokens(grid: Sequence[int]) -> np.ndarray:
    """[T'*H'*W'] bool: the tokens of the first temporal patch (the I2VA condition)."""
    t, h, w = grid
    mask = np.zeros((t, h * w), bool)
    mask[0] = True
    return mask.reshape(-1)


def uniform_frame_times(num_frames: int, rate: float) -> np.ndarray:
    return np.arange(num_frames, dtype=np.float64) / rate


def as_batch_positions(pos: np.ndarray | jax.Array) -> jax.Array:
    pos = jnp.asarray(pos, jnp.float32)
    return pos[None] if pos.ndim == 2 else pos


def causal_latent_frame_times(num_latents: int, compression: int, fps: float) -> np.ndarray:
    """Centre times of a causal video VAE's latent frames: the first holds frame 0
    alone, latent i >= 1 the `compression` frames ending at frame i * compression."""
    i = np.arange(num_latents, dtype=np.float64)
    return np.where(i == 0, 0.0, (compression * i - (compression - 1) / 2) / fps)
