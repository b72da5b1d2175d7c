"""LTX-2's video VAE (diffusers `AutoencoderKLLTX2Video`): a video [B, 3, F, H, W] <->
latents [B, C, 1 + (F - 1) / 8, H / 32, W / 32] (C = latent_channels, 128; the default
compression: 4x4 patches, then 8x in space and 8x in time, the first frame kept on its
own, so F = 1 + 8k frames and H, W multiples of 32). Decoding gives 8 (f - 1) + 1 frames
from f latent frames.

A 3-D convolutional VAE, channels first (PyTorch's NCTHW). The encoder folds p x p patches
into channels, then runs causal 3x3x3 convolutions (the first frame repeated before the
clip; centred with the first and last frames repeated where not causal; zero or other
padding in space), residual blocks of per-pixel RMS norms (over channels), SiLU and two
convolutions, and per level a downsampler: a stride-2 convolution, or a space-to-depth
one (spatial 1x2x2, temporal 2x1x1, spatiotemporal 2x2x2) whose convolution's outputs are
folded into channels and added to the input folded the same way and averaged in channel
groups. Its last convolution gives C + 1 channels: the posterior's mean and one log-variance
shared by every channel. The decoder mirrors it: residual blocks and depth-to-space
upsamplers (a convolution to `stride` times the channels unfolded into time and space, the
first frames past the causal one dropped, plus the input unfolded and tiled as a residual),
then the patches unfolded back into pixels. Options: timestep conditioning (sinusoidal
features of the decode timestep through an MLP to per-channel shifts and scales after each
norm), noise injection (per-channel scaled [H, W] Gaussian noise after each of a block's
convolutions, drawn from `decode`'s `noise_key`), non-causal encoder or decoder.

Weights keep PyTorch's names and layouts (Conv3d [out, in, kt, kh, kw], Linear [out, in]),
so `jav.convert.ltx2_video_vae` copies them as they are; `latents_mean` and `latents_std`
are the per-channel statistics the checkpoint carries. Whole clips are encoded and decoded
at once: no spatial tiling or frame-wise decoding.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jav.models.autoencoders import init_imported, refuse_training

_DIMS = ("NCDHW", "OIDHW", "NCDHW")
PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}  # PyTorch's -> jnp.pad's
STRIDES = {"spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2)}  # (time, height, width)
DOWN_BLOCK = "LTX2VideoDownBlock3D"
TIMESTEP_FEATURES = 256


def video_vae_config(
    in_channels=3,
    out_channels=3,
    latent_channels=128,
    block_out_channels=(256, 512, 1024, 2048),
    down_block_types=(DOWN_BLOCK,) * 4,
    decoder_block_out_channels=(256, 512, 1024),
    layers_per_block=(4, 6, 6, 2, 2),
    decoder_layers_per_block=(5, 5, 5, 5),
    spatio_temporal_scaling=(True, True, True, True),
    decoder_spatio_temporal_scaling=(True, True, True),
    decoder_inject_noise=(False, False, False, False),
    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    upsample_type=("spatiotemporal", "spatiotemporal", "spatiotemporal"),
    upsample_residual=(True, True, True),
    upsample_factor=(2, 2, 2),
    timestep_conditioning=False,
    patch_size=4,
    patch_size_t=1,
    resnet_norm_eps=1e-6,
    scaling_factor=1.0,
    encoder_causal=True,
    decoder_causal=True,
    encoder_spatial_padding_mode="zeros",
    decoder_spatial_padding_mode="reflect",
    spatial_compression_ratio=None,
    temporal_compression_ratio=None,
) -> ml_collections.ConfigDict:
    """diffusers `AutoencoderKLLTX2Video`'s arguments (its defaults: LTX-2's video VAE), a
    single bool for a per-level option standing for every level. `block_out_channels` are
    the encoder's levels in encoding order; the decoder's lists run from its last
    (highest-resolution) level to its first, `upsample_type` excepted (in decoding order).
    `layers_per_block`, `decoder_layers_per_block` and `decoder_inject_noise` end with the
    middle block's entry. `scaling_factor` and the compression ratios are kept as given
    (jav's model does not use them)."""

    def per_block(value, n):
        return (value,) * n if isinstance(value, bool) else tuple(value)

    n_down, n_up = len(layers_per_block) - 1, len(decoder_layers_per_block) - 1
    cfg = ml_collections.ConfigDict(
        dict(
            in_channels=in_channels,
            out_channels=out_channels,
            latent_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=tuple(down_block_types),
            decoder_block_out_channels=tuple(decoder_block_out_channels),
            layers_per_block=tuple(layers_per_block),
            decoder_layers_per_block=tuple(decoder_layers_per_block),
            spatio_temporal_scaling=per_block(spatio_temporal_scaling, n_down),
            decoder_spatio_temporal_scaling=per_block(decoder_spatio_temporal_scaling, n_up),
            decoder_inject_noise=per_block(decoder_inject_noise, n_up + 1),
            downsample_type=tuple(downsample_type),
            upsample_type=tuple(upsample_type),
            upsample_residual=per_block(upsample_residual, n_up),
            upsample_factor=tuple(upsample_factor),
            timestep_conditioning=timestep_conditioning,
            patch_size=patch_size,
            patch_size_t=patch_size_t,
            resnet_norm_eps=resnet_norm_eps,
            scaling_factor=scaling_factor,
            encoder_causal=encoder_causal,
            decoder_causal=decoder_causal,
            encoder_spatial_padding_mode=encoder_spatial_padding_mode,
            decoder_spatial_padding_mode=decoder_spatial_padding_mode,
            spatial_compression_ratio=spatial_compression_ratio,
            temporal_compression_ratio=temporal_compression_ratio,
        )
    )
    if patch_size_t != 1:
        raise ValueError(f"patch_size_t={patch_size_t}: LTX-2's video VAE folds patches in space only (its encoder takes in_channels * patch_size**2 channels)")
    if any(t != DOWN_BLOCK for t in cfg.down_block_types):
        raise ValueError(f"down_block_types={cfg.down_block_types}: only {DOWN_BLOCK!r}")
    if any(t not in ("conv", *STRIDES) for t in cfg.downsample_type):
        raise ValueError(f"downsample_type={cfg.downsample_type}: each one of 'conv', {', '.join(map(repr, STRIDES))}")
    if any(t not in STRIDES for t in cfg.upsample_type):
        raise ValueError(f"upsample_type={cfg.upsample_type}: each one of {', '.join(map(repr, STRIDES))}")
    for mode in (encoder_spatial_padding_mode, decoder_spatial_padding_mode):
        if mode not in PADDING_MODES:
            raise ValueError(f"spatial padding mode {mode!r}: one of {', '.join(map(repr, PADDING_MODES))}")
    for i, level in enumerate(decoder_levels(cfg)):
        if level["c_in"] != level["c_out"] and (cfg.timestep_conditioning or level["inject_noise"]):
            raise ValueError(
                f"decoder level {i} changes channels ({level['c_in']} -> {level['c_out']}) in a residual block: "
                "LTX-2's decoder runs such a block without timestep_conditioning or decoder_inject_noise"
            )
    return cfg


def decoder_levels(cfg) -> list[dict]:
    """The decoder's levels in decoding order: channels in and out, residual blocks, upsampler (stride or None) and options."""
    reverse = lambda values: tuple(reversed(values))
    channels, layers, scaling = reverse(cfg.decoder_block_out_channels), reverse(cfg.decoder_layers_per_block), reverse(cfg.decoder_spatio_temporal_scaling)
    noise, residual, factor = reverse(cfg.decoder_inject_noise), reverse(cfg.upsample_residual), reverse(cfg.upsample_factor)
    levels, c = [], channels[0]
    for i in range(len(channels)):
        c_in, c = c // factor[i], channels[i] // factor[i]
        stride = STRIDES[cfg.upsample_type[i]] if scaling[i] else None
        levels.append(dict(c_in=c_in, c_out=c, layers=layers[i + 1], stride=stride, residual=residual[i], factor=factor[i], inject_noise=noise[i + 1]))
    return levels


def injected_noise(key: jax.Array, draw: int, shape: tuple[int, int]) -> jax.Array:
    """The decoder's `draw`-th noise [H, W] (float32): draws are numbered in the order the
    noise-injecting residual blocks run, two per block (after its first and second convolution)."""
    return jax.random.normal(jax.random.fold_in(key, draw), shape, jnp.float32)


def _uniform(rngs, shape, fan_in):
    bound = 1.0 / math.sqrt(fan_in)
    return nnx.Param(jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound))


def _pixel_norm(x, eps=1e-8):
    """RMS over channels (axis 1), in float32, rounded once to x's dtype."""
    x32 = x.astype(jnp.float32)
    return (x32 / jnp.sqrt(jnp.mean(x32 * x32, axis=1, keepdims=True) + eps)).astype(x.dtype)


def _silu(x):
    """SiLU in float32, rounded once to x's dtype (as PyTorch's kernels compute it in bfloat16)."""
    return jax.nn.silu(x.astype(jnp.float32)).astype(x.dtype)


def _modulate(x, shift, scale):
    """x * (1 + scale) + shift, shift and scale [B, C] broadcast over (T, H, W)."""
    return x * (1 + scale[:, :, None, None, None]) + shift[:, :, None, None, None]


class Conv3d(nnx.Module):
    """torch.nn.Conv3d without padding: weight [out, in, kt, kh, kw], bias [out]; accumulated in
    float32 and rounded once to x's dtype (as PyTorch's CPU and GPU kernels do in bfloat16)."""

    def __init__(self, c_in: int, c_out: int, k: int, *, rngs: nnx.Rngs, stride: tuple[int, int, int] = (1, 1, 1)):
        self.weight = _uniform(rngs, (c_out, c_in, k, k, k), c_in * k**3)
        self.bias = _uniform(rngs, (c_out,), c_in * k**3)
        self.stride = stride

    def __call__(self, x):
        y = jax.lax.conv_general_dilated(x, self.weight[...].astype(x.dtype), self.stride, "VALID", dimension_numbers=_DIMS, preferred_element_type=jnp.float32)
        return (y + self.bias[...].astype(jnp.float32)[None, :, None, None, None]).astype(x.dtype)


class CausalConv3d(nnx.Module):
    """A 3x3x3 convolution (`conv` holds the weights) over [B, C, T, H, W]: padded in time by
    repeating the first frame twice (causal) or the first and last frames once, in space by
    one pixel in `padding_mode` (PyTorch's names: zeros, reflect, replicate, circular)."""

    def __init__(self, c_in: int, c_out: int, causal: bool, padding_mode: str, *, rngs: nnx.Rngs, stride: tuple[int, int, int] = (1, 1, 1)):
        self.conv = Conv3d(c_in, c_out, 3, stride=stride, rngs=rngs)
        self.causal, self.padding_mode = causal, PADDING_MODES[padding_mode]

    def __call__(self, x):
        x = jnp.pad(x, ((0, 0), (0, 0), (2, 0) if self.causal else (1, 1), (0, 0), (0, 0)), mode="edge")
        return self.conv(jnp.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1)), mode=self.padding_mode))


class Linear(nnx.Module):
    """torch.nn.Linear: weight [out, in], bias [out]."""

    def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs):
        self.weight = _uniform(rngs, (d_out, d_in), d_in)
        self.bias = _uniform(rngs, (d_out,), d_in)

    def __call__(self, x):
        y = jnp.einsum("...i,oi->...o", x, self.weight[...].astype(x.dtype), preferred_element_type=jnp.float32)
        return (y + self.bias[...].astype(jnp.float32)).astype(x.dtype)


class LayerNorm(nnx.Module):
    """A layer norm over the channels (axis 1) of [B, C, T, H, W], with weight and bias [C]."""

    def __init__(self, channels: int, eps: float):
        self.weight, self.bias, self.eps = nnx.Param(jnp.ones((channels,))), nnx.Param(jnp.zeros((channels,))), eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        mean, var = x32.mean(axis=1, keepdims=True), x32.var(axis=1, keepdims=True)
        y = (x32 - mean) / jnp.sqrt(var + self.eps)
        return (y * self.weight[...].astype(jnp.float32)[None, :, None, None, None] + self.bias[...].astype(jnp.float32)[None, :, None, None, None]).astype(
            x.dtype
        )


class TimestepEmbedding(nnx.Module):
    """[B, 256] sinusoidal features -> Linear, SiLU, Linear -> [B, dim]."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.linear_1, self.linear_2 = Linear(TIMESTEP_FEATURES, dim, rngs=rngs), Linear(dim, dim, rngs=rngs)

    def __call__(self, features):
        return self.linear_2(_silu(self.linear_1(features)))


class TimeEmbedder(nnx.Module):
    """Timesteps [B] (float32, already scaled by the decoder's multiplier) -> [B, dim] in `dtype`:
    256 sinusoidal features (cosines, then sines; frequencies 10000^(-i/128)) through an MLP."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.timestep_embedder = TimestepEmbedding(dim, rngs=rngs)

    def __call__(self, t, dtype):
        half = TIMESTEP_FEATURES // 2
        freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
        angles = t[:, None] * freqs[None, :]
        return self.timestep_embedder(jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1).astype(dtype))


class ResnetBlock(nnx.Module):
    """norm, [shift and scale], SiLU, conv, [noise], norm, [shift and scale], SiLU, conv, plus
    the input (layer-normed and through a 1x1x1 convolution where the channels change).
    `temb` [B, 4 c_in] holds the two norms' (shift, scale) pairs before `scale_shift_table`."""

    def __init__(self, c_in: int, c_out: int, causal: bool, padding_mode: str, eps: float, *, rngs: nnx.Rngs, timestep_conditioning=False, noise_draw=None):
        self.conv1 = CausalConv3d(c_in, c_out, causal, padding_mode, rngs=rngs)
        self.conv2 = CausalConv3d(c_out, c_out, causal, padding_mode, rngs=rngs)
        self.norm3 = LayerNorm(c_in, eps) if c_in != c_out else None
        self.conv_shortcut = Conv3d(c_in, c_out, 1, rngs=rngs) if c_in != c_out else None
        self.noise_draw = noise_draw  # this block's first of two noise draws (None: no noise)
        self.per_channel_scale1 = nnx.Param(jnp.zeros((c_in, 1, 1))) if noise_draw is not None else None
        self.per_channel_scale2 = nnx.Param(jnp.zeros((c_in, 1, 1))) if noise_draw is not None else None
        self.scale_shift_table = nnx.Param(jax.random.normal(rngs.params(), (4, c_in)) / c_in**0.5) if timestep_conditioning else None

    def _add_noise(self, x, scale, key, draw):
        noise = injected_noise(key, draw, x.shape[-2:]).astype(x.dtype)
        return x + (noise[None] * scale[...].astype(x.dtype))[None, :, None]

    def __call__(self, x, temb=None, noise_key=None):
        h = _pixel_norm(x)
        if self.scale_shift_table is not None:
            shift_1, scale_1, shift_2, scale_2 = jnp.unstack(temb.reshape(x.shape[0], 4, -1) + self.scale_shift_table[...].astype(temb.dtype)[None], axis=1)
            h = _modulate(h, shift_1, scale_1)
        h = self.conv1(_silu(h))
        if self.noise_draw is not None:
            h = self._add_noise(h, self.per_channel_scale1, noise_key, self.noise_draw)
        h = _pixel_norm(h)
        if self.scale_shift_table is not None:
            h = _modulate(h, shift_2, scale_2)
        h = self.conv2(_silu(h))
        if self.noise_draw is not None:
            h = self._add_noise(h, self.per_channel_scale2, noise_key, self.noise_draw + 1)
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(self.norm3(x))
        return h + x


def _space_to_depth(x, stride):
    """[B, C, T, H, W] -> [B, C * st * sh * sw, T / st, H / sh, W / sw], channels ordered (c, st, sh, sw)."""
    b, c, t, h, w = x.shape
    st, sh, sw = stride
    x = x.reshape(b, c, t // st, st, h // sh, sh, w // sw, sw).transpose(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * st * sh * sw, t // st, h // sh, w // sw)


def _depth_to_space(x, stride):
    """_space_to_depth's inverse: [B, C * st * sh * sw, T, H, W] -> [B, C, T * st, H * sh, W * sw]."""
    b, c, t, h, w = x.shape
    st, sh, sw = stride
    x = x.reshape(b, c // (st * sh * sw), st, sh, sw, t, h, w).transpose(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // (st * sh * sw), t * st, h * sh, w * sw)


class Downsampler(nnx.Module):
    """[B, c_in, T, H, W] -> [B, c_out, T / st, H / sh, W / sw], the first st - 1 frames repeated
    before: a convolution to c_out / (st sh sw) channels folded into channels (space to depth),
    plus the input folded the same way and averaged over groups of c_in st sh sw / c_out channels."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int, int], causal: bool, padding_mode: str, *, rngs: nnx.Rngs):
        self.stride, self.c_out = stride, c_out
        self.conv = CausalConv3d(c_in, c_out // math.prod(stride), causal, padding_mode, rngs=rngs)

    def __call__(self, x):
        x = jnp.concatenate([x[:, :, : self.stride[0] - 1], x], axis=2)
        folded = _space_to_depth(x, self.stride)
        b, c, t, h, w = folded.shape
        residual = folded.astype(jnp.float32).reshape(b, self.c_out, c // self.c_out, t, h, w).mean(axis=2).astype(x.dtype)
        return _space_to_depth(self.conv(x), self.stride) + residual


class Upsampler(nnx.Module):
    """[B, c_in, T, H, W] -> [B, c_in / factor, st T - (st - 1), sh H, sw W]: a convolution to
    c_in st sh sw / factor channels unfolded into time and space (depth to space), the first
    st - 1 frames dropped; with `residual`, plus the input unfolded the same way and its
    channels tiled st sh sw / factor times."""

    def __init__(self, c_in: int, stride: tuple[int, int, int], residual: bool, factor: int, causal: bool, padding_mode: str, *, rngs: nnx.Rngs):
        self.stride, self.residual, self.repeats = stride, residual, math.prod(stride) // factor
        self.conv = CausalConv3d(c_in, c_in * math.prod(stride) // factor, causal, padding_mode, rngs=rngs)

    def __call__(self, x):
        drop = self.stride[0] - 1
        h = _depth_to_space(self.conv(x), self.stride)[:, :, drop:]
        if self.residual:
            h = h + jnp.tile(_depth_to_space(x, self.stride), (1, self.repeats, 1, 1, 1))[:, :, drop:]
        return h


class DownBlock(nnx.Module):
    """`layers` residual blocks at c_in channels, then (with `scale`) a downsampler to c_out channels
    ('conv': a stride-2 convolution keeping c_in)."""

    def __init__(self, c_in: int, c_out: int, layers: int, scale: bool, downsample_type: str, cfg, *, rngs: nnx.Rngs):
        causal, mode, eps = cfg.encoder_causal, cfg.encoder_spatial_padding_mode, cfg.resnet_norm_eps
        self.resnets = nnx.List([ResnetBlock(c_in, c_in, causal, mode, eps, rngs=rngs) for _ in range(layers)])
        if not scale:
            self.downsamplers = None
        elif downsample_type == "conv":
            self.downsamplers = nnx.List([CausalConv3d(c_in, c_in, causal, mode, stride=(2, 2, 2), rngs=rngs)])
        else:
            self.downsamplers = nnx.List([Downsampler(c_in, c_out, STRIDES[downsample_type], causal, mode, rngs=rngs)])

    def __call__(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        for downsampler in self.downsamplers or ():
            x = downsampler(x)
        return x


class MidBlock(nnx.Module):
    """`layers` residual blocks at c channels; with timestep conditioning, its own time embedder
    (4c: the blocks' shifts and scales)."""

    def __init__(self, c: int, layers: int, causal: bool, padding_mode: str, cfg, *, rngs: nnx.Rngs, conditioning=False, noise_draws=()):
        self.time_embedder = TimeEmbedder(4 * c, rngs=rngs) if conditioning else None
        draws = iter(noise_draws)
        self.resnets = nnx.List(
            [
                ResnetBlock(c, c, causal, padding_mode, cfg.resnet_norm_eps, timestep_conditioning=conditioning, noise_draw=next(draws, None), rngs=rngs)
                for _ in range(layers)
            ]
        )

    def __call__(self, x, t=None, noise_key=None):
        temb = None if self.time_embedder is None else self.time_embedder(t, x.dtype)
        for resnet in self.resnets:
            x = resnet(x, temb, noise_key)
        return x


class UpBlock(nnx.Module):
    """A residual block from c_in to c_out channels (`conv_in`, where they differ), an upsampler
    (with a stride) and `layers` residual blocks at c_out; its time embedder as the middle block's."""

    def __init__(self, level: dict, cfg, noise_draws, *, rngs: nnx.Rngs):
        causal, mode, eps, conditioning = cfg.decoder_causal, cfg.decoder_spatial_padding_mode, cfg.resnet_norm_eps, cfg.timestep_conditioning
        c_in, c_out = level["c_in"], level["c_out"]
        self.time_embedder = TimeEmbedder(4 * c_in, rngs=rngs) if conditioning else None
        self.conv_in = ResnetBlock(c_in, c_out, causal, mode, eps, rngs=rngs) if c_in != c_out else None
        stride, factor = level["stride"], level["factor"]
        self.upsamplers = None if stride is None else nnx.List([Upsampler(c_out * factor, stride, level["residual"], factor, causal, mode, rngs=rngs)])
        draws = iter(noise_draws if level["inject_noise"] else ())
        self.resnets = nnx.List(
            [
                ResnetBlock(c_out, c_out, causal, mode, eps, timestep_conditioning=conditioning, noise_draw=next(draws, None), rngs=rngs)
                for _ in range(level["layers"])
            ]
        )

    def __call__(self, x, t=None, noise_key=None):
        if self.conv_in is not None:
            x = self.conv_in(x)
        temb = None if self.time_embedder is None else self.time_embedder(t, x.dtype)
        for upsampler in self.upsamplers or ():
            x = upsampler(x)
        for resnet in self.resnets:
            x = resnet(x, temb, noise_key)
        return x


class Encoder(nnx.Module):
    """Video [B, in_channels, F, H, W] -> [B, C + 1, F', H', W']: C means and one log-variance."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        causal, mode = cfg.encoder_causal, cfg.encoder_spatial_padding_mode
        self.patch_size = cfg.patch_size
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size**2, cfg.latent_channels, causal, mode, rngs=rngs)
        blocks, c = [], cfg.latent_channels
        for i, c_out in enumerate(cfg.block_out_channels):
            blocks.append(DownBlock(c, c_out, cfg.layers_per_block[i], cfg.spatio_temporal_scaling[i], cfg.downsample_type[i], cfg, rngs=rngs))
            c = c_out
        self.down_blocks = nnx.List(blocks)
        self.mid_block = MidBlock(c, cfg.layers_per_block[-1], causal, mode, cfg, rngs=rngs)
        self.conv_out = CausalConv3d(c, cfg.latent_channels + 1, causal, mode, rngs=rngs)

    def __call__(self, x):
        b, c, t, h, w = x.shape
        p = self.patch_size
        # p x p patches into channels, ordered (c, column in patch, row in patch)
        x = x.reshape(b, c, t, h // p, p, w // p, p).transpose(0, 1, 6, 4, 2, 3, 5).reshape(b, c * p * p, t, h // p, w // p)
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(_silu(_pixel_norm(self.mid_block(x))))


class Decoder(nnx.Module):
    """Latents [B, C, f, h, w] (and with timestep conditioning timesteps [B]) -> video [B, out_channels, F, H, W]."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        causal, mode = cfg.decoder_causal, cfg.decoder_spatial_padding_mode
        levels, c_mid = decoder_levels(cfg), cfg.decoder_block_out_channels[-1]
        noise_draws = itertools.count(0, 2)
        self.conv_in = CausalConv3d(cfg.latent_channels, c_mid, causal, mode, rngs=rngs)
        self.mid_block = MidBlock(
            c_mid,
            cfg.decoder_layers_per_block[-1],
            causal,
            mode,
            cfg,
            conditioning=cfg.timestep_conditioning,
            noise_draws=noise_draws if cfg.decoder_inject_noise[-1] else (),
            rngs=rngs,
        )
        self.up_blocks = nnx.List([UpBlock(level, cfg, noise_draws, rngs=rngs) for level in levels])
        c = levels[-1]["c_out"]
        self.conv_out = CausalConv3d(c, cfg.out_channels * cfg.patch_size**2, causal, mode, rngs=rngs)
        self.patch_size = cfg.patch_size
        conditioning = cfg.timestep_conditioning
        self.timestep_scale_multiplier = nnx.Param(jnp.asarray(1000.0)) if conditioning else None
        self.time_embedder = TimeEmbedder(2 * c, rngs=rngs) if conditioning else None
        self.scale_shift_table = nnx.Param(jax.random.normal(rngs.params(), (2, c)) / c**0.5) if conditioning else None

    def __call__(self, z, timestep=None, noise_key=None):
        x = self.conv_in(z)
        t = None
        if self.timestep_scale_multiplier is not None:
            t = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32).reshape(-1), (z.shape[0],)) * self.timestep_scale_multiplier[...].astype(jnp.float32)
        x = self.mid_block(x, t, noise_key)
        for block in self.up_blocks:
            x = block(x, t, noise_key)
        x = _pixel_norm(x)
        if self.time_embedder is not None:
            temb = self.time_embedder(t, x.dtype).reshape(x.shape[0], 2, -1) + self.scale_shift_table[...].astype(x.dtype)[None]
            x = _modulate(x, temb[:, 0], temb[:, 1])
        x = self.conv_out(_silu(x))
        b, c, f, h, w = x.shape
        p = self.patch_size
        # channels (c, column in patch, row in patch) back into p x p patches
        x = x.reshape(b, c // (p * p), p, p, f, h, w).transpose(0, 1, 4, 5, 3, 6, 2)
        return x.reshape(b, c // (p * p), f, h * p, w * p)


class LTX2VideoVAE(nnx.Module):
    """The encoder and decoder, and the checkpoint's per-channel latent statistics [C]."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.encoder, self.decoder = Encoder(cfg, rngs=rngs), Decoder(cfg, rngs=rngs)
        self.latents_mean = nnx.Param(jnp.zeros((cfg.latent_channels,)))
        self.latents_std = nnx.Param(jnp.ones((cfg.latent_channels,)))
        self.timestep_conditioning, self.inject_noise = cfg.timestep_conditioning, any(cfg.decoder_inject_noise)

    def encode(self, video: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[B, in_channels, F, H, W] -> the posterior's (mean, logvar), [B, C, F', H', W'] each
        (one log-variance for every channel, clipped to [-30, 20]); unnormalised."""
        h = self.encoder(video)
        mean, logvar = h[:, :-1], h[:, -1:]
        return mean, jnp.broadcast_to(jnp.clip(logvar, -30.0, 20.0), mean.shape)

    def decode(self, latents: jax.Array, timestep=None, noise_key: jax.Array | None = None) -> jax.Array:
        """Latents [B, C, f, h, w] -> video [B, out_channels, F, H, W]. `timestep` (a number or [B]):
        the decode timestep, with timestep conditioning only; `noise_key`: the injected noise's
        key, where the config injects noise (`injected_noise` numbers the draws)."""
        if self.timestep_conditioning != (timestep is not None):
            raise ValueError("decode takes a timestep exactly when the config has timestep_conditioning")
        if self.inject_noise and noise_key is None:
            raise ValueError("decoder_inject_noise: decode needs a noise_key to draw the noise from")
        return self.decoder(latents, timestep, noise_key)


# ---- model.kind "ltx2_video_vae" (jav.models.autoencoders.LOAD_ONLY): a run `python -m jav.convert ltx2-video-vae` writes


def init_model(model_cfg: ml_collections.ConfigDict, key: jax.Array, out_shardings=None) -> LTX2VideoVAE:
    """The VAE of such a run's `model_cfg`, its weights zeros until jav.runs.load_autoencoder restores them."""
    return init_imported(LTX2VideoVAE, model_cfg, key, out_shardings)


training_loss = refuse_training("ltx2_video_vae")
