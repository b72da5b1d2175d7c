"""Log-mel back to sound in JAX: mel-to-linear inversion and fast Griffin-Lim.

The jitted counterpart of jav.data.mel.logmel_to_waveform. Griffin-Lim runs a
fixed number of rounds in one `lax.fori_loop` with librosa's momentum (Perraudin
et al.'s "fast" Griffin-Lim): each round's phase estimate is pushed past the
previous one by momentum / (1 + momentum), which converges in far fewer rounds
than plain alternating projections.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jav.audio.log_mel import logmel_to_power
from jav.audio.mel_filters import mel_filterbank
from jav.audio.stft import istft, stft
from jav.audio.mel_params import MelParams


@functools.lru_cache(maxsize=16)
def inverse_filters(params: MelParams) -> tuple[np.ndarray, float]:
    """(pseudo-inverse [bins, n_mels], gradient step 1 / ||M||^2) of params' filterbank M."""
    weights = mel_filterbank(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax).astype(np.float64)
    step = 1.0 / np.linalg.norm(weights, 2) ** 2
    return np.linalg.pinv(weights).astype(np.float32), float(step)


@functools.partial(jax.jit, static_argnames=("params", "nnls_steps"))
def mel_to_linear_power(mel: jax.Array, params: MelParams = MelParams(), nnls_steps: int = 10) -> jax.Array:
    """Non-negative linear power [..., T, bins] whose mel projection approximates mel [..., T, n_mels].

    Starts from the pseudo-inverse clipped at 0 (librosa's starting point too)
    and takes nnls_steps projected gradient steps on ||x M^T - mel||^2 with x >= 0,
    a fixed-cost stand-in for librosa's L-BFGS-B non-negative least squares.
    Clipping alone throws away the energy the pseudo-inverse put below zero; on 16
    bounce clips 10 steps halve the round trip's log-mel error (0.019 -> 0.011
    mean L1; librosa's path 0.019), and more steps barely help. The hardest burst
    seen (bounce seed 4 at 1.296 s, on the tail of the same disc's burst 43 ms
    earlier) is lost in 3 of 8 phase draws with clipping alone, 1 of 8 with 10
    steps, 2 of 8 on librosa's path.
    """
    pinv, step = inverse_filters(params)
    filters = jnp.asarray(mel_filterbank(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax))
    hi = jax.lax.Precision.HIGHEST
    linear = jnp.maximum(jnp.einsum("...tm,fm->...tf", mel, pinv, precision=hi), 0)

    def project(_, x):
        residual = jnp.einsum("...tf,mf->...tm", x, filters, precision=hi) - mel
        return jnp.maximum(x - step * jnp.einsum("...tm,mf->...tf", residual, filters, precision=hi), 0)

    return jax.lax.fori_loop(0, nnls_steps, project, linear) if nnls_steps else linear


def griffin_lim(magnitude: jax.Array, key: jax.Array, n_fft: int, hop: int, length: int, n_iter: int | jax.Array = 32, momentum: float = 0.99) -> jax.Array:
    """Waveform [..., length] whose STFT magnitude approximates magnitude [..., F, n_fft // 2 + 1].

    Phases start uniform at random (from key); each of n_iter rounds goes to a
    waveform and back, keeps the new phase and subtracts momentum / (1 + momentum)
    times the previous round's spectrogram first (librosa.griffinlim's update).
    """
    phase = jnp.exp(2j * jnp.pi * jax.random.uniform(key, magnitude.shape))
    magnitude = magnitude.astype(jnp.float32)
    eps = jnp.finfo(jnp.float32).tiny
    push = momentum / (1 + momentum)

    def one_round(_, carry):
        angles, previous = carry
        rebuilt = stft(istft(magnitude * angles, n_fft, hop, length), n_fft, hop)
        pushed = rebuilt - push * previous
        return pushed / (jnp.abs(pushed) + eps), rebuilt

    # The first round has no previous spectrogram: subtracting zeros is librosa's skip.
    angles, _ = jax.lax.fori_loop(0, n_iter, one_round, (phase.astype(jnp.complex64), jnp.zeros_like(phase, jnp.complex64)))
    return istft(magnitude * angles, n_fft, hop, length)


# n_iter is traced (the loop runs as a while loop), so changing it does not recompile.
@functools.partial(jax.jit, static_argnames=("params", "nnls_steps"))
def logmel_to_waveform(logmel: jax.Array, key: jax.Array, params: MelParams = MelParams(), n_iter: int = 32, nnls_steps: int = 10) -> jax.Array:
    """Waveform [..., Ta * hop] float32 from a normalised log-mel [..., Ta, n_mels].

    As jav.data.mel.logmel_to_waveform: undo the normalisation, invert the mel
    filters, then fast Griffin-Lim. One extra frame, a copy of the last, is
    centred on the clip's end so that the last hop is not left silent.
    """
    power = logmel_to_power(logmel.astype(jnp.float32), params)
    power = jnp.concatenate([power, power[..., -1:, :]], axis=-2)  # [..., Ta + 1, n_mels]
    magnitude = jnp.sqrt(mel_to_linear_power(power, params, nnls_steps))  # [..., Ta + 1, bins]
    length = logmel.shape[-2] * params.hop
    return griffin_lim(magnitude, key, params.n_fft, params.hop, length, n_iter)
