"""LTX-2's vocoder (diffusers `LTX2Vocoder`, LTX-2.0): a mel spectrogram [B, C, T, M]
(C channels of M mel bins, stereo: C = 2) -> waveform [B, out_channels, T * prod(upsample_factors)].

A HiFi-GAN generator: a 7-tap convolution over the C * M mel features, then per stage a
leaky ReLU, a transposed convolution (upsample factor, channels halved) and the mean of
residual blocks of several kernel sizes (each three pairs of dilated / plain convolutions
with leaky ReLUs), a final leaky ReLU (slope 0.01, as the reference's), a 7-tap
convolution to the output channels and tanh. Weights keep PyTorch's layouts (Conv1d
[out, in, k], ConvTranspose1d [in, out, k]), so `jav.convert.ltx2_vocoder` copies them as
they are; the convolutions run channels-first through `jax.lax.conv_general_dilated`.
`act_fn="snake"` / `"snakebeta"` with `antialias` (LTX-2.3's generators) replace the leaky
ReLUs by snake activations run at twice the rate between Kaiser-windowed sinc resamplers
(whose filters the checkpoint carries); `LTX2VocoderWithBWE` (LTX-2.3) runs such a
vocoder, takes the causal log-mel of its 16 kHz waveform and adds a second generator's
output (bandwidth extension) to the waveform resampled to 48 kHz.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jav.models.autoencoders import init_imported, refuse_training

_DIMS = ("NCH", "OIH", "NCH")


def vocoder_config(
    in_channels=128,
    hidden_channels=1024,
    out_channels=2,
    upsample_kernel_sizes=(16, 15, 8, 4, 4),
    upsample_factors=(6, 5, 2, 2, 2),
    resnet_kernel_sizes=(3, 7, 11),
    resnet_dilations=((1, 3, 5),) * 3,
    leaky_relu_negative_slope=0.1,
    final_act_fn="tanh",
    final_bias=True,
    act_fn="leaky_relu",
    antialias=False,
    antialias_ratio=2,
    antialias_kernel_size=12,
    output_sampling_rate=24000,
) -> ml_collections.ConfigDict:
    """diffusers `LTX2Vocoder`'s arguments (its defaults: LTX-2.0's vocoder, 16 kHz mel at hop 160 -> 24 kHz stereo)."""
    return ml_collections.ConfigDict(
        dict(
            in_channels=in_channels,
            hidden_channels=hidden_channels,
            out_channels=out_channels,
            upsample_kernel_sizes=tuple(upsample_kernel_sizes),
            upsample_factors=tuple(upsample_factors),
            resnet_kernel_sizes=tuple(resnet_kernel_sizes),
            resnet_dilations=tuple(tuple(d) for d in resnet_dilations),
            leaky_relu_negative_slope=leaky_relu_negative_slope,
            final_act_fn=final_act_fn,
            final_bias=final_bias,
            act_fn=act_fn,
            antialias=antialias,
            antialias_ratio=antialias_ratio,
            antialias_kernel_size=antialias_kernel_size,
            output_sampling_rate=output_sampling_rate,
        )
    )


class Buffer(nnx.Variable):
    """A fixed tensor the checkpoint carries (resampling filters, STFT bases): loaded, never trained."""


def kaiser_sinc(cutoff: float, half_width: float, size: int) -> np.ndarray:
    """A Kaiser-windowed sinc low-pass filter of `size` taps (cutoff and half width in cycles per sample), summing to 1."""
    amplitude = 2.285 * (size // 2 - 1) * math.pi * 4 * half_width + 7.95
    beta = 0.1102 * (amplitude - 8.7) if amplitude > 50 else (0.5842 * (amplitude - 21) ** 0.4 + 0.07886 * (amplitude - 21) if amplitude >= 21 else 0.0)
    t = (np.arange(-(size // 2), size // 2) + 0.5) if size % 2 == 0 else np.arange(size) - size // 2
    t = 2 * cutoff * t.astype(np.float32)
    sinc = np.where(t == 0, 1.0, np.sin(math.pi * t) / math.pi / np.where(t == 0, 1.0, t))
    f = (2 * cutoff * np.kaiser(size, beta) * sinc).astype(np.float32)
    return f / f.sum()


def _depthwise(x, taps, stride=1, lhs_dilation=1, padding=(0, 0)):
    """Each channel of x [B, C, T] convolved with the same taps [k] (PyTorch's grouped conv with an expanded filter)."""
    c = x.shape[1]
    w = jnp.broadcast_to(taps.astype(x.dtype)[None, None, :], (c, 1, taps.shape[0]))
    return jax.lax.conv_general_dilated(x, w, (stride,), [padding], lhs_dilation=(lhs_dilation,), dimension_numbers=_DIMS, feature_group_count=c)


class UpSample(nnx.Module):
    """x ratio in time: replicate-padded, zero-stuffed, low-passed (Kaiser sinc, or Hann sinc for the BWE's resampler)."""

    def __init__(self, ratio: int = 2, kernel_size: int | None = None, window: str = "kaiser"):
        self.ratio = ratio
        if window == "hann":
            rolloff, width_zeros = 0.99, 6
            width = math.ceil(width_zeros / rolloff)
            size = 2 * width * ratio + 1
            self.pad, self.pad_left, self.pad_right = width, 2 * width * ratio, size - ratio
            t = (np.arange(size, dtype=np.float32) / ratio - width) * rolloff
            window_ = np.cos(np.clip(t, -width_zeros, width_zeros) * math.pi / width_zeros / 2) ** 2
            taps = (np.sinc(t) * window_ * rolloff / ratio).astype(np.float32)
            self.filter = None  # not in the checkpoint (the reference keeps it out): made here
            self.fixed = tuple(float(v) for v in taps)
        else:
            size = kernel_size or int(6 * ratio // 2) * 2
            self.pad = size // ratio - 1
            self.pad_left = self.pad * ratio + (size - ratio) // 2
            self.pad_right = self.pad * ratio + (size - ratio + 1) // 2
            self.filter = Buffer(jnp.asarray(kaiser_sinc(0.5 / ratio, 0.6 / ratio, size)).reshape(1, 1, size))
            self.fixed = None

    def __call__(self, x):
        taps = jnp.asarray(self.fixed, jnp.float32) if self.filter is None else self.filter[...].reshape(-1)
        k = taps.shape[0]
        x = jnp.pad(x, ((0, 0), (0, 0), (self.pad, self.pad)), mode="edge")
        # PyTorch's conv_transpose1d(stride=ratio) is a convolution of the zero-stuffed signal with the reversed taps
        y = self.ratio * _depthwise(x, jnp.flip(taps), lhs_dilation=self.ratio, padding=(k - 1, k - 1))
        return y[..., self.pad_left : y.shape[-1] - self.pad_right]


class DownSample(nnx.Module):
    def __init__(self, ratio: int = 2, kernel_size: int | None = None):
        size = kernel_size or int(6 * ratio // 2) * 2
        self.ratio, self.pad_left, self.pad_right = ratio, size // 2 + size % 2 - 1, size // 2
        self.filter = Buffer(jnp.asarray(kaiser_sinc(0.5 / ratio, 0.6 / ratio, size)).reshape(1, 1, size))

    def __call__(self, x):
        x = jnp.pad(x, ((0, 0), (0, 0), (self.pad_left, self.pad_right)), mode="edge")
        return _depthwise(x, self.filter[...].reshape(-1), stride=self.ratio)


class Snake(nnx.Module):
    """x + sin(alpha x)^2 / beta per channel, alpha and beta stored as logs (beta = alpha without `use_beta`)."""

    def __init__(self, channels: int, use_beta: bool = True):
        self.alpha = nnx.Param(jnp.zeros((channels,)))
        self.beta = nnx.Param(jnp.zeros((channels,))) if use_beta else None

    def __call__(self, x):
        alpha = jnp.exp(self.alpha[...]).astype(x.dtype)[None, :, None]
        amp = alpha if self.beta is None else jnp.exp(self.beta[...]).astype(x.dtype)[None, :, None]
        return x + (1.0 / (amp + 1e-9)) * jnp.sin(x * alpha) ** 2


class AntiAlias(nnx.Module):
    """An activation at `ratio` times the rate: up-sample, activation (`act`), down-sample."""

    def __init__(self, act, ratio: int, kernel_size: int):
        self.upsample, self.act, self.downsample = UpSample(ratio, kernel_size), act, DownSample(ratio, kernel_size)

    def __call__(self, x):
        return self.downsample(self.act(self.upsample(x)))


def _activation(cfg, channels: int):
    """A residual block's activation: leaky ReLU (None: applied inline) or a snake, anti-aliased when cfg.antialias."""
    if cfg.act_fn == "leaky_relu":
        if cfg.antialias:
            raise ValueError("antialias with act_fn='leaky_relu' is not expressed in jav; use 'snake' or 'snakebeta'")
        return None
    act = Snake(channels, use_beta=cfg.act_fn == "snakebeta")
    return AntiAlias(act, cfg.antialias_ratio, cfg.antialias_kernel_size) if cfg.antialias else act


def _uniform(rngs, shape, fan_in):
    bound = 1.0 / math.sqrt(fan_in)
    return nnx.Param(jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound))


class Conv(nnx.Module):
    """torch.nn.Conv1d: weight [out, in, k], bias [out]; `padding` (left, right) or "same"."""

    def __init__(self, c_in: int, c_out: int, k: int, *, rngs: nnx.Rngs, dilation: int = 1, padding="same", bias: bool = True):
        self.weight = _uniform(rngs, (c_out, c_in, k), c_in * k)
        self.bias = _uniform(rngs, (c_out,), c_in * k) if bias else None
        total = dilation * (k - 1)
        self.padding = (total // 2, total - total // 2) if padding == "same" else tuple(padding)
        self.dilation = dilation

    def __call__(self, x):
        y = jax.lax.conv_general_dilated(x, self.weight[...].astype(x.dtype), (1,), [self.padding], rhs_dilation=(self.dilation,), dimension_numbers=_DIMS)
        return y if self.bias is None else y + self.bias[...].astype(x.dtype)[None, :, None]


class ConvTranspose(nnx.Module):
    """torch.nn.ConvTranspose1d: weight [in, out, k], bias [out], stride s, padding p."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, *, rngs: nnx.Rngs):
        self.weight = _uniform(rngs, (c_in, c_out, k), c_out * k)
        self.bias = _uniform(rngs, (c_out,), c_out * k)
        self.k, self.stride, self.pad = k, stride, padding

    def __call__(self, x):
        w = jnp.flip(self.weight[...].astype(x.dtype), axis=-1).transpose(1, 0, 2)  # as a convolution: [out, in, k], taps reversed
        edge = self.k - 1 - self.pad
        y = jax.lax.conv_general_dilated(x, w, (1,), [(edge, edge)], lhs_dilation=(self.stride,), dimension_numbers=_DIMS)
        return y + self.bias[...].astype(x.dtype)[None, :, None]


class ResBlock(nnx.Module):
    def __init__(self, channels: int, k: int, dilations, cfg, *, rngs: nnx.Rngs):
        self.convs1 = nnx.List([Conv(channels, channels, k, dilation=d, rngs=rngs) for d in dilations])
        self.convs2 = nnx.List([Conv(channels, channels, k, rngs=rngs) for _ in dilations])
        acts = [_activation(cfg, channels) for _ in range(2 * len(dilations))]
        self.acts1 = nnx.List(acts[: len(dilations)]) if acts[0] is not None else None
        self.acts2 = nnx.List(acts[len(dilations) :]) if acts[0] is not None else None
        self.slope = cfg.leaky_relu_negative_slope

    def __call__(self, x):
        for n, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            act1 = self.acts1[n] if self.acts1 is not None else (lambda h: jax.nn.leaky_relu(h, self.slope))
            act2 = self.acts2[n] if self.acts2 is not None else (lambda h: jax.nn.leaky_relu(h, self.slope))
            x = x + c2(act2(c1(act1(x))))
        return x


class LTX2Vocoder(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        if len(cfg.upsample_kernel_sizes) != len(cfg.upsample_factors) or len(cfg.resnet_kernel_sizes) != len(cfg.resnet_dilations):
            raise ValueError("the vocoder's upsample kernel sizes and factors, and its resnet kernel sizes and dilations, must pair up")
        if cfg.final_act_fn not in ("tanh", "clamp", None):
            raise ValueError(f"final_act_fn={cfg.final_act_fn!r}: tanh, clamp or None")
        if cfg.act_fn not in ("leaky_relu", "snake", "snakebeta"):
            raise ValueError(f"act_fn={cfg.act_fn!r}: leaky_relu, snake or snakebeta")
        self.cfg = ml_collections.FrozenConfigDict(cfg)
        self.conv_in = Conv(cfg.in_channels, cfg.hidden_channels, 7, padding=(3, 3), rngs=rngs)
        ups, res, c = [], [], cfg.hidden_channels
        for stride, k in zip(cfg.upsample_factors, cfg.upsample_kernel_sizes):
            ups.append(ConvTranspose(c, c // 2, k, stride, (k - stride) // 2, rngs=rngs))
            c //= 2
            res += [ResBlock(c, rk, d, cfg, rngs=rngs) for rk, d in zip(cfg.resnet_kernel_sizes, cfg.resnet_dilations)]
        self.upsamplers, self.resnets = nnx.List(ups), nnx.List(res)
        # the snakes' last activation is always anti-aliased (and always with beta), as the reference's
        self.act_out = None if cfg.act_fn == "leaky_relu" else AntiAlias(Snake(c), cfg.antialias_ratio, cfg.antialias_kernel_size)
        self.conv_out = Conv(c, cfg.out_channels, 7, padding=(3, 3), bias=cfg.final_bias, rngs=rngs)

    def __call__(self, mel: jax.Array, time_last: bool = False) -> jax.Array:
        """mel [B, C, T, M] ([B, C, M, T] with time_last) -> waveform [B, out_channels, T * hop]."""
        cfg = self.cfg
        if not time_last:
            mel = jnp.swapaxes(mel, 2, 3)
        x = self.conv_in(mel.reshape(mel.shape[0], -1, mel.shape[-1]))
        per = len(cfg.resnet_kernel_sizes)
        for i, up in enumerate(self.upsamplers):
            x = up(jax.nn.leaky_relu(x, cfg.leaky_relu_negative_slope) if cfg.act_fn == "leaky_relu" else x)
            x = sum(self.resnets[i * per + j](x) for j in range(per)) / per
        # the reference's final LeakyReLU keeps torch's default slope, 0.01
        x = self.conv_out(jax.nn.leaky_relu(x, 0.01) if self.act_out is None else self.act_out(x))
        if cfg.final_act_fn == "tanh":
            return jnp.tanh(x)
        return jnp.clip(x, -1, 1) if cfg.final_act_fn == "clamp" else x


def bwe_config(
    vocoder: ml_collections.ConfigDict,
    bwe: ml_collections.ConfigDict,
    filter_length=512,
    hop_length=80,
    window_length=512,
    num_mel_channels=64,
    input_sampling_rate=16000,
    output_sampling_rate=48000,
) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            vocoder=vocoder.to_dict(),
            bwe=bwe.to_dict(),
            filter_length=filter_length,
            hop_length=hop_length,
            window_length=window_length,
            num_mel_channels=num_mel_channels,
            input_sampling_rate=input_sampling_rate,
            output_sampling_rate=output_sampling_rate,
        )
    )


class CausalSTFT(nnx.Module):
    def __init__(self, filter_length: int, hop_length: int, window_length: int):
        n = filter_length // 2 + 1
        self.forward_basis = Buffer(jnp.zeros((2 * n, 1, filter_length)))
        self.inverse_basis = Buffer(jnp.zeros((2 * n, 1, filter_length)))  # carried by the checkpoint, unused here
        self.hop, self.left = hop_length, max(0, window_length - hop_length)

    def magnitude(self, wave):
        """[N, S] -> |STFT| [N, freqs, frames] (left-padded: frame f ends at sample f * hop)."""
        x = jnp.pad(wave[:, None, :], ((0, 0), (0, 0), (self.left, 0)))
        spec = jax.lax.conv_general_dilated(x, self.forward_basis[...].astype(x.dtype), (self.hop,), [(0, 0)], dimension_numbers=_DIMS)
        real, imag = jnp.split(spec, 2, axis=1)
        return jnp.sqrt(real**2 + imag**2)


class MelSTFT(nnx.Module):
    def __init__(self, filter_length: int, hop_length: int, window_length: int, mels: int):
        self.stft_fn = CausalSTFT(filter_length, hop_length, window_length)
        self.mel_basis = Buffer(jnp.zeros((mels, filter_length // 2 + 1)))

    def __call__(self, wave):
        mel = jnp.einsum("mf,nft->nmt", self.mel_basis[...].astype(wave.dtype), self.stft_fn.magnitude(wave))
        return jnp.log(jnp.maximum(mel, 1e-5))


class LTX2VocoderWithBWE(nnx.Module):
    """LTX-2.3's vocoder: `vocoder` (mel -> 16 kHz), its causal log-mel, `bwe_generator` (that
    mel -> the missing band) added to the 16 kHz waveform resampled to 48 kHz, clipped to [-1, 1]."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.cfg = ml_collections.FrozenConfigDict(cfg)
        self.vocoder = LTX2Vocoder(ml_collections.ConfigDict(cfg.vocoder), rngs=rngs)
        self.bwe_generator = LTX2Vocoder(ml_collections.ConfigDict(cfg.bwe), rngs=rngs)
        self.mel_stft = MelSTFT(cfg.filter_length, cfg.hop_length, cfg.window_length, cfg.num_mel_channels)
        self.resampler = UpSample(cfg.output_sampling_rate // cfg.input_sampling_rate, window="hann")

    def __call__(self, mel: jax.Array) -> jax.Array:
        cfg = self.cfg
        x = self.vocoder(mel)
        b, c, n = x.shape
        if n % cfg.hop_length:  # the reference pads here too (its own attribute error aside)
            x = jnp.pad(x, ((0, 0), (0, 0), (0, cfg.hop_length - n % cfg.hop_length)))
        bwe_mel = self.mel_stft(x.reshape(b * c, -1))
        bwe_mel = bwe_mel.reshape(b, c, *bwe_mel.shape[1:])
        wave = jnp.clip(self.bwe_generator(jnp.swapaxes(bwe_mel, 2, 3)) + self.resampler(x), -1, 1)
        return wave[..., : n * cfg.output_sampling_rate // cfg.input_sampling_rate]


# ---- model.kind "ltx2_vocoder" (jav.models.autoencoders.LOAD_ONLY): a run `python -m jav.convert ltx2-vocoder` writes


def init_model(model_cfg: ml_collections.ConfigDict, key: jax.Array, out_shardings=None) -> LTX2Vocoder | LTX2VocoderWithBWE:
    """The vocoder of such a run's `model_cfg`, its weights zeros until jav.runs.load_autoencoder restores them."""
    return init_imported(LTX2VocoderWithBWE if "bwe" in model_cfg.config else LTX2Vocoder, model_cfg, key, out_shardings)


training_loss = refuse_training("ltx2_vocoder")
