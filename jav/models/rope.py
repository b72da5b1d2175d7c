"""MM-RoPE: rotary position embeddings over (t, h, w) for video and t for audio.

Every token carries a position (t, h, w): t in seconds of the clip, h and w in
patch-grid units. Audio tokens carry (t, 0, 0). The head dimension's rotation
pairs are split between the three axes (half to time), and the temporal angle is
`t * time_scale * freq`, so an audio token and a video token at the same
instant get the same temporal phase. Cross-modal attention zeroes h and w,
leaving only the temporal rotation.

`model.rope.layout` picks how positions become angles: "jav" (above, one set of
angles shared by every head), "ltx2" (LTX-2's: positions as fractions of
`model.rope.max_pos`, mapped to [-1, 1], one frequency ladder spread over all
heads' rotation pairs, so each head rotates at its own frequencies) or "wan"
(Wan 2.1's: angles shared by the heads as in "jav", but h and w get Dh // 6
pairs each and time the rest, and positions are latent-grid indices: t the
latent frame, h and w the patch row and column, `wan_video_positions`; no
time_scale).
`model.rope.pairs` picks which dimensions rotate together: "split" (i, i + Dh/2)
or "interleaved" (2i, 2i + 1).
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


def wan_axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """How many rotation pairs of a head go to t, h and w in Wan 2.1: Dh // 6 pairs
    (2 * (Dh // 6) dimensions) to each of h and w, the rest to t (22, 21, 21 for Dh = 128)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    hw = head_dim // 6
    return head_dim // 2 - 2 * hw, hw, hw


def rope_frequencies(head_dim: int, theta: float, time_scale: float, counts: tuple[int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per rotation pair: the position axis it reads (0=t, 1=h, 2=w) and its angular frequency.
    `counts`: the pairs of each axis (default `axis_pairs`); axis a's pair j turns at
    theta^(-j / counts[a]), time's also times `time_scale`."""
    axis_ids, freqs = [], []
    for axis, n in enumerate(counts or axis_pairs(head_dim)):
        base = theta ** (-np.arange(n, dtype=np.float64) / max(n, 1))
        if axis == 0:
            base = base * time_scale
        axis_ids.append(np.full(n, axis))
        freqs.append(base)
    return np.concatenate(axis_ids), np.concatenate(freqs).astype(np.float32)


def rope_angles(pos: jax.Array, head_dim: int, theta: float, time_scale: float, counts: tuple[int, int, int] | None = None) -> jax.Array:
    """[..., N, 3] positions (t seconds, h, w) -> [..., N, head_dim // 2] angles."""
    axis_ids, freqs = rope_frequencies(head_dim, theta, time_scale, counts)
    return jnp.take(pos.astype(jnp.float32), jnp.asarray(axis_ids), axis=-1) * jnp.asarray(freqs)


LAYOUTS = ("jav", "ltx2", "wan")
PAIRS = ("split", "interleaved")


def apply_rope(x: jax.Array, angles: jax.Array, pairs: str = "split") -> jax.Array:
    """Rotates [B, N, H, Dh] by angles [B or 1, N, Dh // 2] (shared by the heads) or
    [B or 1, N, H, Dh // 2]; `pairs` "split" rotates (i, i + Dh/2), "interleaved" (2i, 2i + 1)."""
    if angles.ndim == 3:
        angles = angles[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    if pairs == "split":
        half = x.shape[-1] // 2
        x1, x2 = x32[..., :half], x32[..., half:]
        out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    else:
        x1, x2 = x32[..., 0::2], x32[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).reshape(x.shape)
    return out.astype(x.dtype)


def _linspace01(n: int) -> np.ndarray:
    """n points over [0, 1] in float64, each computed as torch.linspace does (from
    the nearer end), so frequency ladders match LTX-2's to the last bit."""
    if n == 1:
        return np.zeros(1)
    i = np.arange(n, dtype=np.float64)
    step = 1.0 / (n - 1)
    return np.where(i < n // 2, i * step, 1.0 - (n - 1 - i) * step)


def ltx2_frequencies(heads: int, head_dim: int, axes: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """LTX-2's rotation pairs over all heads, [H * Dh/2] each: the position axis a
    pair reads and its angular frequency. The ladder theta^[0..1] * pi/2 (float64,
    then float32) has (H * Dh) // (2 * axes) rungs, each given to every axis in turn;
    the pairs left over come first and do not rotate (frequency 0)."""
    pairs = heads * head_dim // 2
    rungs = heads * head_dim // (2 * axes)
    pad = pairs - rungs * axes
    ladder = (theta ** _linspace01(rungs) * np.pi / 2.0).astype(np.float32)
    axis_ids = np.concatenate([np.zeros(pad, np.int32), np.tile(np.arange(axes, dtype=np.int32), rungs)])
    freqs = np.concatenate([np.zeros(pad, np.float32), np.repeat(ladder, axes)])
    return axis_ids, freqs


def ltx2_angles(pos: jax.Array, heads: int, head_dim: int, theta: float, max_pos, axes: int) -> jax.Array:
    """[B or 1, N, >= axes] positions in LTX-2's units (t seconds, h and w pixels: each
    token's patch centre) -> [B or 1, N, H, Dh // 2] angles over the first `axes` axes."""
    axis_ids, freqs = ltx2_frequencies(heads, head_dim, axes, theta)
    frac = pos[..., :axes].astype(jnp.float32) / jnp.asarray(max_pos[:axes], jnp.float32)
    angles = jnp.take(frac * 2.0 - 1.0, jnp.asarray(axis_ids), axis=-1) * jnp.asarray(freqs)
    return angles.reshape(*angles.shape[:-1], heads, head_dim // 2)


def angles_for(rope, pos: jax.Array, heads: int, head_dim: int, axes: str = "thw") -> jax.Array:
    """The rotation angles of `model.rope`'s layout for [B or 1, N, 3] positions:
    [B or 1, N, Dh // 2] ("jav", "wan") or [B or 1, N, H, Dh // 2] ("ltx2"); `axes` "t":
    by time alone (cross-modal attention; LTX-2's audio)."""
    if axes not in ("thw", "t"):
        raise ValueError(f"axes={axes!r}: 'thw' or 't'")
    layout = rope.get("layout", "jav")
    if layout == "jav":
        return rope_angles(temporal_only(pos) if axes == "t" else pos, head_dim, rope.theta, rope.time_scale)
    if layout == "wan":
        return rope_angles(temporal_only(pos) if axes == "t" else pos, head_dim, rope.theta, 1.0, wan_axis_pairs(head_dim))
    return ltx2_angles(pos, heads, head_dim, rope.theta, rope.max_pos, len(axes))


def ltx2_video_positions(frames: int, height: int, width: int, fps: float, scale=(8, 32, 32), causal_offset: int = 1) -> np.ndarray:
    """[T*H*W, 3] positions of a latent video grid in LTX-2's units: the centre of each
    token's span in pixel frames (the causal VAE's first latent holds one frame) over
    `fps`, and in pixels; float32 arithmetic in the reference's order."""
    f32 = np.float32
    idx = np.meshgrid(np.arange(frames, dtype=f32), np.arange(height, dtype=f32), np.arange(width, dtype=f32), indexing="ij")
    out = []
    for axis, (g, s) in enumerate(zip(idx, scale)):
        start, end = g * f32(s), (g + f32(1)) * f32(s)
        if axis == 0:
            start = np.maximum(start + f32(causal_offset) - f32(s), f32(0)) / f32(fps)
            end = np.maximum(end + f32(causal_offset) - f32(s), f32(0)) / f32(fps)
        out.append(((start + end) / f32(2)).reshape(-1))
    return np.stack(out, axis=-1).astype(np.float32)


def ltx2_audio_positions(num: int, latents_per_hop: int = 4, hop: int = 160, rate: int = 16000, causal_offset: int = 1) -> np.ndarray:
    """[N, 3] positions (t seconds, 0, 0) of audio latents in LTX-2's units: the centre
    of each latent's span of mel frames (hop samples each, the first shortened by the
    causal VAE), float32 arithmetic in the reference's order."""
    f32 = np.float32
    g = np.arange(num, dtype=f32)
    s = f32(latents_per_hop)

    def seconds(mel):
        return np.maximum(mel + f32(causal_offset) - s, f32(0)) * f32(hop) / f32(rate)

    t = (seconds(g * s) + seconds((g + f32(1)) * s)) / f32(2)
    return np.stack([t, np.zeros_like(t), np.zeros_like(t)], axis=-1)


def wan_video_positions(frames: int, height: int, width: int) -> np.ndarray:
    """[T*H*W, 3] positions of a latent token grid in Wan's units (layout "wan"): each
    token's latent frame, row and column, in the token order of `patch.patchify_video`."""
    grid = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    return np.stack([g.reshape(-1) for g in grid], axis=-1).astype(np.float32)


def temporal_only(pos: jax.Array) -> jax.Array:
    """Keeps t and zeroes (h, w): the positions used by cross-modal attention."""
    return pos * jnp.asarray([1.0, 0.0, 0.0], pos.dtype)
