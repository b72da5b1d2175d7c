"""LTX-2's vocoder (diffusers `LTX2Vocoder`, LTX-2.0): a mel spectrogram [B, C, T, M]
(C channels of M mel bins, stereo: C = 2) -> waveform [B, out_channels, T * prod(upsample_factors)].

A HiFi-GAN generator: a 7-tap convolution over the C * M mel features, then per stage a
leaky ReLU, a transposed convolution (upsample factor, channels halved) and the mean of
residual blocks of several kernel sizes (each three pairs of dilated / plain convolutions
with leaky ReLUs), a final leaky ReLU (slope 0.01, as the reference's), a 7-tap
convolution to the output channels and tanh. Weights keep PyTorch's layouts (Conv1d
[out, in, k], ConvTranspose1d [in, out, k]), so `jav.convert.ltx2_vocoder` copies them as
they are; the convolutions run channels-first through `jax.lax.conv_general_dilated`.
The snake activations and anti-aliased resampling of the LTX-2.3 vocoder are not here.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

_DIMS = ("NCH", "OIH", "NCH")


def vocoder_config(in_channels=128, hidden_channels=1024, out_channels=2, upsample_kernel_sizes=(16, 15, 8, 4, 4),
                   upsample_factors=(6, 5, 2, 2, 2), resnet_kernel_sizes=(3, 7, 11), resnet_dilations=((1, 3, 5),) * 3,
                   leaky_relu_negative_slope=0.1, final_act_fn="tanh", final_bias=True,
                   output_sampling_rate=24000) -> ml_collections.ConfigDict:
    """diffusers `LTX2Vocoder`'s arguments (its defaults: LTX-2.0's vocoder, 16 kHz mel at hop 160 -> 24 kHz stereo)."""
    return ml_collections.ConfigDict(dict(
        in_channels=in_channels, hidden_channels=hidden_channels, out_channels=out_channels,
        upsample_kernel_sizes=tuple(upsample_kernel_sizes), upsample_factors=tuple(upsample_factors),
        resnet_kernel_sizes=tuple(resnet_kernel_sizes), resnet_dilations=tuple(tuple(d) for d in resnet_dilations),
        leaky_relu_negative_slope=leaky_relu_negative_slope, final_act_fn=final_act_fn, final_bias=final_bias,
        output_sampling_rate=output_sampling_rate))


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
        y = jax.lax.conv_general_dilated(x, self.weight[...].astype(x.dtype), (1,), [self.padding], rhs_dilation=(self.dilation,),
                                         dimension_numbers=_DIMS)
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
    def __init__(self, channels: int, k: int, dilations, slope: float, *, rngs: nnx.Rngs):
        self.convs1 = nnx.List([Conv(channels, channels, k, dilation=d, rngs=rngs) for d in dilations])
        self.convs2 = nnx.List([Conv(channels, channels, k, rngs=rngs) for _ in dilations])
        self.slope = slope

    def __call__(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(jax.nn.leaky_relu(c1(jax.nn.leaky_relu(x, self.slope)), self.slope))
        return x


class LTX2Vocoder(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        if len(cfg.upsample_kernel_sizes) != len(cfg.upsample_factors) or len(cfg.resnet_kernel_sizes) != len(cfg.resnet_dilations):
            raise ValueError("the vocoder's upsample kernel sizes and factors, and its resnet kernel sizes and dilations, must pair up")
        if cfg.final_act_fn not in ("tanh", "clamp", None):
            raise ValueError(f"final_act_fn={cfg.final_act_fn!r}: tanh, clamp or None")
        self.cfg = ml_collections.FrozenConfigDict(cfg)
        self.conv_in = Conv(cfg.in_channels, cfg.hidden_channels, 7, padding=(3, 3), rngs=rngs)
        ups, res, c = [], [], cfg.hidden_channels
        for stride, k in zip(cfg.upsample_factors, cfg.upsample_kernel_sizes):
            ups.append(ConvTranspose(c, c // 2, k, stride, (k - stride) // 2, rngs=rngs))
            c //= 2
            res += [ResBlock(c, rk, d, cfg.leaky_relu_negative_slope, rngs=rngs) for rk, d in zip(cfg.resnet_kernel_sizes, cfg.resnet_dilations)]
        self.upsamplers, self.resnets = nnx.List(ups), nnx.List(res)
        self.conv_out = Conv(c, cfg.out_channels, 7, padding=(3, 3), bias=cfg.final_bias, rngs=rngs)

    def __call__(self, mel: jax.Array, time_last: bool = False) -> jax.Array:
        """mel [B, C, T, M] ([B, C, M, T] with time_last) -> waveform [B, out_channels, T * hop]."""
        cfg = self.cfg
        if not time_last:
            mel = jnp.swapaxes(mel, 2, 3)
        x = self.conv_in(mel.reshape(mel.shape[0], -1, mel.shape[-1]))
        per = len(cfg.resnet_kernel_sizes)
        for i, up in enumerate(self.upsamplers):
            x = up(jax.nn.leaky_relu(x, cfg.leaky_relu_negative_slope))
            x = sum(self.resnets[i * per + j](x) for j in range(per)) / per
        x = self.conv_out(jax.nn.leaky_relu(x, 0.01))  # the reference's final LeakyReLU keeps torch's default slope
        if cfg.final_act_fn == "tanh":
            return jnp.tanh(x)
        return jnp.clip(x, -1, 1) if cfg.final_act_fn == "clamp" else x
