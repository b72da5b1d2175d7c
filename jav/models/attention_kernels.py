"""The attention kernels a config chooses by `model.attention.kernel`, on one
device's arrays, and the per-token masks they take. The attention layer
(projections, QK RMS-norm, rotary positions) is jav.models.attention.

Masks are described per token, never as an [Nq, Nk] array (at 50k tokens that
array alone is gigabytes): `Mask(q_valid [B, Nq], k_valid [B, Nk])` says which
queries produce output and which keys may be attended, and an optional static
`window` keeps only keys within that many positions of the query (decoupled
video attention's temporal window, over a few dozen frames). Joint attention's
modality blocks, switched per sample by `cross_modal`, fit this form once its
queries are split by modality (each part gets its own key validity; see
jav.models.context_parallel.joint_attention). Each kernel builds what it needs
from the two vectors:

- `xla`: the einsum reference below, with a broadcast [B, 1, Nq, Nk] mask
  that XLA fuses into the softmax (runs everywhere; the CPU default);
- `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")` (GPU). cuDNN
  takes fp16/bf16 only, so other inputs are cast to bf16 and the output cast
  back; keys are reordered valid-first (attention does not depend on key order)
  and passed with `key_value_seq_lengths`, cuDNN's padding mode, instead of a
  dense bias (a windowed mask, over few tokens, goes as a dense mask);
- `splash`: Pallas splash attention (TPU), with segment ids (key id 0 if
  valid, 1 if not), a static local mask for a window, and sequences padded to
  its 128-token blocks.

Rows with no valid key (an invalid query, a null caption, a switched-off
modality) return zeros, not NaN, under every kernel. `attend` runs on one
device's arrays; jav.models.context_parallel decides how it is placed on a mesh.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

_BIG_NEG = -1e30

KERNELS = ("xla", "cudnn", "splash")
_KERNEL_PLATFORMS = {"cudnn": "gpu", "splash": "tpu"}  # xla runs on every platform
_SPLASH_LANES = 128  # splash's block sizes are multiples of this
_SPLASH_MAX_BLOCK = 512  # larger tiles read each key and value block fewer times (benchmarks/aot_plans.md)


def splash_block(n: int) -> int:
    """Splash's tile along a sequence of `n` tokens, which is padded to a multiple of
    it: the largest multiple of 128 up to 512 that pads at most 2% more than 128
    would (LTX-2's 14,080 video tokens at 720p 5 s: 512, padded to 14,336)."""
    least = -(-n // _SPLASH_LANES) * _SPLASH_LANES
    for block in range(_SPLASH_MAX_BLOCK, _SPLASH_LANES - 1, -_SPLASH_LANES):
        if -(-n // block) * block <= 1.02 * least:
            return block
    return _SPLASH_LANES


class Mask(NamedTuple):
    """Which queries produce output and which keys they may attend; None: all."""

    q_valid: jax.Array | None = None  # [B, Nq] bool: False rows return zeros
    k_valid: jax.Array | None = None  # [B, Nk] bool: False keys are never attended
    window: int | None = None  # static: query i attends keys j with |i - j| <= window

    def dense(self, nq: int | None = None, nk: int | None = None) -> jax.Array | None:
        """The [B, 1, Nq, Nk] (or broadcastable) bool mask of the XLA kernel;
        `nq`, `nk` are needed for a window."""
        m = None if self.k_valid is None else self.k_valid[:, None, None, :]
        if self.q_valid is not None:
            q = self.q_valid[:, None, :, None]
            m = q if m is None else m & q
        if self.window is not None:
            band = (jnp.abs(jnp.arange(nq)[:, None] - jnp.arange(nk)[None, :]) <= self.window)[None, None]
            m = band if m is None else m & band
        return m

    def rows_with_keys(self, nq: int | None = None, nk: int | None = None) -> jax.Array | None:
        """[B, Nq] bool: rows that attend at least one key (the others return zeros)."""
        if self.window is not None:
            return jnp.any(self.dense(nq, nk), axis=-1)[:, 0]  # [B or 1, Nq]
        rows = None if self.k_valid is None else jnp.any(self.k_valid, axis=-1, keepdims=True)
        if self.q_valid is not None:
            rows = self.q_valid if rows is None else self.q_valid & rows
        return rows


def key_mask(mask_q: jax.Array | None, mask_k: jax.Array | None) -> Mask | None:
    """[B, Nq], [B, Nk] token masks -> an attention Mask (queries unmasked if None;
    no mask at all without key masks, as padded queries are dropped downstream)."""
    if mask_k is None:
        return None
    return Mask(mask_q, mask_k)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, bias: jax.Array | None = None) -> jax.Array:
    """q [B, Nq, H, Dh], k/v [B, Nk, H, Dh], mask and an additive logit bias (float32)
    broadcastable to [B, H, Nq, Nk] -> [B, Nq, H, Dh]."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = jnp.where(mask, logits, _BIG_NEG)
    weights = jax.nn.softmax(logits, axis=-1)
    if mask is not None:
        weights = jnp.where(jnp.any(mask, axis=-1, keepdims=True), weights, 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)


def current_platform() -> str:
    """The platform attention is traced for: the mesh's devices if a mesh is
    set (so an ahead-of-time compile for a TPU topology counts as TPU), else
    the default backend."""
    device = jax.sharding.get_abstract_mesh().abstract_device
    return device.platform if device is not None else jax.default_backend()


def check_kernel(kernel: str, platform: str | None = None) -> None:
    """Errors, naming the config key and the fix, for a kernel that cannot run on `platform`."""
    if kernel not in KERNELS:
        raise ValueError(f"model.attention.kernel={kernel!r} is not one of {KERNELS}")
    platform = platform or current_platform()
    needs = _KERNEL_PLATFORMS.get(kernel)
    if needs is not None and platform != needs:
        raise ValueError(
            f"model.attention.kernel={kernel!r} needs a {needs.upper()} but this run is on {platform}; "
            f"set model.attention.kernel='xla' (or run on a {needs.upper()})"
        )


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: Mask | None = None, kernel: str = "xla", *, interpret: bool = False) -> jax.Array:
    """One device's attention by `kernel`: q [B, Nq, H, Dh], k/v [B, Nk, H, Dh] -> [B, Nq, H, Dh].

    `interpret` runs splash in Pallas interpret mode (any platform; tests only).
    """
    nq, nk = q.shape[1], k.shape[1]
    if kernel == "xla":
        return dot_product_attention(q, k, v, None if mask is None else mask.dense(nq, nk))
    if not (kernel == "splash" and interpret):
        check_kernel(kernel)
    rows = None if mask is None else mask.rows_with_keys(nq, nk)
    if mask is not None and mask.k_valid is not None:
        # a sample without any valid key attends all of them inside the kernel,
        # so that no kernel sees an empty softmax; its rows are zeroed below
        mask = mask._replace(k_valid=mask.k_valid | ~jnp.any(mask.k_valid, axis=-1, keepdims=True))
    out = _cudnn(q, k, v, mask) if kernel == "cudnn" else _splash(q, k, v, mask, interpret)
    if rows is not None:
        out = jnp.where(rows[:, :, None, None], out, 0.0).astype(out.dtype)
    return out


def _cudnn(q, k, v, mask: Mask | None, implementation: str = "cudnn") -> jax.Array:
    """cuDNN flash attention; `implementation='xla'` runs the same call on any
    platform, which is how the tests check this wrapper without a GPU."""
    dtype = q.dtype if q.dtype in (jnp.bfloat16, jnp.float16) else jnp.bfloat16
    lengths, dense = None, None
    if mask is not None and mask.window is not None:
        dense = mask.dense(q.shape[1], k.shape[1])  # cuDNN's windows are one-sided; this mask is over few tokens
    elif mask is not None and mask.k_valid is not None:
        order = jnp.argsort((~mask.k_valid).astype(jnp.int8), axis=1, stable=True)  # [B, Nk]: valid keys first
        k = jnp.take_along_axis(k, order[:, :, None, None], axis=1)
        v = jnp.take_along_axis(v, order[:, :, None, None], axis=1)
        lengths = jnp.sum(mask.k_valid, axis=1, dtype=jnp.int32)
    out = jax.nn.dot_product_attention(
        q.astype(dtype), k.astype(dtype), v.astype(dtype), mask=dense, key_value_seq_lengths=lengths, implementation=implementation
    )
    return out.astype(q.dtype)


@functools.lru_cache(maxsize=64)
def _splash_kernel(heads: int, nq: int, nk: int, window: int | None, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    bq, bk = splash_block(nq), splash_block(nk)
    blocks = splash.BlockSizes(
        block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq, block_kv_dkv=bk, block_kv_dkv_compute=bk, use_fused_bwd_kernel=True
    )
    # key validity (padding, and joint attention's modality blocks) comes as segment ids; only a window is static
    one = masks.FullMask((nq, nk)) if window is None else masks.LocalMask((nq, nk), (window, window), offset=0)
    return splash.make_splash_mha(masks.MultiHeadMask([one] * heads), block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret), splash.SegmentIds


def _splash(q, k, v, mask: Mask | None, interpret: bool) -> jax.Array:
    b, nq, h, d = q.shape
    nk = k.shape[1]
    pq, pk = -nq % splash_block(nq), -nk % splash_block(nk)
    kernel, segment_ids = _splash_kernel(h, nq + pq, nk + pk, None if mask is None else mask.window, interpret)
    k_valid = jnp.ones((b, nk), bool) if mask is None or mask.k_valid is None else mask.k_valid
    k_segment = jnp.pad(jnp.where(k_valid, 0, 1), ((0, 0), (0, pk)), constant_values=1).astype(jnp.int32)
    q_segment = jnp.zeros((b, nq + pq), jnp.int32)

    def heads_major(x, pad):  # [B, N, H, Dh] -> [B, H, N + pad, Dh]
        return jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

    # splash does not scale the logits itself
    qs, ks, vs = heads_major(q / math.sqrt(d), pq), heads_major(k, pk), heads_major(v, pk)
    out = jax.vmap(lambda q1, k1, v1, sq, sk: kernel(q1, k1, v1, segment_ids=segment_ids(sq, sk)))(qs, ks, vs, q_segment, k_segment)
    return out.transpose(0, 2, 1, 3)[:, :nq]  # [B, Nq, H, Dh]
