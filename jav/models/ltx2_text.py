"""LTX-2's text connectors: the text encoder's stacked hidden states -> the caption
embeddings of the video and the audio stream.

The path between Gemma 3 (all its layers' hidden states, [B, L, C, F]: C channels,
F = layers + 1) and the transformer's caption projections, as diffusers'
`LTX2TextConnectors` computes it:
- LTX-2.0 (`per_modality_projections=False`): each clip's states normalised by their
  masked mean and range over tokens and channels, per layer, times 8, padding zeroed,
  flattened to C * F and projected to C (`text_proj_in`), shared by both streams;
- LTX-2.3 (`per_modality_projections=True`): an RMS norm per token and layer, padding
  zeroed, scaled by sqrt(stream width / C) and projected per stream;
then per stream a small transformer (`Connector`): padded positions are replaced by
learned registers (the valid tokens moved to the front in order, the registers by
absolute position behind them) and every token attends every other, or, without
registers, padded keys are masked; 1-D RoPE over token index / base_seq_len on LTX-2's
frequency ladder (jav.models.rope.ltx2_angles), blocks of RMS-normed attention (QK
RMS-norm across heads) and a GELU-tanh MLP, a final RMS norm. The caption mask
returned marks every position (as the reference's does; see `TextConnectors.__call__`).

Parameters are named so that `jav.convert.ltx2_text` maps diffusers' tensors one to one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jav.models.attention import Attention
from jav.models.attention_kernels import Mask
from jav.models.autoencoders import init_imported, refuse_training
from jav.models.layers import MLP, Dense, dtype_of, param, rms_norm
from jav.models.rope import ltx2_angles

STREAMS = ("video", "audio")


def connectors_config(
    caption_channels=3840,
    layers=49,
    heads=30,
    head_dim=128,
    depth=2,
    registers=128,
    audio_heads=30,
    audio_head_dim=128,
    audio_depth=2,
    audio_registers=128,
    base_seq_len=4096,
    theta=10_000.0,
    rope_pairs="interleaved",
    per_modality_projections=False,
    video_dim=4096,
    audio_dim=2048,
    proj_bias=False,
) -> ml_collections.ConfigDict:
    """LTX-2.0's connectors by default (diffusers' `LTX2TextConnectors` defaults). Keys:
    caption_channels, layers: the text encoder's width C and hidden states stacked F.
    video / audio: heads, head_dim, depth (blocks) and registers (0: none) of each connector.
    base_seq_len, theta, rope_pairs: the connectors' 1-D RoPE ("interleaved" or "split").
    per_modality_projections: LTX-2.3's per-stream RMS-normed projections to video_dim /
      audio_dim, instead of LTX-2.0's shared masked-mean projection to C.
    proj_bias: a bias on those projections.
    """
    return ml_collections.ConfigDict(
        dict(
            caption_channels=caption_channels,
            layers=layers,
            base_seq_len=base_seq_len,
            theta=theta,
            rope_pairs=rope_pairs,
            per_modality_projections=per_modality_projections,
            video_dim=video_dim,
            audio_dim=audio_dim,
            proj_bias=proj_bias,
            video=dict(heads=heads, head_dim=head_dim, depth=depth, registers=registers),
            audio=dict(heads=audio_heads, head_dim=audio_head_dim, depth=audio_depth, registers=audio_registers),
        )
    )


def masked_mean_range_norm(x: jax.Array, valid: jax.Array, scale: float = 8.0, eps: float = 1e-6) -> jax.Array:
    """[B, L, C, F] states, [B, L] valid tokens -> [B, L, C * F]: per clip and layer, minus the
    mean over valid tokens and channels, over their range (max - min), times `scale`; padding 0."""
    x = x.astype(jnp.float32)
    b, _, c, _ = x.shape
    m = valid[:, :, None, None]
    count = (valid.sum(axis=1).astype(jnp.float32) * c).reshape(b, 1, 1, 1)
    mean = jnp.where(m, x, 0.0).sum(axis=(1, 2), keepdims=True) / (count + eps)
    lo = jnp.where(m, x, jnp.inf).min(axis=(1, 2), keepdims=True)
    hi = jnp.where(m, x, -jnp.inf).max(axis=(1, 2), keepdims=True)
    out = (x - mean) / (hi - lo + eps) * scale
    return jnp.where(valid[:, :, None], out.reshape(*out.shape[:2], -1), 0.0)


class ConnectorBlock(nnx.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, rope_pairs: str, *, rngs: nnx.Rngs, dtype: str, param_dtype: str):
        self.attn = Attention(
            dim, dim, heads, head_dim=head_dim, qk_norm=True, qk_norm_across_heads=True, rope_pairs=rope_pairs, rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )
        self.mlp = MLP(dim, 4 * dim, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x, angles, mask):
        h = rms_norm(x)
        x = x + self.attn(h, h, q_angles=angles, k_angles=angles, mask=mask)
        return x + self.mlp(rms_norm(x))


class Connector(nnx.Module):
    """One stream's connector: registers in place of padding (or masked padding), 1-D RoPE, blocks, RMS norm."""

    def __init__(self, cfg, stream: str, *, rngs: nnx.Rngs, dtype: str = "float32", param_dtype: str = "float32"):
        s = cfg[stream]
        self.heads, self.head_dim = s.heads, s.head_dim
        dim = s.heads * s.head_dim
        self.base_seq_len, self.theta = float(cfg.base_seq_len), float(cfg.theta)
        init = lambda key, shape, dt: jax.random.uniform(key, shape, dt, -1.0, 1.0)  # noqa: E731  (as LTX-2 starts them)
        self.registers = param(rngs, init, (s.registers, dim), (None, "embed"), dtype_of(param_dtype)) if s.registers else None
        self.blocks = nnx.List(
            [ConnectorBlock(dim, s.heads, s.head_dim, cfg.rope_pairs, rngs=rngs, dtype=dtype, param_dtype=param_dtype) for _ in range(s.depth)]
        )

    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        """x [B, L, D], valid [B, L] bool -> [B, L, D]."""
        b, length, _ = x.shape
        mask = Mask(None, valid)
        if self.registers is not None:
            r = self.registers.shape[0]
            if length % r:
                raise ValueError(f"the connector's {r} registers must tile the caption length {length}: pad captions to a multiple of {r}")
            order = jnp.argsort(~valid, axis=1, stable=True)  # valid tokens first, in their order
            front = jnp.take_along_axis(x, order[..., None], axis=1)
            registers = jnp.tile(self.registers[...], (length // r, 1)).astype(x.dtype)
            x = jnp.where(jnp.arange(length)[None, :, None] < valid.sum(axis=1)[:, None, None], front, registers[None])
            mask = None  # every position holds a token or a register: all attend
        pos = jnp.arange(length, dtype=jnp.float32)[None, :, None]
        angles = ltx2_angles(pos, self.heads, self.head_dim, self.theta, (self.base_seq_len,), axes=1)
        for block in self.blocks:
            x = block(x, angles, mask)
        return rms_norm(x)


class TextConnectors(nnx.Module):
    """LTX-2's text connectors (the module docstring)."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs, dtype: str = "float32", param_dtype: str = "float32"):
        self.cfg = ml_collections.FrozenConfigDict(cfg)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, use_bias=cfg.proj_bias)
        width = cfg.caption_channels * cfg.layers
        dims = {m: cfg[m].heads * cfg[m].head_dim for m in STREAMS}
        if cfg.per_modality_projections:
            want = {"video": cfg.video_dim, "audio": cfg.audio_dim}
            if dims != want:
                raise ValueError(f"connector widths (heads x head_dim) {dims} must equal video_dim / audio_dim {want}")
            self.proj_in = nnx.Dict({m: Dense(width, want[m], ("mlp", "embed"), **kw) for m in STREAMS})
        else:
            if set(dims.values()) != {cfg.caption_channels}:
                raise ValueError(f"LTX-2.0 connectors run at the caption width {cfg.caption_channels}: heads x head_dim is {dims}")
            self.proj_in = Dense(width, cfg.caption_channels, ("mlp", "embed"), **kw)
        self.connectors = nnx.Dict({m: Connector(cfg, m, rngs=rngs, dtype=dtype, param_dtype=param_dtype) for m in STREAMS})

    def __call__(self, states: jax.Array, mask: jax.Array, scale: float = 8.0):
        """states [B, L, C, F] (or [B, L, C * F]), mask [B, L] (1: token, on either side) ->
        (video [B, L, Dv], audio [B, L, Da], the caption mask [B, L] int32)."""
        cfg = self.cfg
        if states.ndim == 3:
            states = states.reshape(*states.shape[:2], cfg.caption_channels, -1)
        valid = mask.astype(bool)
        if cfg.per_modality_projections:
            x = states.astype(jnp.float32)
            x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=2, keepdims=True) + 1e-6)
            x = jnp.where(valid[:, :, None], x.reshape(*x.shape[:2], -1), 0.0)
            inputs = {m: self.proj_in[m](x * math.sqrt(d / cfg.caption_channels)) for m, d in (("video", cfg.video_dim), ("audio", cfg.audio_dim))}
        else:
            shared = self.proj_in(masked_mean_range_norm(states, valid, scale))
            inputs = {m: shared for m in STREAMS}
        video = self.connectors["video"](inputs["video"], valid)
        audio = self.connectors["audio"](inputs["audio"], valid)
        # The reference derives the caption mask it returns (and multiplies the video embedding by) as
        # "additive connector mask < 1e-6", which holds at padded positions too (their mask is negative):
        # every position is kept, with or without registers. jav returns the same.
        return video, audio, jnp.ones(valid.shape, jnp.int32)


# ---- model.kind "ltx2_connectors" (jav.models.autoencoders.LOAD_ONLY): a run `python -m jav.convert ltx2-connectors` writes


def init_model(model_cfg: ml_collections.ConfigDict, key: jax.Array, out_shardings=None) -> TextConnectors:
    """The connectors of such a run's `model_cfg`, its weights zeros until jav.runs.load_autoencoder restores them."""
    return init_imported(TextConnectors, model_cfg, key, out_shardings, dtype=model_cfg.dtype, param_dtype=model_cfg.dtype)


training_loss = refuse_training("ltx2_connectors")
