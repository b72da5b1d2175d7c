"""A convolutional audio VAE: normalised log-mel [B, Ta, n_mels] <-> latent tokens
[B, Ta / 4, (n_mels / 4) * latent_channels], as LTX-2's audio VAE shapes them
(64 mel bins at 100 frames/s -> 128-d tokens at 25/s).

The log-mel is an image of one channel over (time, frequency). Convolutions are
causal in time (a frame's features never see later frames; a downsampled frame
sees to the end of its own block), so a streaming decoder is possible later, and
symmetric in frequency. Norms are per position over channels (RMSNorm), which
keeps causality that a group norm over time would break. Parameters carry
logical axis names like the rest of jav: channel axes `embed` / `mlp` (as in
jav.models.video_vae), kernel axes unnamed.

The loss (`reconstruction_terms`) weighs each bin by its level above the clip's
floor and adds an L1 on frame-to-frame differences, so the world's short, sparse
bursts and their onsets count for more than the noise floor that fills most of
the spectrogram. `init_model` / `training_loss` / `evaluate` are the autoencoder
phase's hooks (jav.train.autoencoder).
"""

from __future__ import annotations

import math
from typing import Sequence

import einops
import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jav.models.layers import RMSNorm, dtype_of, fan_in_normal, jit_init, param, zeros

# exp(logvar) stays finite and its gradient alive at both ends.
LOGVAR_RANGE = (-30.0, 20.0)
KERNEL = 3  # every convolution is KERNEL x KERNEL over (time, frequency)


def reduction(cfg: ml_collections.ConfigDict) -> tuple[int, int]:
    """(time, frequency) factor from log-mel frames and bins to latent frames and bins."""
    return math.prod(s[0] for s in cfg.downsample), math.prod(s[1] for s in cfg.downsample)


def validate_config(cfg: ml_collections.ConfigDict) -> None:
    """Checks the config once, with messages that name the key and the fix."""
    if len(cfg.channels) != len(cfg.downsample) + 1:
        raise ValueError(
            f"audio_vae.channels has {len(cfg.channels)} entries but audio_vae.downsample has "
            f"{len(cfg.downsample)}; give one width per resolution (len(downsample) + 1)"
        )
    if any(not 1 <= stride <= KERNEL for pair in cfg.downsample for stride in pair):
        raise ValueError(
            f"audio_vae.downsample={tuple(cfg.downsample)}: each stride must be 1 to {KERNEL} (the "
            "convolution's size) so that every frame is seen; downsample in more, smaller steps"
        )
    freq = reduction(cfg)[1]
    if cfg.n_mels % freq:
        raise ValueError(f"audio_vae.n_mels={cfg.n_mels} is not divisible by the frequency reduction {freq}; change audio_vae.downsample or n_mels")


def token_dim(cfg: ml_collections.ConfigDict) -> int:
    return cfg.n_mels // reduction(cfg)[1] * cfg.latent_channels


class Conv(nnx.Module):
    """2-D convolution of [B, T, F, C_in] -> [B, T / st, F / sf, C_out].

    Causal in time: all of the time padding goes before the signal, k - s frames,
    so output frame i sees input frames up to s * i + s - 1, the end of its block.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        axes: tuple[str | None, str | None],
        *,
        rngs: nnx.Rngs,
        kernel: Sequence[int] = (KERNEL, KERNEL),
        stride: Sequence[int] = (1, 1),
        causal: bool = True,
        init=None,
        dtype: str = "float32",
        param_dtype: str = "float32",
    ):
        self.kernel_size, self.stride, self.causal = tuple(kernel), tuple(stride), causal
        init = init or fan_in_normal(math.prod(kernel) * in_channels)
        # axes name the (in, out) channel axes; the 1-channel ends of the model leave theirs unnamed.
        self.kernel = param(rngs, init, (*kernel, in_channels, out_channels), (None, None, *axes), dtype_of(param_dtype))
        self.bias = param(rngs, zeros, (out_channels,), (axes[1],), dtype_of(param_dtype))
        self.dtype = dtype_of(dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        (kt, kf), (st, sf) = self.kernel_size, self.stride
        time_pad = (kt - st, 0) if self.causal else ((kt - st + 1) // 2, (kt - st) // 2)
        freq_pad = ((kf - sf + 1) // 2, (kf - sf) // 2)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            self.kernel[...].astype(self.dtype),
            window_strides=self.stride,
            padding=(time_pad, freq_pad),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + self.bias[...].astype(self.dtype)


class ResBlock(nnx.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))), at one width; the second conv starts at
    zero, so every block starts as the identity."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs, causal: bool, dtype: str, param_dtype: str):
        kw = dict(rngs=rngs, causal=causal, dtype=dtype, param_dtype=param_dtype)
        self.norm1 = RMSNorm(channels, "embed", rngs=rngs, param_dtype=param_dtype)
        self.conv1 = Conv(channels, channels, ("embed", "mlp"), **kw)
        self.norm2 = RMSNorm(channels, "mlp", rngs=rngs, param_dtype=param_dtype)
        self.conv2 = Conv(channels, channels, ("mlp", "embed"), init=zeros, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        return x + self.conv2(jax.nn.silu(self.norm2(h)))


class AudioVAE(nnx.Module):
    """Log-mel [B, Ta, n_mels] -> (mean, logvar) [B, Ta / rt, D] -> log-mel; configs/audio_vae.py lists the keys."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        validate_config(cfg)
        self.cfg = ml_collections.FrozenConfigDict(cfg)  # hashable, so the graphdef can be a jit static
        kw = dict(rngs=rngs, causal=cfg.causal, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        ch, levels = tuple(cfg.channels), len(cfg.channels)

        self.enc_in = Conv(1, ch[0], (None, "embed"), **kw)
        self.enc_blocks = nnx.List([nnx.List([ResBlock(ch[i], **kw) for _ in range(cfg.blocks)]) for i in range(levels)])
        self.enc_down = nnx.List([Conv(ch[i], ch[i + 1], ("embed", "mlp"), stride=cfg.downsample[i], **kw) for i in range(levels - 1)])
        self.enc_norm = RMSNorm(ch[-1], "embed", rngs=rngs, param_dtype=cfg.param_dtype)
        self.enc_out = Conv(ch[-1], 2 * cfg.latent_channels, ("embed", None), **kw)

        self.dec_in = Conv(cfg.latent_channels, ch[-1], (None, "embed"), **kw)
        self.dec_blocks = nnx.List([nnx.List([ResBlock(ch[i], **kw) for _ in range(cfg.blocks)]) for i in range(levels)])
        self.dec_up = nnx.List([Conv(ch[i + 1], ch[i], ("embed", "mlp"), **kw) for i in range(levels - 1)])
        self.dec_norm = RMSNorm(ch[0], "embed", rngs=rngs, param_dtype=cfg.param_dtype)
        self.dec_out = Conv(ch[0], 1, ("embed", None), **kw)

    def _check_length(self, frames: int) -> None:
        time_factor = reduction(self.cfg)[0]
        if frames % time_factor:
            raise ValueError(
                f"log-mel length {frames} is not divisible by the VAE's time reduction {time_factor}; "
                "pad or crop the clip to a multiple (audio_vae.downsample sets the factor)"
            )

    def encode(self, logmel: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean, logvar), each [B, Ta / rt, (n_mels / rf) * latent_channels], of log-mel [B, Ta, n_mels]."""
        self._check_length(logmel.shape[1])
        if logmel.shape[2] != self.cfg.n_mels:
            raise ValueError(f"log-mel has {logmel.shape[2]} bins but audio_vae.n_mels={self.cfg.n_mels}")
        x = self.enc_in(logmel[..., None])  # [B, Ta, n_mels, C0]
        for level, blocks in enumerate(self.enc_blocks):
            for block in blocks:
                x = block(x)
            if level < len(self.enc_down):
                x = self.enc_down[level](x)  # [B, T / st, F / sf, C_level+1]
        moments = self.enc_out(jax.nn.silu(self.enc_norm(x)))  # [B, T', F', 2 * Cz]
        mean, logvar = jnp.split(moments, 2, axis=-1)
        logvar = jnp.clip(logvar, *LOGVAR_RANGE)
        flatten = lambda z: einops.rearrange(z, "b t f c -> b t (f c)")
        return flatten(mean), flatten(logvar)

    def decode(self, latents: jax.Array) -> jax.Array:
        """Log-mel [B, T' * rt, n_mels] of latent tokens [B, T', (n_mels / rf) * latent_channels]."""
        x = einops.rearrange(latents, "b t (f c) -> b t f c", c=self.cfg.latent_channels)
        x = self.dec_in(x)  # [B, T', F', C_last]
        for level in reversed(range(len(self.dec_blocks))):
            for block in self.dec_blocks[level]:
                x = block(x)
            if level > 0:
                st, sf = self.cfg.downsample[level - 1]
                # Nearest-neighbour upsampling then a causal conv: frame j sees latents up to j // st.
                x = jnp.repeat(jnp.repeat(x, st, axis=1), sf, axis=2)
                x = self.dec_up[level - 1](x)  # [B, T * st, F * sf, C_level-1]
        return self.dec_out(jax.nn.silu(self.dec_norm(x)))[..., 0]  # [B, Ta, n_mels]

    def __call__(self, logmel: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(reconstruction [B, Ta, n_mels], mean, logvar), decoding one posterior sample."""
        mean, logvar = self.encode(logmel)
        return self.decode(sample_latent(key, mean, logvar)), mean, logvar


def init_vae(cfg: ml_collections.ConfigDict, key: jax.Array, out_shardings=None) -> AudioVAE:
    """An AudioVAE created by one jitted initialisation (`layers.jit_init`)."""
    validate_config(cfg)
    return jit_init(AudioVAE, cfg, key, out_shardings)


def sample_latent(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """A draw from N(mean, exp(logvar)), differentiable in both (reparameterisation)."""
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent value, averaged (as jav.models.video_vae's)."""
    return 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


def burst_weights(target: jax.Array, gain: float) -> jax.Array:
    """1 + gain * (the target's level above its own floor), [B, Ta, n_mels].

    The floor is each clip's per-bin median over time: in the bounce world most
    frames are noise, so the median is the noise level and what rises above it is
    a burst. Bins at the floor weigh 1; a burst's peak (about 1.4 above the
    -50 dBFS floor in normalised log-mel) weighs about 1 + 1.4 * gain.
    """
    floor = jnp.median(target, axis=1, keepdims=True)  # [B, 1, n_mels]
    return 1.0 + gain * jax.nn.relu(target - floor)


def reconstruction_terms(reconstruction: jax.Array, target: jax.Array, burst_gain: float) -> dict:
    """{"l1": plain mean L1, "weighted_l1": L1 weighted by burst_weights, "flux_l1": weighted L1 of the
    frame-to-frame differences} of log-mels [B, Ta, n_mels].

    The weighted means divide by the weights' mean, so the terms stay on the plain
    L1's scale while a burst bin counts up to 1 + 1.4 * burst_gain times a floor bin.
    The difference term compares time derivatives, so an onset smeared over two
    frames costs even where the levels' L1 is small.
    """
    weights = jax.lax.stop_gradient(burst_weights(target, burst_gain))
    error = jnp.abs(reconstruction - target)
    flux_error = jnp.abs(jnp.diff(reconstruction, axis=1) - jnp.diff(target, axis=1))  # [B, Ta - 1, n_mels]
    flux_weights = jnp.maximum(weights[:, 1:], weights[:, :-1])  # an onset's frame or the one before it
    return {
        "l1": jnp.mean(error),
        "weighted_l1": jnp.mean(weights * error) / jnp.mean(weights),
        "flux_l1": jnp.mean(flux_weights * flux_error) / jnp.mean(flux_weights),
    }


def vae_loss(model: AudioVAE, logmel: jax.Array, key: jax.Array, kl_weight: float, burst_gain: float = 0.0, flux_weight: float = 0.0) -> tuple[jax.Array, dict]:
    """Weighted L1 + flux_weight * flux L1 + kl_weight * KL per latent value, and each term for logging.

    With burst_gain = flux_weight = 0 this is the plain mean L1 + KL.
    """
    reconstruction, mean, logvar = model(logmel, key)
    terms = reconstruction_terms(reconstruction, logmel, burst_gain)
    terms["kl"] = kl_divergence(mean, logvar)
    loss = terms["weighted_l1"] + flux_weight * terms["flux_l1"] + kl_weight * terms["kl"]
    return loss, terms


def model_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The audio VAE's keys: cfg itself, or cfg.model of an experiment config."""
    return cfg.model if "model" in cfg else cfg


def init_model(cfg: ml_collections.ConfigDict, key: jax.Array, out_shardings=None) -> AudioVAE:
    """The autoencoder phase's constructor (cfg: the VAE's keys or an experiment with them in cfg.model)."""
    return init_vae(model_config(cfg), key, out_shardings)


def training_loss(model: AudioVAE, batch: dict, key: jax.Array, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, dict]:
    """The autoencoder phase's loss on batch["logmel"] [B, Ta, n_mels]: vae_loss with the config's weights
    (burst_gain and flux_weight from the model's keys, kl_weight from cfg.loss in an experiment config)."""
    if "logmel" not in batch:
        raise ValueError(
            f"the audio VAE trains on batch['logmel'] but the batch has {sorted(batch)}; use a data source that yields log-mels (cfg.data.source='bounce')"
        )
    m = model_config(cfg)
    kl_weight = cfg.loss.kl_weight if "loss" in cfg else m.kl_weight  # an experiment's loss section wins
    return vae_loss(model, batch["logmel"], key, kl_weight, m.get("burst_gain", 0.0), m.get("flux_weight", 0.0))


def evaluate(model: AudioVAE, batch: dict, cfg: ml_collections.ConfigDict) -> dict:
    """Held-out scores for the autoencoder phase: reconstruction_terms of the posterior mean's decoding."""
    del cfg
    reconstruction = model.decode(model.encode(batch["logmel"])[0])
    return reconstruction_terms(reconstruction, batch["logmel"], burst_gain=8.0)
