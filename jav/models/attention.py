"""Multi-head attention layers: Q, K, V and output projections with QK RMS-norm
and rotary positions, their attention run through jav.models.context_parallel,
which applies the kernel of jav.models.attention_kernels on one device or over
the mesh's context axis.
"""

from __future__ import annotations

import jax
from flax import nnx

from jav.models import context_parallel
from jav.models.attention_kernels import Mask
from jav.models.layers import Dense, RMSNorm
from jav.models.rope import apply_rope
from jav.sharding import constrain


class AttentionProjections(nnx.Module):
    """Q, K, V and output projections of one modality, with QK RMS-norm.

    `q_dim` is the querying stream's width, `kv_dim` the attended stream's width;
    both project into `heads x head_dim`. `qk_norm_across_heads` normalises a
    token's queries (keys) over all heads at once, with an (H, Dh) scale (LTX-2);
    `rope_pairs` is `model.rope.pairs`.
    """

    def __init__(
        self,
        q_dim: int,
        kv_dim: int,
        heads: int,
        head_dim: int,
        *,
        rngs: nnx.Rngs,
        dtype: str,
        param_dtype: str,
        qk_norm: bool = True,
        qk_norm_across_heads: bool = False,
        rope_pairs: str = "split",
    ):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q = Dense(q_dim, (heads, head_dim), ("embed", "heads", "kv"), role="attn", saved_as="attention_projection", **kw)
        self.k = Dense(kv_dim, (heads, head_dim), ("embed", "heads", "kv"), role="attn", saved_as="attention_projection", **kw)
        self.v = Dense(kv_dim, (heads, head_dim), ("embed", "heads", "kv"), role="attn", saved_as="attention_projection", **kw)
        self.o = Dense((heads, head_dim), q_dim, ("heads", "kv", "embed"), role="attn", saved_as="attention_projection", **kw)
        norm_shape, norm_axes = ((heads, head_dim), ("heads", "kv")) if qk_norm_across_heads else (head_dim, "kv")
        self.q_norm = RMSNorm(norm_shape, norm_axes, rngs=rngs, param_dtype=param_dtype) if qk_norm else None
        self.k_norm = RMSNorm(norm_shape, norm_axes, rngs=rngs, param_dtype=param_dtype) if qk_norm else None
        self.rope_pairs = rope_pairs

    def query(self, x: jax.Array, angles: jax.Array | None, length: str | None = None) -> jax.Array:
        """-> [B, N, H, Dh]; `length` is the logical name of the token axis."""
        q = self.q(x)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if angles is not None:
            q = apply_rope(q, angles, self.rope_pairs)
        return constrain(q, ("activation_batch", length, "activation_heads", "activation_kv"))

    def key_value(self, ctx: jax.Array, angles: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        k, v = self.k(ctx), self.v(ctx)
        if self.k_norm is not None:
            k = self.k_norm(k)
        if angles is not None:
            k = apply_rope(k, angles, self.rope_pairs)
        return k, v

    def out(self, o: jax.Array) -> jax.Array:
        return self.o(o)


class Attention(nnx.Module):
    """Attention of a stream over itself or over a context stream.

    `kernel` and `context` are `model.attention.kernel` and
    `model.attention.context`; the call's `q_length` / `k_length` name the
    logical token axes of queries and keys (None: never split over devices),
    which decides whether context parallelism applies.
    """

    def __init__(
        self,
        q_dim: int,
        kv_dim: int,
        heads: int,
        *,
        rngs: nnx.Rngs,
        dtype: str,
        param_dtype: str,
        head_dim: int | None = None,
        qk_norm: bool = True,
        qk_norm_across_heads: bool = False,
        rope_pairs: str = "split",
        kernel: str = "xla",
        context: str = "ring",
    ):
        head_dim = head_dim or q_dim // heads
        self.proj = AttentionProjections(
            q_dim,
            kv_dim,
            heads,
            head_dim,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            qk_norm=qk_norm,
            qk_norm_across_heads=qk_norm_across_heads,
            rope_pairs=rope_pairs,
        )
        self.kernel, self.context = kernel, context

    def __call__(self, x, ctx, *, q_angles=None, k_angles=None, mask: Mask | None = None, q_length: str | None = None, k_length: str | None = None):
        q = self.proj.query(x, q_angles, q_length)
        k, v = self.proj.key_value(ctx, k_angles)
        o = context_parallel.attention(q, k, v, mask, q_length=q_length, k_length=k_length, kernel=self.kernel, context=self.context)
        return self.proj.out(o)
