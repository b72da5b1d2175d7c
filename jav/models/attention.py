"""Multi-head attention with QK RMS-norm, rotary positions and key masks.

`dot_product_attention` is the reference XLA kernel; rows whose keys are all
masked (a null caption, a switched-off modality) return zeros instead of NaN.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jav.models.layers import Dense, RMSNorm
from jav.models.rope import apply_rope
from jav.sharding import constrain

_BIG_NEG = -1e30


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """q [B, Nq, H, Dh], k/v [B, Nk, H, Dh], mask broadcastable to [B, H, Nq, Nk] -> [B, Nq, H, Dh]."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = jnp.where(mask, logits, _BIG_NEG)
    weights = jax.nn.softmax(logits, axis=-1)
    if mask is not None:
        weights = jnp.where(jnp.any(mask, axis=-1, keepdims=True), weights, 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)


def key_mask(mask_q: jax.Array | None, mask_k: jax.Array | None) -> jax.Array | None:
    """[B, Nq], [B, Nk] token masks -> [B, 1, Nq, Nk] attention mask (queries unmasked if None)."""
    if mask_k is None:
        return None
    m = mask_k[:, None, None, :]
    if mask_q is not None:
        m = m & mask_q[:, None, :, None]
    return m


class AttentionProjections(nnx.Module):
    """Q, K, V and output projections of one modality, with QK RMS-norm.

    `q_dim` is the querying stream's width, `kv_dim` the attended stream's width;
    both project into `heads x head_dim`.
    """

    def __init__(self, q_dim: int, kv_dim: int, heads: int, head_dim: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str, qk_norm: bool = True):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q = Dense(q_dim, (heads, head_dim), ("embed", "heads", "kv"), **kw)
        self.k = Dense(kv_dim, (heads, head_dim), ("embed", "heads", "kv"), **kw)
        self.v = Dense(kv_dim, (heads, head_dim), ("embed", "heads", "kv"), **kw)
        self.o = Dense((heads, head_dim), q_dim, ("heads", "kv", "embed"), **kw)
        self.q_norm = RMSNorm(head_dim, "kv", rngs=rngs, param_dtype=param_dtype) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, "kv", rngs=rngs, param_dtype=param_dtype) if qk_norm else None

    def query(self, x: jax.Array, angles: jax.Array | None) -> jax.Array:
        q = self.q(x)  # [B, N, H, Dh]
        if self.q_norm is not None:
            q = self.q_norm(q)
        if angles is not None:
            q = apply_rope(q, angles)
        return constrain(q, ("activation_batch", "activation_length", "activation_heads", "activation_kv"))

    def key_value(self, ctx: jax.Array, angles: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        k, v = self.k(ctx), self.v(ctx)
        if self.k_norm is not None:
            k = self.k_norm(k)
        if angles is not None:
            k = apply_rope(k, angles)
        return k, v

    def out(self, o: jax.Array) -> jax.Array:
        return self.o(o)


class Attention(nnx.Module):
    """Attention of a stream over itself or over a context stream."""

    def __init__(self, q_dim: int, kv_dim: int, heads: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str, head_dim: int | None = None, qk_norm: bool = True):
        head_dim = head_dim or q_dim // heads
        self.proj = AttentionProjections(q_dim, kv_dim, heads, head_dim, rngs=rngs, dtype=dtype, param_dtype=param_dtype, qk_norm=qk_norm)

    def __call__(self, x, ctx, *, q_angles=None, k_angles=None, mask=None):
        q = self.proj.query(x, q_angles)
        k, v = self.proj.key_value(ctx, k_angles)
        return self.proj.out(dot_product_attention(q, k, v, mask))
