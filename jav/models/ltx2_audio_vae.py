"""LTX-2's audio VAE (diffusers `AutoencoderKLLTX2Audio`): a stereo log-mel [B, 2, T, M]
<-> latents [B, C, T / 4, M / 4] (C = latent_channels; the causal default keeps the first
frame: T frames decode to 4 (T - 1) + 1).

A 2-D convolutional VAE over (time, mel bins): causal 3x3 convolutions (padded before
along the causal axis), pixel norms (RMS over channels; or group norms where nothing is
causal), SiLU residual blocks, stride-2 downsampling and nearest-neighbour upsampling per
level, optional attention blocks, the posterior's mean and log-variance from the
encoder's 2C channels. Weights keep PyTorch's names and layouts (Conv2d [out, in, kh,
kw]), so `jav.convert.ltx2_audio_vae` copies them as they are; `latents_mean` and
`latents_std` are the per-channel statistics the checkpoint carries.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jav.models.autoencoders import init_imported, refuse_training

_DIMS = ("NCHW", "OIHW", "NCHW")
LATENT_DOWNSAMPLE_FACTOR = 4
CAUSAL_AXES = ("none", "width", "height", "width-compatibility")


def audio_vae_config(
    base_channels=128,
    output_channels=2,
    ch_mult=(1, 2, 4),
    num_res_blocks=2,
    attn_resolutions=(),
    in_channels=2,
    resolution=256,
    latent_channels=8,
    norm_type="pixel",
    causality_axis="height",
    mid_block_add_attention=False,
    mel_bins=64,
    double_z=True,
) -> ml_collections.ConfigDict:
    """diffusers `AutoencoderKLLTX2Audio`'s arguments (its defaults: LTX-2's audio VAE)."""
    return ml_collections.ConfigDict(
        dict(
            base_channels=base_channels,
            output_channels=output_channels,
            ch_mult=tuple(ch_mult),
            num_res_blocks=num_res_blocks,
            attn_resolutions=tuple(attn_resolutions or ()),
            in_channels=in_channels,
            resolution=resolution,
            latent_channels=latent_channels,
            norm_type=norm_type,
            causality_axis=causality_axis,
            mid_block_add_attention=mid_block_add_attention,
            mel_bins=mel_bins,
            double_z=double_z,
        )
    )


def _uniform(rngs, shape, fan_in):
    bound = 1.0 / math.sqrt(fan_in)
    return nnx.Param(jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound))


def _conv(x, weight, bias, stride=1, padding=((0, 0), (0, 0))):
    """Accumulated in float32 and rounded once to x's dtype (as PyTorch's CPU and GPU kernels do in bfloat16)."""
    y = jax.lax.conv_general_dilated(x, weight[...].astype(x.dtype), (stride, stride), padding, dimension_numbers=_DIMS, preferred_element_type=jnp.float32)
    return (y + bias[...].astype(jnp.float32)[None, :, None, None]).astype(x.dtype)


class Conv2d(nnx.Module):
    """torch.nn.Conv2d: weight [out, in, kh, kw], bias [out]."""

    def __init__(self, c_in: int, c_out: int, k: int, *, rngs: nnx.Rngs, stride: int = 1, padding: int = 0):
        self.weight = _uniform(rngs, (c_out, c_in, k, k), c_in * k * k)
        self.bias = _uniform(rngs, (c_out,), c_in * k * k)
        self.stride, self.padding = stride, ((padding, padding), (padding, padding))

    def __call__(self, x):
        return _conv(x, self.weight, self.bias, self.stride, self.padding)


class CausalConv2d(nnx.Module):
    """A 3x3 (or 1x1) convolution padded before along the causal axis (`conv` holds the weights)."""

    def __init__(self, c_in: int, c_out: int, k: int, causality_axis: str, *, rngs: nnx.Rngs):
        self.conv = Conv2d(c_in, c_out, k, rngs=rngs)
        p = k - 1
        centred = (p // 2, p - p // 2)
        self.pad = {"none": (centred, centred), "height": ((p, 0), centred)}.get(causality_axis, (centred, (p, 0)))

    def __call__(self, x):
        return self.conv(jnp.pad(x, ((0, 0), (0, 0)) + self.pad))


class Norm(nnx.Module):
    """Pixel norm (RMS over channels, eps 1e-6) or a 32-group norm with affine parameters."""

    def __init__(self, channels: int, kind: str, *, rngs: nnx.Rngs):
        if kind not in ("pixel", "group"):
            raise ValueError(f"norm_type={kind!r}: 'pixel' or 'group'")
        self.kind = kind
        self.weight = nnx.Param(jnp.ones((channels,))) if kind == "group" else None
        self.bias = nnx.Param(jnp.zeros((channels,))) if kind == "group" else None

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        if self.kind == "pixel":
            return (x32 / jnp.sqrt(jnp.mean(x32 * x32, axis=1, keepdims=True) + 1e-6)).astype(x.dtype)
        b, c, h, w = x.shape
        g = x32.reshape(b, 32, c // 32, h, w)
        mean, var = g.mean(axis=(2, 3, 4), keepdims=True), g.var(axis=(2, 3, 4), keepdims=True)
        y = ((g - mean) / jnp.sqrt(var + 1e-6)).reshape(b, c, h, w)
        return (y * self.weight[...][None, :, None, None] + self.bias[...][None, :, None, None]).astype(x.dtype)


def _conv3(c_in, c_out, k, causality_axis, rngs):
    if causality_axis is None:
        return Conv2d(c_in, c_out, k, padding=k // 2, rngs=rngs)
    return CausalConv2d(c_in, c_out, k, causality_axis, rngs=rngs)


class ResnetBlock(nnx.Module):
    def __init__(self, c_in: int, c_out: int, cfg, *, rngs: nnx.Rngs):
        self.norm1, self.norm2 = Norm(c_in, cfg.norm_type, rngs=rngs), Norm(c_out, cfg.norm_type, rngs=rngs)
        self.conv1 = _conv3(c_in, c_out, 3, cfg.causality_axis, rngs)
        self.conv2 = _conv3(c_out, c_out, 3, cfg.causality_axis, rngs)
        self.nin_shortcut = _conv3(c_in, c_out, 1, cfg.causality_axis, rngs) if c_in != c_out else None

    def __call__(self, x):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nnx.Module):
    def __init__(self, c: int, cfg, *, rngs: nnx.Rngs):
        self.norm = Norm(c, cfg.norm_type, rngs=rngs)
        self.q, self.k, self.v, self.proj_out = (Conv2d(c, c, 1, rngs=rngs) for _ in range(4))

    def __call__(self, x):
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q, k, v = (f(h).reshape(b, c, hh * ww) for f in (self.q, self.k, self.v))
        attn = jax.nn.softmax(jnp.einsum("bci,bcj->bij", q, k) * c**-0.5, axis=-1)
        return x + self.proj_out(jnp.einsum("bcj,bij->bci", v, attn).reshape(b, c, hh, ww))


class Stage(nnx.Module):
    """A level's residual blocks and attention blocks, then its `downsample` or `upsample` (None at the end)."""

    def __init__(self, blocks, attn, resample_name: str, resample):
        self.block, self.attn = nnx.List(blocks), nnx.List(attn)
        self.resample_name = resample_name
        setattr(self, resample_name, resample)

    def resample(self, x):
        layer = getattr(self, self.resample_name)
        return x if layer is None else layer(x)


class Downsample(nnx.Module):
    def __init__(self, c: int, causality_axis: str, *, rngs: nnx.Rngs):
        self.conv = Conv2d(c, c, 3, stride=2, rngs=rngs)
        # (top, bottom), (left, right) as the reference pads before its stride-2 convolution
        self.pad = {"none": ((0, 1), (0, 1)), "width": ((0, 1), (2, 0)), "height": ((2, 0), (0, 1)), "width-compatibility": ((0, 1), (1, 0))}[causality_axis]

    def __call__(self, x):
        return self.conv(jnp.pad(x, ((0, 0), (0, 0)) + self.pad))


class Upsample(nnx.Module):
    def __init__(self, c: int, causality_axis: str | None, *, rngs: nnx.Rngs):
        self.conv = _conv3(c, c, 3, causality_axis, rngs)
        self.axis = causality_axis

    def __call__(self, x):
        x = self.conv(jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3))
        if self.axis == "height":
            return x[:, :, 1:]
        return x[:, :, :, 1:] if self.axis == "width" else x


class Encoder(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.conv_in = _conv3(cfg.in_channels, cfg.base_channels, 3, cfg.causality_axis, rngs)
        c, res, stages = cfg.base_channels, cfg.resolution, []
        for level, mult in enumerate(cfg.ch_mult):
            blocks, attn = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(c, cfg.base_channels * mult, cfg, rngs=rngs))
                c = cfg.base_channels * mult
                if res in cfg.attn_resolutions:
                    attn.append(AttnBlock(c, cfg, rngs=rngs))
            last = level == len(cfg.ch_mult) - 1
            stages.append(Stage(blocks, attn, "downsample", None if last else Downsample(c, cfg.causality_axis, rngs=rngs)))
            res = res if last else res // 2
        self.down = nnx.List(stages)
        self.mid = Mid(c, cfg, rngs=rngs)
        self.norm_out = Norm(c, cfg.norm_type, rngs=rngs)
        self.conv_out = _conv3(c, 2 * cfg.latent_channels if cfg.double_z else cfg.latent_channels, 3, cfg.causality_axis, rngs)

    def __call__(self, x):
        x = self.conv_in(x)
        for stage in self.down:
            for i, block in enumerate(stage.block):
                x = block(x)
                if len(stage.attn):
                    x = stage.attn[i](x)
            x = stage.resample(x)
        return self.conv_out(jax.nn.silu(self.norm_out(self.mid(x))))


class Mid(nnx.Module):
    def __init__(self, c: int, cfg, *, rngs: nnx.Rngs):
        self.block_1, self.block_2 = ResnetBlock(c, c, cfg, rngs=rngs), ResnetBlock(c, c, cfg, rngs=rngs)
        self.attn_1 = AttnBlock(c, cfg, rngs=rngs) if cfg.mid_block_add_attention else None

    def __call__(self, x):
        x = self.block_1(x)
        return self.block_2(x if self.attn_1 is None else self.attn_1(x))


class Decoder(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        c = cfg.base_channels * cfg.ch_mult[-1]
        self.conv_in = _conv3(cfg.latent_channels, c, 3, cfg.causality_axis, rngs)
        self.mid = Mid(c, cfg, rngs=rngs)
        res, stages = cfg.resolution // 2 ** (len(cfg.ch_mult) - 1), {}
        for level in reversed(range(len(cfg.ch_mult))):
            blocks, attn = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(c, cfg.base_channels * cfg.ch_mult[level], cfg, rngs=rngs))
                c = cfg.base_channels * cfg.ch_mult[level]
                if res in cfg.attn_resolutions:
                    attn.append(AttnBlock(c, cfg, rngs=rngs))
            stages[level] = Stage(blocks, attn, "upsample", Upsample(c, cfg.causality_axis, rngs=rngs) if level else None)
            res = res * 2 if level else res
        self.up = nnx.List([stages[level] for level in range(len(cfg.ch_mult))])
        self.norm_out = Norm(c, cfg.norm_type, rngs=rngs)
        self.conv_out = _conv3(c, cfg.output_channels, 3, cfg.causality_axis, rngs)
        self.cfg = ml_collections.FrozenConfigDict(cfg)

    def __call__(self, z):
        cfg = self.cfg
        frames = z.shape[2] * LATENT_DOWNSAMPLE_FACTOR
        if cfg.causality_axis is not None:
            frames = max(frames - (LATENT_DOWNSAMPLE_FACTOR - 1), 1)
        bins = cfg.mel_bins if cfg.mel_bins is not None else z.shape[3]
        x = self.mid(self.conv_in(z))
        for level in reversed(range(len(cfg.ch_mult))):
            stage = self.up[level]
            for i, block in enumerate(stage.block):
                x = block(x)
                if len(stage.attn):
                    x = stage.attn[i](x)
            x = stage.resample(x)
        x = self.conv_out(jax.nn.silu(self.norm_out(x)))[:, : cfg.output_channels, :frames, :bins]
        return jnp.pad(x, ((0, 0), (0, 0), (0, frames - x.shape[2]), (0, bins - x.shape[3])))


class LTX2AudioVAE(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        if cfg.causality_axis not in CAUSAL_AXES:
            raise ValueError(f"causality_axis={cfg.causality_axis!r} is not one of {CAUSAL_AXES}")
        if cfg.norm_type == "group" and cfg.causality_axis not in (None, "none"):
            raise ValueError("group norms with a causal axis: the reference refuses them too; use norm_type='pixel'")
        self.encoder, self.decoder = Encoder(cfg, rngs=rngs), Decoder(cfg, rngs=rngs)
        self.latents_mean = nnx.Param(jnp.zeros((cfg.base_channels,)))
        self.latents_std = nnx.Param(jnp.ones((cfg.base_channels,)))

    def encode(self, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[B, 2, T, M] -> the posterior's (mean, logvar), [B, C, T', M'] each (logvar clipped as the reference's)."""
        h = self.encoder(mel)
        mean, logvar = jnp.split(h, 2, axis=1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)


# ---- model.kind "ltx2_audio_vae" (jav.models.autoencoders.LOAD_ONLY): a run `python -m jav.convert ltx2-audio-vae` writes


def init_model(model_cfg: ml_collections.ConfigDict, key: jax.Array, out_shardings=None) -> LTX2AudioVAE:
    """The VAE of such a run's `model_cfg`, its weights zeros until jav.runs.load_autoencoder restores them."""
    return init_imported(LTX2AudioVAE, model_cfg, key, out_shardings)


training_loss = refuse_training("ltx2_audio_vae")
