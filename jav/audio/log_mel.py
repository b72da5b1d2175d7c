"""Mel power and the normalised log-mel of MelParams (jav.audio.mel_params), in JAX.

The same features as jav.data.mel.waveform_to_logmel (librosa), jittable and
batched: wave [..., N] -> [..., Ta, n_mels] with Ta = N // hop, frame j centred
at j * hop / sample_rate.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jav.audio.mel_filters import mel_filterbank
from jav.audio.stft import stft
from jav.audio.mel_params import MelParams


def filterbank(params: MelParams) -> jax.Array:
    """[n_mels, n_fft // 2 + 1] Slaney filters for params."""
    return jnp.asarray(mel_filterbank(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax))


@functools.partial(jax.jit, static_argnames="params")
def mel_power(wave: jax.Array, params: MelParams = MelParams()) -> jax.Array:
    """Mel power [..., Ta, n_mels] of wave [..., N] (librosa.feature.melspectrogram, power 2, transposed).

    The centred STFT has one more frame than hops (the one centred on the clip's
    end); it is dropped so that Ta = N // hop, as waveform_to_logmel does.
    """
    count = wave.shape[-1] // params.hop
    spec = stft(wave, params.n_fft, params.hop)[..., :count, :]  # [..., Ta, bins]
    power = jnp.square(spec.real) + jnp.square(spec.imag)
    return jnp.einsum("...tf,mf->...tm", power, filterbank(params), precision=jax.lax.Precision.HIGHEST)


def power_to_logmel(power: jax.Array, params: MelParams = MelParams()) -> jax.Array:
    """Mel power -> normalised log-mel, about [-1, 1] (MelParams says how the constants were chosen)."""
    db = jnp.maximum(10 * jnp.log10(jnp.maximum(power, 1e-30)), params.db_floor)
    return (db - params.db_centre) / params.db_half_range


def logmel_to_power(logmel: jax.Array, params: MelParams = MelParams()) -> jax.Array:
    """The inverse of power_to_logmel; floored bins come back at the floor's power."""
    return 10 ** ((logmel * params.db_half_range + params.db_centre) / 10)


@functools.partial(jax.jit, static_argnames="params")
def waveform_to_logmel(wave: jax.Array, params: MelParams = MelParams()) -> jax.Array:
    """Normalised log-mel [..., Ta, n_mels] float32 of wave [..., N]; Ta = N // hop."""
    return power_to_logmel(mel_power(wave, params), params)
