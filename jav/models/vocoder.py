"""A small neural vocoder: normalised log-mel [B, Ta, n_mels] -> waveform [B, Ta * hop],
trainable in a few CPU minutes, as an alternative to Griffin-Lim (jav.audio.griffin_lim).

It predicts each STFT frame's magnitude and phase and inverts them with jav's
iSTFT (the vocoder's frames are the log-mel's own, n_fft 400 and hop 160, so no
upsampling is learned). Two priors make it start close to a phase vocoder:
  - magnitude: the learned output is a log-magnitude correction to the mel
    filters' pseudo-inverse of the input (what Griffin-Lim starts from);
  - phase: the output is each bin's phase advance per hop, a correction of at
    most pi to the advance of a sinusoid at the bin's centre frequency, summed
    over frames, so a steady tone keeps a coherent phase.
The body is a stack of non-causal 1-D ConvNeXt blocks over time (depthwise
convolution, RMSNorm, GELU MLP), each starting as the identity. Trained with the
multi-resolution STFT loss (jav.audio.stft_loss) plus an optional L1 between the
output's log-mel and the input's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jav.audio import log_mel, stft_loss
from jav.audio.griffin_lim import inverse_filters
from jav.audio.mel_params import MelParams
from jav.audio.stft import istft
from jav.models.layers import Dense, RMSNorm, dtype_of, fan_in_normal, jit_init, param, zeros


def mel_params(cfg: ml_collections.ConfigDict) -> MelParams:
    return MelParams(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop=cfg.hop, n_mels=cfg.n_mels)


def validate_config(cfg: ml_collections.ConfigDict) -> None:
    if cfg.kernel % 2 == 0:
        raise ValueError(f"vocoder.kernel={cfg.kernel} is even; use an odd size so the convolution is centred")
    if cfg.n_fft % 2:
        raise ValueError(f"vocoder.n_fft={cfg.n_fft} is odd; centred STFT frames need an even n_fft")


class Conv1d(nnx.Module):
    """Centred 1-D convolution over time, [B, T, C_in] -> [B, T, C_out]; depthwise when in == out and groups == in."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        axes: tuple[str | None, str | None],
        *,
        rngs: nnx.Rngs,
        depthwise: bool = False,
        dtype: str = "float32",
        param_dtype: str = "float32",
    ):
        self.groups = in_channels if depthwise else 1
        fan_in = kernel * in_channels // self.groups
        self.kernel = param(rngs, fan_in_normal(fan_in), (kernel, in_channels // self.groups, out_channels), (None, *axes), dtype_of(param_dtype))
        self.bias = param(rngs, zeros, (out_channels,), (axes[1],), dtype_of(param_dtype))
        self.dtype = dtype_of(dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel.shape[0]
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            self.kernel[...].astype(self.dtype),
            window_strides=(1,),
            padding=((k // 2, k // 2),),
            dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=self.groups,
        )
        return y + self.bias[...].astype(self.dtype)


class Block(nnx.Module):
    """x + W2 gelu(W1 norm(depthwise_conv(x))); W2 starts at zero, so the block starts as the identity."""

    def __init__(self, channels: int, hidden: int, kernel: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.conv = Conv1d(channels, channels, kernel, (None, "embed"), depthwise=True, **kw)
        self.norm = RMSNorm(channels, "embed", rngs=rngs, param_dtype=param_dtype)
        self.up = Dense(channels, hidden, ("embed", "mlp"), **kw)
        self.down = Dense(hidden, channels, ("mlp", "embed"), init=zeros, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.down(jax.nn.gelu(self.up(self.norm(self.conv(x)))))


class Vocoder(nnx.Module):
    """Log-mel [B, Ta, n_mels] -> waveform [B, Ta * hop]; configs/vocoder.py lists the keys."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        validate_config(cfg)
        self.cfg = ml_collections.FrozenConfigDict(cfg)
        kw = dict(rngs=rngs, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        bins = cfg.n_fft // 2 + 1
        self.embed = Conv1d(cfg.n_mels, cfg.channels, cfg.kernel, (None, "embed"), **kw)
        self.blocks = nnx.List([Block(cfg.channels, cfg.hidden, cfg.kernel, **kw) for _ in range(cfg.blocks)])
        self.norm = RMSNorm(cfg.channels, "embed", rngs=rngs, param_dtype=cfg.param_dtype)
        self.head = Dense(cfg.channels, 2 * bins, ("embed", None), init=zeros, **kw)

    def spectrogram(self, logmel: jax.Array) -> jax.Array:
        """Complex STFT [B, Ta + 1, n_fft // 2 + 1] for log-mel [B, Ta, n_mels]; frame j centred at j * hop."""
        cfg, params = self.cfg, mel_params(self.cfg)
        if logmel.shape[-1] != cfg.n_mels:
            raise ValueError(f"log-mel has {logmel.shape[-1]} bins but vocoder.n_mels={cfg.n_mels}")
        # One more frame, a copy of the last, centred on the clip's end (as Griffin-Lim's inversion does).
        logmel = jnp.concatenate([logmel, logmel[:, -1:]], axis=1).astype(jnp.float32)  # [B, Ta + 1, n_mels]
        pinv, _ = inverse_filters(params)
        prior = jnp.maximum(jnp.einsum("btm,fm->btf", log_mel.logmel_to_power(logmel, params), pinv), 0)
        log_prior = 0.5 * jnp.log(prior + cfg.prior_floor)  # [B, Ta + 1, bins]

        x = self.embed(logmel)
        for block in self.blocks:
            x = block(x)
        log_gain, advance = jnp.split(self.head(jax.nn.silu(self.norm(x))).astype(jnp.float32), 2, axis=-1)
        magnitude = jnp.exp(jnp.minimum(log_prior + log_gain, cfg.max_log_magnitude))
        centre_advance = 2 * np.pi * np.arange(cfg.n_fft // 2 + 1) * cfg.hop / cfg.n_fft  # [bins]
        phase = jnp.cumsum(centre_advance + np.pi * jnp.tanh(advance), axis=1)
        return magnitude * jnp.exp(1j * phase)

    def __call__(self, logmel: jax.Array) -> jax.Array:
        spec = self.spectrogram(logmel)
        return istft(spec, self.cfg.n_fft, self.cfg.hop, logmel.shape[1] * self.cfg.hop)


def model_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The vocoder's keys: cfg itself, or cfg.model of an experiment config."""
    return cfg.model if "model" in cfg else cfg


def init_model(cfg: ml_collections.ConfigDict, key: jax.Array, out_shardings=None) -> Vocoder:
    """A Vocoder created by one jitted initialisation (cfg: its keys or an experiment with them in cfg.model)."""
    cfg = model_config(cfg)
    validate_config(cfg)
    return jit_init(Vocoder, cfg, key, out_shardings)


def vocode(model: Vocoder, logmel: jax.Array) -> jax.Array:
    """Waveform [B, Ta * hop] (or [Ta * hop] for one [Ta, n_mels] log-mel) float32, jitted."""
    single = logmel.ndim == 2
    wave = _vocode(model, jnp.asarray(logmel)[None] if single else jnp.asarray(logmel))
    return wave[0] if single else wave


@nnx.jit
def _vocode(model: Vocoder, logmel: jax.Array) -> jax.Array:
    return model(logmel)


def vocoder_loss(model: Vocoder, logmel: jax.Array, wave: jax.Array) -> tuple[jax.Array, dict]:
    """Multi-resolution STFT loss + mel_weight * L1 of the output's log-mel against the input, and the terms."""
    cfg = model.cfg
    length = logmel.shape[1] * cfg.hop
    if not 0 <= wave.shape[-1] - length < cfg.hop:
        raise ValueError(
            f"wave has {wave.shape[-1]} samples but {logmel.shape[1]} log-mel frames cover {length} (frames * hop {cfg.hop}); crop both to the same span"
        )
    wave = wave[..., :length]  # the log-mel drops a last partial hop
    output = model(logmel)
    loss, terms = stft_loss.multi_resolution_stft_loss(output, wave, tuple(map(tuple, cfg.resolutions)))
    terms["mel_l1"] = jnp.mean(jnp.abs(log_mel.waveform_to_logmel(output, mel_params(cfg)) - logmel))
    return loss + cfg.mel_weight * terms["mel_l1"], terms


def training_loss(model: Vocoder, batch: dict, key: jax.Array, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, dict]:
    """The autoencoder phase's loss on batch["logmel"] [B, Ta, n_mels] and batch["wave"] [B, Ta * hop]."""
    del key, cfg  # deterministic; the weights live in model.cfg
    missing = {"logmel", "wave"} - set(batch)
    if missing:
        raise ValueError(f"the vocoder trains on batch['logmel'] and batch['wave']; {sorted(missing)} missing from a batch with {sorted(batch)}")
    return vocoder_loss(model, batch["logmel"], batch["wave"])


def parameter_count(model: nnx.Module) -> int:
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def evaluate(model: Vocoder, batch: dict, cfg: ml_collections.ConfigDict) -> dict:
    """Held-out scores for the autoencoder phase: the training loss's terms."""
    return training_loss(model, batch, None, cfg)[1]
