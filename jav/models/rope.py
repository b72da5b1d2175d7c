"""MM-RoPE: rotary position embeddings over (t, h, w) for video and t for audio.

Every token carries a position (t, h, w): t in seconds of the clip, h and w in
patch-grid units. Audio tokens carry (t, 0, 0). The head dimension's rotation
pairs are split between the three axes (half to time), and the temporal angle is
`t * time_scale * freq`, so an audio token and a video token at the same
instant get the same temporal phase. Cross-modal attention zeroes h and w,
leaving only the temporal rotation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """How many rotation pairs of a head go to t, h and w."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    pairs = head_dim // 2
    n_t = (pairs + 1) // 2
    n_h = (pairs - n_t + 1) // 2
    return n_t, n_h, pairs - n_t - n_h


def rope_frequencies(head_dim: int, theta: float, time_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per rotation pair: the position axis it reads (0=t, 1=h, 2=w) and its angular frequency."""
    axis_ids, freqs = [], []
    for axis, n in enumerate(axis_pairs(head_dim)):
        base = theta ** (-np.arange(n, dtype=np.float64) / max(n, 1))
        if axis == 0:
            base = base * time_scale
        axis_ids.append(np.full(n, axis))
        freqs.append(base)
    return np.concatenate(axis_ids), np.concatenate(freqs).astype(np.float32)


def rope_angles(pos: jax.Array, head_dim: int, theta: float, time_scale: float) -> jax.Array:
    """[..., N, 3] positions (t seconds, h, w) -> [..., N, head_dim // 2] angles."""
    axis_ids, freqs = rope_frequencies(head_dim, theta, time_scale)
    return jnp.take(pos.astype(jnp.float32), jnp.asarray(axis_ids), axis=-1) * jnp.asarray(freqs)


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
    """Rotates [B, N, H, Dh] by angles [B or 1, N, Dh // 2] (pairs are (i, i + Dh/2))."""
    half = x.shape[-1] // 2
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.astype(x.dtype)


def temporal_only(pos: jax.Array) -> jax.Array:
    """Keeps t and zeroes (h, w): the positions used by cross-modal attention."""
    return pos * jnp.asarray([1.0, 0.0, 0.0], pos.dtype)
