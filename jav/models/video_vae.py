"""The causal video VAE: pixel clips [B, T, H, W, 3] in [-1, 1] <-> latents
[B, 1 + (T - 1) / ct, H / cs, W / cs, C] for a compression of ct x cs x cs.

Every 3-D convolution pads time on the past side only (with copies of the
first frame), so the first frame is encoded on its own: a still image is a
1-frame clip, and images and clips of 1 + ct * k frames share one model.
Because nothing looks ahead, a long clip can be encoded and decoded in
temporal chunks, each convolution carrying the last input frames it still
needs into the next chunk (`FrameCache`); this gives the whole-clip result to
float32 rounding. Large frames go through in overlapping spatial tiles
blended linearly; tiles differ from the whole frame near their seams, where
the receptive field reaches past the tile into zero padding instead of the
neighbour's pixels. The bottleneck is a diagonal Gaussian (mean, log-variance)
with a KL penalty, as in Wan and LTX-2.

With `shortcut` on, every resolution change also has a parameter-free path
beside its convolution, as in DC-AE's residual autoencoding: the encoder's
downsamplings add the input average-pooled (causally in time) with its
channels averaged or repeated to the new width, the decoder's upsamplings add
it nearest-neighbour upsampled, and the same channel maps bridge pixels,
latents and features. A fresh VAE then starts near a block-average codec,
not at a plain background, and the convolutions learn the residual.

Norms are RMS over channels at each position, never GroupNorm: statistics
over time or space would leak later frames and far pixels into every output
and break causality, chunking and tiling.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import einops
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jav.models.ae_losses import psnr, structure_loss
from jav.models.layers import RMSNorm, dtype_of, fan_in_normal, jit_init, param, zeros


def _log2(n: int) -> int | None:
    """log2(n) for a power of two, else None."""
    return n.bit_length() - 1 if n >= 1 and n & (n - 1) == 0 else None


def validate_config(cfg) -> None:
    """Checks a VAE config once, with errors that name the key and the fix."""
    ct, ch, cw = cfg.compression
    for name, n in zip(("time", "height", "width"), (ct, ch, cw)):
        if _log2(int(n)) is None:
            raise ValueError(f"video_vae.compression={tuple(cfg.compression)}: the {name} factor {n} must be a power of two")
    if ch != cw:
        raise ValueError(f"video_vae.compression={tuple(cfg.compression)}: height and width factors must be equal")
    if _log2(int(cfg.patch)) is None or ch % cfg.patch:
        raise ValueError(f"video_vae.patch={cfg.patch} must be a power of two dividing the spatial compression {ch}")
    stages = _log2(ch // cfg.patch)
    if _log2(ct) > stages:
        raise ValueError(
            f"video_vae.compression time factor {ct} needs {_log2(ct)} downsamplings but the spatial factor "
            f"{ch} / patch {cfg.patch} gives {stages}; lower video_vae.patch or the time factor"
        )
    if len(cfg.widths) != stages + 1:
        raise ValueError(
            f"video_vae.widths has {len(cfg.widths)} entries; compression {tuple(cfg.compression)} with patch "
            f"{cfg.patch} has {stages} downsamplings, so it needs {stages + 1} (one per level)"
        )
    if cfg.latent_channels < 1 or cfg.blocks < 0:
        raise ValueError("video_vae.latent_channels must be >= 1 and video_vae.blocks >= 0")
    if cfg.chunk_latents < 0 or cfg.tile_latents < 0 or cfg.overlap_latents < 0:
        raise ValueError("video_vae.chunk_latents, tile_latents and overlap_latents must be >= 0 (0 = off)")
    if cfg.tile_latents and cfg.overlap_latents >= cfg.tile_latents:
        raise ValueError(f"video_vae.overlap_latents={cfg.overlap_latents} must be smaller than video_vae.tile_latents={cfg.tile_latents}")


def halves_time(cfg) -> tuple[bool, ...]:
    """Per downsampling stage, whether it halves time: the deepest log2(ct) do,
    so the early, full-resolution levels see every frame (as in Wan)."""
    stages = len(cfg.widths) - 1
    n = _log2(cfg.compression[0])
    return tuple(i >= stages - n for i in range(stages))


def check_video(cfg, shape: Sequence[int], first_chunk: bool = True) -> None:
    """A pixel clip [B, T, H, W, C] (a chunk of one when not `first_chunk`) fits the VAE."""
    _, t, h, w, c = shape
    ct, cs = cfg.compression[0], cfg.compression[1]
    if first_chunk and (t - 1) % ct:
        raise ValueError(
            f"video has {t} frames; video_vae.compression time factor {ct} needs 1 + {ct}k frames "
            f"(e.g. {1 + ct * ((t - 1) // ct)} or {1 + ct * ((t - 1) // ct + 1)}): trim or pad the clip"
        )
    if not first_chunk and t % ct:
        raise ValueError(f"a chunk after the first has {t} frames; it needs a multiple of the time factor {ct}")
    if h % cs or w % cs:
        raise ValueError(f"video is {h} x {w}; video_vae.compression spatial factor {cs} must divide both: crop or pad")
    if c != cfg.in_channels:
        raise ValueError(f"video has {c} channels; video_vae.in_channels={cfg.in_channels}")


def latent_shape(cfg, shape_thw: Sequence[int]) -> tuple[int, int, int, int]:
    """(T', H', W', C) of the latents of a [T, H, W] clip."""
    t, h, w = shape_thw
    check_video(cfg, (1, t, h, w, cfg.in_channels))
    ct, cs = cfg.compression[0], cfg.compression[1]
    return 1 + (t - 1) // ct, h // cs, w // cs, cfg.latent_channels


class FrameCache:
    """The frames each causal convolution carries from one temporal chunk to the next.

    A pass over a chunk reads `previous` (what the last chunk's pass collected,
    in the order the convolutions run; None on a clip's first chunk, which is
    padded instead) and collects `kept` for the next chunk. A whole-clip pass
    is a first chunk whose `kept` is dropped.
    """

    def __init__(self, previous: Sequence[jax.Array] | None = None):
        self.previous = None if previous is None else list(previous)
        self.kept: list[jax.Array] = []

    @property
    def first(self) -> bool:
        return self.previous is None

    def past(self) -> jax.Array:
        return self.previous[len(self.kept)]

    def keep(self, frames: jax.Array) -> None:
        self.kept.append(frames)


class CausalConv3d(nnx.Module):
    """3-D convolution over [B, T, H, W, C], causal in time (output frame j sees
    input frames up to j * stride only), 'same' zero padding in space."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: Sequence[int],
        axes: tuple[str, str],
        *,
        rngs: nnx.Rngs,
        stride: Sequence[int] = (1, 1, 1),
        init=None,
        dtype: str,
        param_dtype: str,
    ):
        self.kernel_size, self.stride = tuple(kernel), tuple(stride)
        assert self.kernel_size[0] >= self.stride[0], "a strided conv must see every frame"
        init = init or fan_in_normal(int(np.prod(kernel)) * cin)
        self.kernel = param(rngs, init, (*self.kernel_size, cin, cout), (None, None, None, *axes), dtype_of(param_dtype))
        self.bias = param(rngs, zeros, (cout,), (axes[1],), dtype_of(param_dtype))
        self.dtype = dtype_of(dtype)

    def __call__(self, x: jax.Array, cache: FrameCache) -> jax.Array:
        kt, kh, kw = self.kernel_size
        st = self.stride[0]
        x = x.astype(self.dtype)
        if kt > 1:
            # copies of the first frame stand in for the past, so a still image
            # reads as a clip that has not moved yet
            past = jnp.repeat(x[:, :1], kt - 1, axis=1) if cache.first else cache.past()
            x = jnp.concatenate([past, x], axis=1)  # [B, past + T, H, W, C]
            # the next chunk's first window starts where this chunk's windows stop
            windows = (x.shape[1] - kt) // st + 1
            cache.keep(x[:, windows * st :])
        # The time taps are stacked on channels and the frames on the batch, so
        # one 2-D convolution does the work: XLA's CPU 3-D convolution (and
        # its gradient) is 10-80x slower than its 2-D one at these sizes.
        b, n = x.shape[0], (x.shape[1] - kt) // st + 1
        taps = jnp.concatenate([x[:, d : d + st * (n - 1) + 1 : st] for d in range(kt)], axis=-1)  # [B, n, H, W, kt Cin]
        kernel = einops.rearrange(self.kernel[...].astype(self.dtype), "t h w i o -> h w (t i) o")
        y = jax.lax.conv_general_dilated(
            taps.reshape(b * n, *taps.shape[2:]),
            kernel,
            self.stride[1:],
            (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )  # [B n, H / sh, W / sw, Cout]
        return y.reshape(b, n, *y.shape[1:]) + self.bias[...].astype(self.dtype)


class ResBlock(nnx.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))); the second conv starts at zero,
    so a fresh block is the identity."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.norm1 = RMSNorm(dim, "norm", rngs=rngs, param_dtype=param_dtype)
        self.conv1 = CausalConv3d(dim, dim, (3, 3, 3), ("embed", "mlp"), **kw)
        self.norm2 = RMSNorm(dim, "norm", rngs=rngs, param_dtype=param_dtype)
        self.conv2 = CausalConv3d(dim, dim, (3, 3, 3), ("mlp", "embed"), init=zeros, **kw)

    def __call__(self, x: jax.Array, cache: FrameCache) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)), cache)
        return x + self.conv2(jax.nn.silu(self.norm2(h)), cache)


class Upsample(nnx.Module):
    """Sub-pixel upsampling by (st, 2, 2): a causal conv to st * 4 times the
    output channels, then depth to space. On a clip's first chunk the first
    latent frame makes one pixel frame, not st: its other st - 1 are dropped."""

    def __init__(self, cin: int, cout: int, time_stride: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str):
        self.time_stride = time_stride
        self.conv = CausalConv3d(cin, cout * time_stride * 4, (3, 3, 3), ("embed", "mlp"), rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: jax.Array, cache: FrameCache) -> jax.Array:
        st, first = self.time_stride, cache.first
        y = self.conv(x, cache)
        y = einops.rearrange(y, "b t h w (pt ph pw c) -> b (t pt) (h ph) (w pw) c", pt=st, ph=2, pw=2)  # [B, T st, 2H, 2W, C]
        return y[:, st - 1 :] if first else y


def channel_map(x: jax.Array, channels: int) -> jax.Array:
    """[..., C] -> [..., channels], parameter-free: input channel i feeds output
    i * channels // C, averaged when narrowing; output k repeats input k * C // channels
    when widening."""
    cin = x.shape[-1]
    if cin == channels:
        return x
    m = np.zeros((cin, channels), np.float32)
    if cin > channels:
        m[np.arange(cin), np.arange(cin) * channels // cin] = 1.0
        m /= m.sum(0, keepdims=True)
    else:
        m[np.arange(channels) * cin // channels, np.arange(channels)] = 1.0
    return x @ jnp.asarray(m, x.dtype)


def pool_shortcut(x: jax.Array, time_stride: int, first: bool, channels: int) -> jax.Array:
    """The encoder's parameter-free downsampling by (time_stride, 2, 2): output frame
    j averages the input frames of the strided convolution's last step (2j - 1 and 2j
    of a first chunk, whose frame 0 stands alone), so it is as causal as the conv."""
    if time_stride == 2 and first:
        x = jnp.concatenate([x[:, :1], x], axis=1)
    x = einops.reduce(x, "b (t pt) (h ph) (w pw) c -> b t h w c", "mean", pt=time_stride, ph=2, pw=2)
    return channel_map(x, channels)


def upsample_shortcut(x: jax.Array, time_stride: int, first: bool, channels: int) -> jax.Array:
    """The decoder's parameter-free upsampling, `Upsample`'s shape: channels mapped,
    then each position repeated (time_stride, 2, 2) times; a first chunk's first
    latent frame gives one frame."""
    y = einops.repeat(channel_map(x, channels), "b t h w c -> b (t pt) (h ph) (w pw) c", pt=time_stride, ph=2, pw=2)
    return y[:, time_stride - 1 :] if first else y


def _levels(cfg, rngs: nnx.Rngs) -> nnx.List:
    kw = dict(rngs=rngs, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    return nnx.List([nnx.List([ResBlock(w, **kw) for _ in range(cfg.blocks)]) for w in cfg.widths])


class Encoder(nnx.Module):
    """Pixels [B, T, H, W, 3] -> mean and log-variance stacked [B, T', H', W', 2 C]."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        kw = dict(rngs=rngs, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        w, p = cfg.widths, cfg.patch
        self.patch = p
        self.conv_in = CausalConv3d(cfg.in_channels * p * p, w[0], (3, 3, 3), ("patch", "embed"), **kw)
        self.levels = _levels(cfg, rngs)
        self.down = nnx.List(
            [CausalConv3d(w[i], w[i + 1], (3, 3, 3), ("embed", "mlp"), stride=(2 if halves else 1, 2, 2), **kw) for i, halves in enumerate(halves_time(cfg))]
        )
        self.norm_out = RMSNorm(w[-1], "norm", rngs=rngs, param_dtype=cfg.param_dtype)
        self.conv_out = CausalConv3d(w[-1], 2 * cfg.latent_channels, (3, 3, 3), ("embed", "patch"), **kw)
        self.shortcut, self.widths = cfg.get("shortcut", False), tuple(w)
        self.time_strides = tuple(2 if halves else 1 for halves in halves_time(cfg))

    def __call__(self, x: jax.Array, cache: FrameCache) -> jax.Array:
        p, first, w = self.patch, cache.first, self.widths
        h = einops.rearrange(x, "b t (h ph) (w pw) c -> b t h w (ph pw c)", ph=p, pw=p)  # [B, T, H/p, W/p, p p 3]
        h = self.conv_in(h, cache) + (channel_map(h, w[0]) if self.shortcut else 0.0)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, cache)
            if i < len(self.down):
                skip = pool_shortcut(h, self.time_strides[i], first, w[i + 1]) if self.shortcut else 0.0
                h = self.down[i](h, cache) + skip  # [B, T/2 or T (1 + (T-1)/2 on a first chunk), H/2, W/2, widths[i+1]]
        out = self.conv_out(jax.nn.silu(self.norm_out(h)), cache)  # [..., 2 C]: mean, log-variance
        if self.shortcut:
            c = out.shape[-1] // 2
            out = out + jnp.concatenate([channel_map(h, c), jnp.zeros_like(out[..., c:])], axis=-1)
        return out


class Decoder(nnx.Module):
    """Latents [B, T', H', W', C] -> pixels [B, T, H, W, 3], the encoder's mirror."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        kw = dict(rngs=rngs, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        w, p = cfg.widths, cfg.patch
        self.patch, self.channels = p, cfg.in_channels
        self.conv_in = CausalConv3d(cfg.latent_channels, w[-1], (3, 3, 3), ("patch", "embed"), **kw)
        self.levels = _levels(cfg, rngs)
        # up[i] takes level i + 1 back to level i
        self.up = nnx.List([Upsample(w[i + 1], w[i], 2 if halves else 1, **kw) for i, halves in enumerate(halves_time(cfg))])
        self.norm_out = RMSNorm(w[0], "norm", rngs=rngs, param_dtype=cfg.param_dtype)
        self.conv_out = CausalConv3d(w[0], cfg.in_channels * p * p, (3, 3, 3), ("embed", "patch"), **kw)
        self.shortcut, self.widths = cfg.get("shortcut", False), tuple(w)

    def __call__(self, z: jax.Array, cache: FrameCache) -> jax.Array:
        first, w = cache.first, self.widths
        h = self.conv_in(z, cache) + (channel_map(z, w[-1]) if self.shortcut else 0.0)
        for i in reversed(range(len(self.levels))):
            for block in self.levels[i]:
                h = block(h, cache)
            if i > 0:
                up = self.up[i - 1]
                skip = upsample_shortcut(h, up.time_stride, first, w[i - 1]) if self.shortcut else 0.0
                h = up(h, cache) + skip  # [B, 2T or T (2T - 1 on a first chunk), 2H, 2W, widths[i-1]]
        skip = channel_map(h, self.channels * self.patch**2) if self.shortcut else 0.0
        h = self.conv_out(jax.nn.silu(self.norm_out(h)), cache) + skip
        p = self.patch
        return einops.rearrange(h, "b t h w (ph pw c) -> b t (h ph) (w pw) c", ph=p, pw=p, c=self.channels)  # [B, T, H, W, 3]


class VideoVAE(nnx.Module):
    """The causal VAE. `encode` / `decode` run one whole clip, or one temporal
    chunk of it when given the `FrameCache` of the chunks before; the module
    functions `encode_chunked`, `decode_chunked`, `encode_tiled` and
    `decode_tiled` run long or large clips piece by piece with the same weights."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        validate_config(cfg)
        cfg = ml_collections.FrozenConfigDict(cfg)  # hashable, so the graphdef can be a jit static
        self.cfg = cfg
        self.encoder = Encoder(cfg, rngs=rngs)
        self.decoder = Decoder(cfg, rngs=rngs)

    def encode(self, x: jax.Array, cache: FrameCache | None = None) -> tuple[jax.Array, jax.Array]:
        """Pixels [B, T, H, W, 3] -> (mean, log-variance), each [B, T', H', W', C] float32."""
        cache = FrameCache() if cache is None else cache
        check_video(self.cfg, x.shape, first_chunk=cache.first)
        h = self.encoder(x, cache).astype(jnp.float32)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar + self.cfg.get("logvar_offset", 0.0), *self.cfg.logvar_range)

    def decode(self, z: jax.Array, cache: FrameCache | None = None) -> jax.Array:
        """Latents [B, T', H', W', C] -> pixels [B, 1 + ct (T' - 1), H, W, 3] float32
        (ct T' frames on a chunk after the first)."""
        cache = FrameCache() if cache is None else cache
        return self.decoder(z, cache).astype(jnp.float32)

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Reconstruction through a sampled latent (the mean without a key), with
        the posterior's mean and log-variance for the KL term."""
        mean, logvar = self.encode(x)
        z = mean if key is None else sample_latent(key, mean, logvar)
        return self.decode(z), mean, logvar


def sample_latent(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent value, averaged."""
    return 0.5 * jnp.mean(mean * mean + jnp.exp(logvar) - 1.0 - logvar)


# ---- Long and large clips: temporal chunks with a frame cache, spatial tiles with blending.


@functools.partial(jax.jit, static_argnums=0)
def _encode_chunk(graphdef, state, x, previous):
    cache = FrameCache(previous)
    mean, logvar = nnx.merge(graphdef, state).encode(x, cache)
    return mean, logvar, cache.kept


@functools.partial(jax.jit, static_argnums=0)
def _decode_chunk(graphdef, state, z, previous):
    cache = FrameCache(previous)
    return nnx.merge(graphdef, state).decode(z, cache), cache.kept


def chunk_bounds(length: int, first: int, rest: int) -> list[tuple[int, int]]:
    """[start, stop) of a first chunk of `first` frames, then chunks of `rest`."""
    bounds, start = [], 0
    while start < length:
        stop = min(length, first if start == 0 else start + rest)
        bounds.append((start, stop))
        start = stop
    return bounds


def encode_chunked(vae: VideoVAE, x: jax.Array, chunk_latents: int | None = None) -> tuple[jax.Array, jax.Array]:
    """`vae.encode(x)` in temporal chunks of `chunk_latents` latent frames
    (default video_vae.chunk_latents; 0 = whole clip); one compile for the first
    chunk and one for the rest."""
    c = vae.cfg.chunk_latents if chunk_latents is None else chunk_latents
    check_video(vae.cfg, x.shape)
    graphdef, state = nnx.split(vae)
    ct = vae.cfg.compression[0]
    bounds = chunk_bounds(x.shape[1], 1 + ct * (c - 1), ct * c) if c else [(0, x.shape[1])]
    means, logvars, previous = [], [], None
    for start, stop in bounds:
        mean, logvar, previous = _encode_chunk(graphdef, state, x[:, start:stop], previous)
        means.append(mean)
        logvars.append(logvar)
    return jnp.concatenate(means, axis=1), jnp.concatenate(logvars, axis=1)


def decode_chunked(vae: VideoVAE, z: jax.Array, chunk_latents: int | None = None) -> jax.Array:
    """`vae.decode(z)` in temporal chunks of `chunk_latents` latent frames (0 = whole)."""
    c = vae.cfg.chunk_latents if chunk_latents is None else chunk_latents
    graphdef, state = nnx.split(vae)
    bounds = chunk_bounds(z.shape[1], c, c) if c else [(0, z.shape[1])]
    frames, previous = [], None
    for start, stop in bounds:
        y, previous = _decode_chunk(graphdef, state, z[:, start:stop], previous)
        frames.append(y)
    return jnp.concatenate(frames, axis=1)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of `tile` covering [0, size) with at least `overlap` shared;
    the last tile is pulled back to end at `size`."""
    if not tile or tile >= size:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def _ramp(n: int, lead: int, trail: int) -> np.ndarray:
    """Blend weights over a tile's n positions: rising over its first `lead`,
    falling over its last `trail`, so two neighbours' weights sum to one."""
    w = np.ones(n, np.float32)
    if lead:
        w[:lead] = np.arange(1, lead + 1) / (lead + 1)
    if trail:
        w[n - trail :] = np.arange(trail, 0, -1) / (trail + 1)
    return w


@jax.jit
def _add_tile(num: jax.Array, den: jax.Array, y: jax.Array, weight: jax.Array, h0: jax.Array, w0: jax.Array):
    """Adds a weighted tile into the running sums at (h0, w0); the offsets are
    traced, so one compile serves every tile of a shape."""
    at = (0, 0, h0, w0, 0)
    num = jax.lax.dynamic_update_slice(num, jax.lax.dynamic_slice(num, at, y.shape) + y * weight, at)
    den = jax.lax.dynamic_update_slice(den, jax.lax.dynamic_slice(den, at, weight.shape) + weight, at)
    return num, den


def _tiled(fn: Callable[[jax.Array], jax.Array], x: jax.Array, scale_in: int, scale_out: int, tile: int, overlap: int) -> jax.Array:
    """fn over overlapping spatial tiles of x [B, T, H, W, C], blended; tile and
    overlap in latent pixels, scale_in / scale_out pixels per latent pixel."""
    size_h, size_w = x.shape[2] // scale_in, x.shape[3] // scale_in
    starts_h, starts_w = tile_starts(size_h, tile, overlap), tile_starts(size_w, tile, overlap)
    th, tw = min(tile or size_h, size_h), min(tile or size_w, size_w)
    o = overlap * scale_out
    num = den = None
    for i in starts_h:
        wh = _ramp(th * scale_out, o if i > 0 else 0, o if i + th < size_h else 0)
        for j in starts_w:
            ww = _ramp(tw * scale_out, o if j > 0 else 0, o if j + tw < size_w else 0)
            y = fn(x[:, :, i * scale_in : (i + th) * scale_in, j * scale_in : (j + tw) * scale_in])  # [B, T*, th s, tw s, C*]
            if num is None:
                num = jnp.zeros((y.shape[0], y.shape[1], size_h * scale_out, size_w * scale_out, y.shape[4]), y.dtype)
                den = jnp.zeros((1, 1, size_h * scale_out, size_w * scale_out, 1), y.dtype)
            weight = jnp.asarray(np.outer(wh, ww)[None, None, :, :, None])
            num, den = _add_tile(num, den, y, weight, i * scale_out, j * scale_out)
    return num / den


def encode_tiled(
    vae: VideoVAE, x: jax.Array, tile_latents: int | None = None, overlap_latents: int | None = None, chunk_latents: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """`vae.encode(x)` in spatial tiles of `tile_latents` latent pixels sharing
    `overlap_latents` (defaults from the config; 0 tile = whole frame), each
    tile encoded in temporal chunks; mean and log-variance blended linearly."""
    cfg = vae.cfg
    tile = cfg.tile_latents if tile_latents is None else tile_latents
    overlap = cfg.overlap_latents if overlap_latents is None else overlap_latents
    check_video(cfg, x.shape)

    def one(t):
        return jnp.concatenate(encode_chunked(vae, t, chunk_latents), axis=-1)  # [B, T', h, w, 2 C]

    stacked = _tiled(one, x, cfg.compression[1], 1, tile, overlap)
    mean, logvar = jnp.split(stacked, 2, axis=-1)
    return mean, logvar


def decode_tiled(
    vae: VideoVAE, z: jax.Array, tile_latents: int | None = None, overlap_latents: int | None = None, chunk_latents: int | None = None
) -> jax.Array:
    """`vae.decode(z)` in spatial tiles of latents, each decoded in temporal
    chunks, the pixel tiles blended linearly over the overlap."""
    cfg = vae.cfg
    tile = cfg.tile_latents if tile_latents is None else tile_latents
    overlap = cfg.overlap_latents if overlap_latents is None else overlap_latents
    return _tiled(lambda t: decode_chunked(vae, t, chunk_latents), z, 1, cfg.compression[1], tile, overlap)


def init_vae(cfg, key: jax.Array) -> VideoVAE:
    """A VideoVAE created by one jitted initialisation (`layers.jit_init`)."""
    return jit_init(VideoVAE, cfg, key)


# ---- The autoencoder phase's contract (jav/train/autoencoder.py): build the model and score a batch.


def init_model(cfg, key: jax.Array, out_shardings=None) -> VideoVAE:
    """The VAE of model config `cfg` (experiment `cfg.model`), created already
    sharded when `out_shardings` is given."""
    return jit_init(VideoVAE, cfg, key, out_shardings)


def training_outputs(model: VideoVAE, batch: dict, key: jax.Array, cfg) -> tuple[jax.Array, dict, tuple[jax.Array, jax.Array]]:
    """Loss of a batch {"video": [B, 1 + 4k, H, W, 3]} through a sampled latent ->
    (loss, metrics, (target, reconstruction)); `cfg.loss` weighs L1, L2, KL and
    the structure term."""
    x = batch["video"]
    recon, mean, logvar = model(x, key)
    w = cfg.loss
    err = recon - x
    l1, l2, kl = jnp.mean(jnp.abs(err)), jnp.mean(err * err), kl_divergence(mean, logvar)
    loss = w.l1 * l1 + w.l2 * l2 + w.kl_weight * kl
    metrics = dict(l1=l1, l2=l2, kl=kl, psnr=psnr(x, recon), latent_std=jnp.std(mean))
    if w.structure:
        structure = structure_loss(x, recon, diff_axes=(1, 2, 3), pool_axes=(2, 3))
        loss = loss + w.structure * structure
        metrics["structure"] = structure
    return loss, metrics, (x, recon)


def training_loss(model: VideoVAE, batch: dict, key: jax.Array, cfg) -> tuple[jax.Array, dict]:
    """(loss, scalar metrics) of a batch; see `training_outputs`."""
    loss, metrics, _ = training_outputs(model, batch, key, cfg)
    return loss, metrics


def evaluate(model: VideoVAE, batch: dict, cfg) -> dict:
    """Held-out scores through the posterior mean: PSNR of the whole clip and of
    its first frame, L1, and the latents' mean and standard deviation."""
    del cfg
    x = batch["video"]
    mean, _ = model.encode(x)
    recon = model.decode(mean)
    return dict(
        psnr=psnr(x, recon),
        psnr_first_frame=psnr(x[:, :1], recon[:, :1]),
        l1=jnp.mean(jnp.abs(recon - x)),
        latent_mean=jnp.mean(mean),
        latent_std=jnp.std(mean),
    )
