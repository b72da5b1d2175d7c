"""Multi-resolution STFT loss: how far a waveform's spectrogram is from a
target's at several window sizes at once, the reconstruction loss of jav's
neural vocoder.

At each (n_fft, hop): spectral convergence ||S_y| - |S_x||_F / ||S_x||_F (led by
the loud bins) plus the mean L1 of log magnitudes (which hears quiet bins too).
Short windows pin onsets in time, long ones pin pitch; together they also
constrain phase, since overlapping frames of a wrong phase do not add up to
the right magnitudes at another resolution.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jav.audio.stft import stft

# (n_fft, hop): 8, 25 and 64 ms windows at 16 kHz.
RESOLUTIONS = ((128, 32), (400, 100), (1024, 256))
LOG_EPS = 1e-5  # below the -50 dBFS noise's STFT magnitude (about 0.01 to 0.04)


def magnitude(wave: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """|STFT| [..., frames, n_fft // 2 + 1] of wave [..., S], gradient-safe at zero."""
    spec = stft(wave, n_fft, hop)
    return jnp.sqrt(jnp.square(spec.real) + jnp.square(spec.imag) + 1e-12)


def stft_terms(output: jax.Array, target: jax.Array, n_fft: int, hop: int) -> tuple[jax.Array, jax.Array]:
    """(spectral convergence, log-magnitude L1) of output against target, waves [B, S], at one resolution."""
    out, ref = magnitude(output, n_fft, hop), magnitude(target, n_fft, hop)
    convergence = jnp.sqrt(jnp.sum(jnp.square(out - ref), axis=(-2, -1))) / (jnp.sqrt(jnp.sum(jnp.square(ref), axis=(-2, -1))) + 1e-7)
    log_l1 = jnp.mean(jnp.abs(jnp.log(out + LOG_EPS) - jnp.log(ref + LOG_EPS)))
    return jnp.mean(convergence), log_l1


def multi_resolution_stft_loss(output: jax.Array, target: jax.Array, resolutions: Sequence[tuple[int, int]] = RESOLUTIONS) -> tuple[jax.Array, dict]:
    """Mean over resolutions of (spectral convergence + log-magnitude L1), and both parts for logging.

    output, target: waveforms [B, S] (or [S]) of the same shape.
    """
    if output.shape != target.shape:
        raise ValueError(f"output {output.shape} and target {target.shape} waveforms differ in shape; crop or pad them to the same length")
    terms = [stft_terms(output, target, n_fft, hop) for n_fft, hop in resolutions]
    convergence = sum(c for c, _ in terms) / len(terms)
    log_l1 = sum(l for _, l in terms) / len(terms)
    return convergence + log_l1, {"spectral_convergence": convergence, "log_magnitude_l1": log_l1}
