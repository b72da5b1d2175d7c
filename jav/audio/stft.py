"""Short-time Fourier transform and its overlap-add inverse, as librosa computes them.

Centred frames (the signal is zero-padded by n_fft // 2 on both sides, librosa's
`center=True, pad_mode="constant"`), a periodic Hann window of length n_fft,
no normalisation. Frame k is centred at sample k * hop. Both directions work on
any leading batch axes and need no gather or scatter: the padded signal is cut
into hop-long chunks and a frame is ceil(n_fft / hop) consecutive chunks.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window [n_fft] (scipy's `get_window("hann", n_fft)`, which librosa uses)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def num_frames(num_samples: int, hop: int) -> int:
    """Frames of a centred STFT of num_samples samples: one per hop, plus the one at the end."""
    return 1 + num_samples // hop


def _chunks_per_frame(n_fft: int, hop: int) -> int:
    return math.ceil(n_fft / hop)


def frame(wave: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """Centred frames [..., F, n_fft] of wave [..., N], F = 1 + N // hop."""
    if n_fft % 2:
        raise ValueError(f"n_fft={n_fft} is odd; centred frames need an even n_fft")
    count = num_frames(wave.shape[-1], hop)
    per_frame = _chunks_per_frame(n_fft, hop)
    total = (count + per_frame - 1) * hop
    right = total - wave.shape[-1] - n_fft // 2
    padded = jnp.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(n_fft // 2, right)])
    chunks = padded.reshape(*wave.shape[:-1], count + per_frame - 1, hop)  # [..., F + c - 1, hop]
    frames = jnp.concatenate([chunks[..., j : j + count, :] for j in range(per_frame)], axis=-1)  # [..., F, c * hop]
    return frames[..., :n_fft]


def stft(wave: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """Complex spectrogram [..., F, n_fft // 2 + 1] of wave [..., N] (librosa.stft, transposed to time-major)."""
    frames = frame(wave.astype(jnp.float32), n_fft, hop) * hann_window(n_fft)
    return jnp.fft.rfft(frames, axis=-1)


def _overlap_add(frames, hop: int, xp=jnp):
    """[..., F, n_fft] frames, frame k starting at k * hop -> [..., (F + c - 1) * hop] sum (xp: jnp or np)."""
    count, n_fft = frames.shape[-2:]
    per_frame = _chunks_per_frame(n_fft, hop)
    pad = [(0, 0)] * (frames.ndim - 1) + [(0, per_frame * hop - n_fft)]
    chunks = xp.pad(frames, pad).reshape(*frames.shape[:-1], per_frame, hop)  # [..., F, c, hop]
    lead = [(0, 0)] * (frames.ndim - 2)
    total = sum(xp.pad(chunks[..., j, :], lead + [(j, per_frame - 1 - j), (0, 0)]) for j in range(per_frame))
    return total.reshape(*frames.shape[:-2], (count + per_frame - 1) * hop)


def istft(spec: jax.Array, n_fft: int, hop: int, length: int) -> jax.Array:
    """Waveform [..., length] from a complex spectrogram [..., F, n_fft // 2 + 1] (librosa.istft).

    Windowed overlap-add divided by the summed squared window, which makes
    istft(stft(x)) == x wherever the window sum is not zero.
    """
    window = hann_window(n_fft)
    frames = jnp.fft.irfft(spec, n=n_fft, axis=-1) * window  # [..., F, n_fft]
    count = spec.shape[-2]
    # The window sum depends only on shapes, so it is a NumPy constant of the trace.
    window_sum = _overlap_add(np.tile(window**2, (count, 1)), hop, np)
    tiny = np.finfo(np.float32).tiny
    inverse_sum = np.where(window_sum > tiny, 1 / np.maximum(window_sum, tiny), 1.0).astype(np.float32)
    wave = _overlap_add(frames, hop) * inverse_sum
    wave = wave[..., n_fft // 2 : n_fft // 2 + length]
    short = length - wave.shape[-1]
    return jnp.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(0, short)]) if short > 0 else wave
