"""Wan's video VAE (diffusers `AutoencoderKLWan`): a video [B, 3, F, H, W] in [-1, 1] <->
latents [B, z_dim, 1 + (F - 1) / 4, H / 8, W / 8] (Wan 2.1's defaults: z_dim 16, 8x in
space, 4x in time, the first frame kept on its own, so F = 1 + 4k). Decoding gives
4 (f - 1) + 1 frames from f latent frames, clamped to [-1, 1]. Wan 2.2's variant
(`is_residual`, `patch_size` 2: 2x2 patches folded into 12 channels first, z_dim 48, 16x in
space) is the same network with residual down and up blocks.

A 3-D convolutional VAE, channels first (PyTorch's NCTHW). Causal 3x3x3 convolutions
(two zero frames before the clip, one zero pixel around each frame), Wan's RMS norm (each
pixel's channel vector scaled to length sqrt(C), times a per-channel gain), SiLU residual
blocks, and per level but the last a resampler: spatial (zero-padded right and bottom,
a stride-2 3x3 convolution per frame; nearest 2x and a 3x3 convolution per frame going
up) and on the temporal levels also in time. The time downsampler keeps the first frame
and runs a stride-2 3-frame convolution, unpadded, over the whole clip (first frame
included) for the rest, so 1 + 2k frames give 1 + k. The time upsampler keeps the first
frame and turns each later frame into two: a causal 3-frame convolution over the frames
after the first (zero-padded: the first frame is none of its inputs) to twice the
channels, split into two frames in order. The middle blocks hold a residual block, a
single-head attention over each frame's pixels, another residual block. The encoder gives 2 z_dim channels through `quant_conv` (1x1x1): the posterior's
mean and log-variance; the decoder starts with `post_quant_conv`. Wan 2.2's residual levels
add to each block's output its input folded into channels and averaged in groups (down;
on temporal levels after a zero frame put before the clip) or its channels repeated and
unfolded (up; on temporal levels the first frame's first copy dropped).

diffusers encodes the first frame, then chunks of 4, and decodes frame by frame, carrying
the last two frames into every causal convolution of the next chunk; on a 1 + 4k-frame
clip that is exactly whole-clip causal convolution with zero padding and the first-frame
rules above, which is what jav runs (tests/test_wan_video_vae.py checks it against
diffusers' chunked code on 1 to 13 frames). No spatial tiling and no frame-wise decoding:
memory grows with the clip.

Weights keep PyTorch's names and layouts (Conv3d [out, in, kt, kh, kw], Conv2d
[out, in, kh, kw], norm gains [C, 1, 1(, 1)]); diffusers' `resample.1` (the convolution
after a padding or upsampling layer in an nn.Sequential) is jav's `resample`
(`jav.convert.wan_video_vae`). `latents_mean` and `latents_std` are the per-channel
statistics of config.json, which Wan's pipelines normalise latents with
(`normalize_latents`, `denormalize_latents`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jav.models.autoencoders import init_imported, refuse_training

_DIMS = ("NCDHW", "OIDHW", "NCDHW")
CHUNK = 4  # frames per chunk after the first in diffusers' encoder: clips have 1 + 4k frames
# Wan 2.1's latent statistics (diffusers' defaults)
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


def video_vae_config(
    base_dim=96,
    decoder_base_dim=None,
    z_dim=16,
    dim_mult=(1, 2, 4, 4),
    num_res_blocks=2,
    attn_scales=(),
    temperal_downsample=(False, True, True),
    dropout=0.0,
    latents_mean=WAN21_LATENTS_MEAN,
    latents_std=WAN21_LATENTS_STD,
    is_residual=False,
    in_channels=3,
    out_channels=3,
    patch_size=None,
    scale_factor_temporal=4,
    scale_factor_spatial=8,
) -> ml_collections.ConfigDict:
    """diffusers `AutoencoderKLWan`'s arguments under its names (`temperal_downsample`
    included; its defaults: Wan 2.1's VAE). `decoder_base_dim` None: `base_dim`; `patch_size`
    None: 1. `temperal_downsample` has one entry per level but the last, in encoding order
    (the decoder upsamples in time where the encoder downsampled). `dropout` and the scale
    factors are kept as given (jav's model, for inference, does not use them)."""
    cfg = ml_collections.ConfigDict(
        dict(
            base_dim=base_dim,
            decoder_base_dim=base_dim if decoder_base_dim is None else decoder_base_dim,
            z_dim=z_dim,
            dim_mult=tuple(dim_mult),
            num_res_blocks=num_res_blocks,
            attn_scales=tuple(attn_scales),
            temperal_downsample=tuple(bool(t) for t in temperal_downsample),
            dropout=dropout,
            latents_mean=tuple(float(v) for v in latents_mean),
            latents_std=tuple(float(v) for v in latents_std),
            is_residual=is_residual,
            in_channels=in_channels,
            out_channels=out_channels,
            patch_size=1 if patch_size is None else patch_size,
            scale_factor_temporal=scale_factor_temporal,
            scale_factor_spatial=scale_factor_spatial,
        )
    )
    if cfg.attn_scales:
        raise ValueError(
            f"attn_scales={list(cfg.attn_scales)}: diffusers puts attention blocks into the encoder's levels for them, "
            "but its encoder cannot run them (WanAttentionBlock takes no feature cache) and its decoder has none; use []"
        )
    if len(cfg.temperal_downsample) != len(cfg.dim_mult) - 1:
        raise ValueError(
            f"temperal_downsample={list(cfg.temperal_downsample)}: one entry per level but the last ({len(cfg.dim_mult) - 1} for dim_mult={list(cfg.dim_mult)})"
        )
    if sum(cfg.temperal_downsample) > 2:
        raise ValueError(
            f"temperal_downsample={list(cfg.temperal_downsample)}: at most 2 temporal levels "
            f"(diffusers encodes chunks of {CHUNK} frames, which a third stride-2 level would leave 1 frame of)"
        )
    for key in ("latents_mean", "latents_std"):
        if len(cfg[key]) != z_dim:
            raise ValueError(f"{key} has {len(cfg[key])} entries: one per latent channel, z_dim={z_dim}")
    return cfg


def normalize_latents(latents: jax.Array, mean, std) -> jax.Array:
    """The VAE's latents [B, C, ...] -> the diffusion model's: (latents - mean) / std per channel."""
    shape = (1, -1) + (1,) * (latents.ndim - 2)
    return (latents - jnp.asarray(mean, latents.dtype).reshape(shape)) / jnp.asarray(std, latents.dtype).reshape(shape)


def denormalize_latents(latents: jax.Array, mean, std) -> jax.Array:
    """`normalize_latents`' inverse: latents * std + mean per channel."""
    shape = (1, -1) + (1,) * (latents.ndim - 2)
    return latents * jnp.asarray(std, latents.dtype).reshape(shape) + jnp.asarray(mean, latents.dtype).reshape(shape)


def sample_posterior(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """A draw from the posterior: mean + exp(logvar / 2) * N(0, 1), the noise drawn in float32."""
    noise = jax.random.normal(key, mean.shape, jnp.float32).astype(mean.dtype)
    return mean + jnp.exp(0.5 * logvar) * noise


def _uniform(rngs, shape, fan_in):
    bound = 1.0 / math.sqrt(fan_in)
    return nnx.Param(jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound))


def _silu(x):
    """SiLU in float32, rounded once to x's dtype (as PyTorch's kernels compute it in bfloat16)."""
    return jax.nn.silu(x.astype(jnp.float32)).astype(x.dtype)


def _conv(x, weight, bias, stride):
    """x [B, C, T, H, W] (padded already) through weight [out, in, kt, kh, kw], accumulated in
    float32 and rounded once to x's dtype (as PyTorch's CPU and GPU kernels do in bfloat16)."""
    y = jax.lax.conv_general_dilated(x, weight.astype(x.dtype), stride, "VALID", dimension_numbers=_DIMS, preferred_element_type=jnp.float32)
    return (y + bias.astype(jnp.float32)[None, :, None, None, None]).astype(x.dtype)


class CausalConv3d(nnx.Module):
    """torch.nn.Conv3d, weight [out, in, kt, kh, kw], bias [out]. `padded`: kt - 1 zero frames
    before the clip (none after: causal) and (kh - 1) / 2, (kw - 1) / 2 zero pixels each side;
    otherwise none (the time downsampler's stride-2 convolution)."""

    def __init__(self, c_in: int, c_out: int, kernel=(3, 3, 3), *, rngs: nnx.Rngs, stride=(1, 1, 1), padded: bool = True):
        fan_in = c_in * math.prod(kernel)
        self.weight, self.bias = _uniform(rngs, (c_out, c_in, *kernel), fan_in), _uniform(rngs, (c_out,), fan_in)
        self.stride, self.padded = tuple(stride), padded

    def __call__(self, x):
        kt, kh, kw = self.weight.shape[2:]
        if self.padded:
            x = jnp.pad(x, ((0, 0), (0, 0), (kt - 1, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
        return _conv(x, self.weight[...], self.bias[...], self.stride)


class Conv2d(nnx.Module):
    """torch.nn.Conv2d, weight [out, in, kh, kw], bias [out], unpadded, run on every frame of [B, C, T, H, W]."""

    def __init__(self, c_in: int, c_out: int, k: int, *, rngs: nnx.Rngs, stride: int = 1):
        self.weight, self.bias = _uniform(rngs, (c_out, c_in, k, k), c_in * k * k), _uniform(rngs, (c_out,), c_in * k * k)
        self.stride = stride

    def __call__(self, x):
        return _conv(x, self.weight[...][:, :, None], self.bias[...], (1, self.stride, self.stride))


class RMSNorm(nnx.Module):
    """Wan's RMS norm over the channels (axis 1) of [B, C, T, H, W]: x / |x| * sqrt(C) * gamma,
    |x| the channel vector's length (at least 1e-12). The division in float32, rounded to x's
    dtype, then each product rounded (as diffusers computes it in bfloat16). `gamma` [C, 1, 1, 1]
    (images: [C, 1, 1], the attention block's, which diffusers applies to single frames)."""

    def __init__(self, channels: int, images: bool = False):
        self.gamma = nnx.Param(jnp.ones((channels, 1, 1) if images else (channels, 1, 1, 1)))

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        length = jnp.sqrt(jnp.sum(x32 * x32, axis=1, keepdims=True))
        unit = (x32 / jnp.maximum(length, 1e-12)).astype(x.dtype)
        return (unit * math.sqrt(x.shape[1])).astype(x.dtype) * self.gamma[...].reshape(-1, 1, 1, 1).astype(x.dtype)


class ResidualBlock(nnx.Module):
    """norm, SiLU, conv, norm, SiLU, conv, plus the input (through a 1x1x1 convolution where the channels change)."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        self.norm1, self.conv1 = RMSNorm(c_in), CausalConv3d(c_in, c_out, rngs=rngs)
        self.norm2, self.conv2 = RMSNorm(c_out), CausalConv3d(c_out, c_out, rngs=rngs)
        self.conv_shortcut = CausalConv3d(c_in, c_out, (1, 1, 1), rngs=rngs) if c_in != c_out else None

    def __call__(self, x):
        h = self.conv2(_silu(self.norm2(self.conv1(_silu(self.norm1(x))))))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class AttentionBlock(nnx.Module):
    """One-head self-attention among each frame's pixels (no attention across frames): norm,
    1x1 convolutions to q, k, v (channels in that order), softmax(q k^T / sqrt(C)) v, a 1x1
    projection, plus the input."""

    def __init__(self, c: int, *, rngs: nnx.Rngs):
        self.norm = RMSNorm(c, images=True)
        self.to_qkv, self.proj = Conv2d(c, 3 * c, 1, rngs=rngs), Conv2d(c, c, 1, rngs=rngs)

    def __call__(self, x):
        b, c, t, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b, 3, c, t, h * w).transpose(1, 0, 3, 4, 2)  # [3, B, T, HW, C]
        scores = jnp.einsum("btqc,btkc->btqk", qkv[0], qkv[1], preferred_element_type=jnp.float32) * (1.0 / math.sqrt(c))
        # rounded as PyTorch's flash kernels round: the unnormalised weights to x's dtype for
        # the product with v, the float32 sum of the unrounded ones divided out at the end
        weights = jnp.exp(scores - scores.max(axis=-1, keepdims=True))
        out = jnp.einsum("btqk,btkc->btqc", weights.astype(x.dtype), qkv[2], preferred_element_type=jnp.float32)
        out = (out / weights.sum(axis=-1, keepdims=True)).astype(x.dtype)
        return self.proj(out.transpose(0, 3, 1, 2).reshape(b, c, t, h, w)) + x


class Resample(nnx.Module):
    """A level's resampler on [B, C, T, H, W], `mode` as diffusers names it. 'downsample2d':
    each frame zero-padded by a pixel right and below, a stride-2 3x3 convolution (H, W -> H / 2,
    W / 2); 'downsample3d': that, then the first frame kept and a stride-2 3-frame convolution
    over the clip for the rest (T -> (T + 1) / 2). 'upsample2d': each frame nearest 2x, a 3x3
    convolution to c_out channels; 'upsample3d': first the first frame kept and each later one
    made two by a causal 3-frame convolution to 2C channels (T -> 2T - 1)."""

    def __init__(self, c: int, mode: str, *, rngs: nnx.Rngs, c_out: int | None = None):
        self.mode = mode
        if mode.startswith("up"):
            self.resample = Conv2d(c, c_out, 3, rngs=rngs)
        else:
            self.resample = Conv2d(c, c, 3, stride=2, rngs=rngs)
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(c, 2 * c, (3, 1, 1), rngs=rngs)
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(c, c, (3, 1, 1), stride=(2, 1, 1), padded=False, rngs=rngs)
        else:
            self.time_conv = None

    def __call__(self, x):
        b, c, t, h, w = x.shape
        if self.mode == "upsample3d" and t > 1:
            pairs = self.time_conv(x[:, :, 1:]).reshape(b, 2, c, t - 1, h, w)
            x = jnp.concatenate([x[:, :, :1], pairs.transpose(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * (t - 1), h, w)], axis=2)
        if self.mode.startswith("up"):
            x = jnp.repeat(jnp.repeat(x, 2, axis=3), 2, axis=4)
            return self.resample(jnp.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1))))
        x = self.resample(jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, 1), (0, 1))))
        if self.mode == "downsample3d" and t > 1:
            x = jnp.concatenate([x[:, :, :1], self.time_conv(x)], axis=2)
        return x


def _fold_average(x, c_out: int, ft: int, fs: int):
    """Wan 2.2's down shortcut: [B, C, T, H, W] -> [B, c_out, ceil(T / ft), H / fs, W / fs]; zero
    frames before the clip up to a multiple of ft, ft x fs x fs blocks folded into channels
    (ordered c, t, h, w) and averaged in groups of C ft fs^2 / c_out channels (in float32)."""
    b, c, t, h, w = x.shape
    x = jnp.pad(x, ((0, 0), (0, 0), (-t % ft, 0), (0, 0), (0, 0)))
    t = x.shape[2] // ft
    x = x.reshape(b, c, t, ft, h // fs, fs, w // fs, fs).transpose(0, 1, 3, 5, 7, 2, 4, 6)
    x = x.reshape(b, c_out, c * ft * fs * fs // c_out, t, h // fs, w // fs)
    return x.astype(jnp.float32).mean(axis=2).astype(x.dtype)


def _repeat_unfold(x, c_out: int, ft: int, fs: int):
    """Wan 2.2's up shortcut: [B, C, T, H, W] -> [B, c_out, ft T - (ft - 1), fs H, fs W]: each
    channel repeated c_out ft fs^2 / C times in place, the channels unfolded into ft x fs x fs
    blocks (ordered c, t, h, w), the first ft - 1 frames dropped."""
    b, c, t, h, w = x.shape
    x = jnp.repeat(x, c_out * ft * fs * fs // c, axis=1).reshape(b, c_out, ft, fs, fs, t, h, w)
    x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c_out, t * ft, h * fs, w * fs)
    return x[:, :, ft - 1 :]


class MidBlock(nnx.Module):
    """Residual block, attention, residual block, at c channels."""

    def __init__(self, c: int, *, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResidualBlock(c, c, rngs=rngs) for _ in range(2)])
        self.attentions = nnx.List([AttentionBlock(c, rngs=rngs)])

    def __call__(self, x):
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class ResidualDownBlock(nnx.Module):
    """Wan 2.2's encoder level: residual blocks c_in -> c_out and a resampler (`mode`, or None),
    plus the input folded and averaged (`_fold_average`) to the output's shape."""

    def __init__(self, c_in: int, c_out: int, layers: int, mode: str | None, *, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResidualBlock(c_in if i == 0 else c_out, c_out, rngs=rngs) for i in range(layers)])
        self.downsampler = None if mode is None else Resample(c_out, mode, rngs=rngs)
        self.c_out, self.ft, self.fs = c_out, 2 if mode == "downsample3d" else 1, 1 if mode is None else 2

    def __call__(self, x):
        h = x
        for resnet in self.resnets:
            h = resnet(h)
        if self.downsampler is not None:
            h = self.downsampler(h)
        return h + _fold_average(x, self.c_out, self.ft, self.fs)


class UpBlock(nnx.Module):
    """Wan 2.1's decoder level: residual blocks c_in -> c_out and a resampler (`mode`, or None) to c_out / 2 channels."""

    def __init__(self, c_in: int, c_out: int, layers: int, mode: str | None, *, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResidualBlock(c_in if i == 0 else c_out, c_out, rngs=rngs) for i in range(layers)])
        self.upsamplers = None if mode is None else nnx.List([Resample(c_out, mode, c_out=c_out // 2, rngs=rngs)])

    def __call__(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        for upsampler in self.upsamplers or ():
            x = upsampler(x)
        return x


class ResidualUpBlock(nnx.Module):
    """Wan 2.2's decoder level: residual blocks c_in -> c_out and a resampler (`mode`, or None)
    keeping c_out, plus (with a resampler) the input repeated and unfolded (`_repeat_unfold`)."""

    def __init__(self, c_in: int, c_out: int, layers: int, mode: str | None, *, rngs: nnx.Rngs):
        self.resnets = nnx.List([ResidualBlock(c_in if i == 0 else c_out, c_out, rngs=rngs) for i in range(layers)])
        self.upsampler = None if mode is None else Resample(c_out, mode, c_out=c_out, rngs=rngs)
        self.c_out, self.ft = c_out, 2 if mode == "upsample3d" else 1

    def __call__(self, x):
        h = x
        for resnet in self.resnets:
            h = resnet(h)
        if self.upsampler is None:
            return h
        return self.upsampler(h) + _repeat_unfold(x, self.c_out, self.ft, 2)


def _mode(direction: str, level: int, cfg, temporal) -> str | None:
    """The resampler of `level` ('down' or 'up'; None on the last level)."""
    if level == len(cfg.dim_mult) - 1:
        return None
    return f"{direction}sample{'3d' if temporal[level] else '2d'}"


class Encoder(nnx.Module):
    """Video [B, in_channels, F, H, W] (patches already folded) -> [B, 2 z_dim, F', H', W']."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
        self.conv_in = CausalConv3d(cfg.in_channels, dims[0], rngs=rngs)
        blocks = []
        for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
            mode = _mode("down", i, cfg, cfg.temperal_downsample)
            if cfg.is_residual:
                blocks.append(ResidualDownBlock(c_in, c_out, cfg.num_res_blocks, mode, rngs=rngs))
                continue
            for j in range(cfg.num_res_blocks):  # Wan 2.1's levels lie flat in one list
                blocks.append(ResidualBlock(c_in if j == 0 else c_out, c_out, rngs=rngs))
            if mode is not None:
                blocks.append(Resample(c_out, mode, rngs=rngs))
        self.down_blocks = nnx.List(blocks)
        self.mid_block = MidBlock(dims[-1], rngs=rngs)
        self.norm_out, self.conv_out = RMSNorm(dims[-1]), CausalConv3d(dims[-1], 2 * cfg.z_dim, rngs=rngs)

    def __call__(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(_silu(self.norm_out(self.mid_block(x))))


class Decoder(nnx.Module):
    """Latents [B, z_dim, f, h, w] (after post_quant_conv) -> [B, out_channels, F, H, W] (patches still folded, unclamped)."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        dims = [cfg.decoder_base_dim * m for m in (cfg.dim_mult[-1], *reversed(cfg.dim_mult))]
        temporal = tuple(reversed(cfg.temperal_downsample))
        self.conv_in = CausalConv3d(cfg.z_dim, dims[0], rngs=rngs)
        self.mid_block = MidBlock(dims[0], rngs=rngs)
        blocks = []
        for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
            mode = _mode("up", i, cfg, temporal)
            if cfg.is_residual:
                blocks.append(ResidualUpBlock(c_in, c_out, cfg.num_res_blocks + 1, mode, rngs=rngs))
            else:  # a Wan 2.1 level's resampler halves the channels the next level starts from
                blocks.append(UpBlock(c_in if i == 0 else c_in // 2, c_out, cfg.num_res_blocks + 1, mode, rngs=rngs))
        self.up_blocks = nnx.List(blocks)
        self.norm_out, self.conv_out = RMSNorm(dims[-1]), CausalConv3d(dims[-1], cfg.out_channels, rngs=rngs)

    def __call__(self, z):
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(_silu(self.norm_out(x)))


class WanVideoVAE(nnx.Module):
    """The encoder and decoder with their 1x1x1 convolutions to and from the posterior, and
    the config's per-channel latent statistics (tuples of z_dim floats)."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.encoder = Encoder(cfg, rngs=rngs)
        self.quant_conv = CausalConv3d(2 * cfg.z_dim, 2 * cfg.z_dim, (1, 1, 1), rngs=rngs)
        self.post_quant_conv = CausalConv3d(cfg.z_dim, cfg.z_dim, (1, 1, 1), rngs=rngs)
        self.decoder = Decoder(cfg, rngs=rngs)
        self.patch_size, self.z_dim = cfg.patch_size, cfg.z_dim
        self.spatial = cfg.patch_size * 2 ** (len(cfg.dim_mult) - 1)
        self.latents_mean, self.latents_std = tuple(cfg.latents_mean), tuple(cfg.latents_std)

    def encode(self, video: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[B, C, F, H, W] (C = in_channels / patch_size^2, values in [-1, 1], F = 1 + 4k, H and W
        multiples of the spatial compression) -> the posterior's (mean, logvar), [B, z_dim, F', H', W']
        each, the log-variance clipped to [-30, 20]; unnormalised (see `normalize_latents`)."""
        b, c, f, h, w = video.shape
        if (f - 1) % CHUNK or h % self.spatial or w % self.spatial:
            raise ValueError(f"video of {f} frames of {h}x{w}: Wan encodes 1 + {CHUNK}k frames of sides divisible by {self.spatial}")
        p = self.patch_size
        # p x p patches into channels, ordered (c, column in patch, row in patch)
        x = video.reshape(b, c, f, h // p, p, w // p, p).transpose(0, 1, 6, 4, 2, 3, 5).reshape(b, c * p * p, f, h // p, w // p)
        moments = self.quant_conv(self.encoder(x))
        return moments[:, : self.z_dim], jnp.clip(moments[:, self.z_dim :], -30.0, 20.0)

    def decode(self, latents: jax.Array) -> jax.Array:
        """Latents [B, z_dim, f, h, w] (unnormalised) -> video [B, C, F, H, W] clamped to [-1, 1]."""
        x = self.decoder(self.post_quant_conv(latents))
        b, c, f, h, w = x.shape
        p = self.patch_size
        # channels (c, column in patch, row in patch) back into p x p patches
        x = x.reshape(b, c // (p * p), p, p, f, h, w).transpose(0, 1, 4, 5, 3, 6, 2).reshape(b, c // (p * p), f, h * p, w * p)
        return jnp.clip(x, -1.0, 1.0)


# ---- model.kind "wan_video_vae" (jav.models.autoencoders.LOAD_ONLY): a run `python -m jav.convert wan-vae` writes


def init_model(model_cfg: ml_collections.ConfigDict, key: jax.Array, out_shardings=None) -> WanVideoVAE:
    """The VAE of such a run's `model_cfg`, its weights zeros until jav.runs.load_autoencoder restores them."""
    return init_imported(WanVideoVAE, model_cfg, key, out_shardings)


training_loss = refuse_training("wan_video_vae")
