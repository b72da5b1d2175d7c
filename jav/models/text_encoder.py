"""jav's built-in text encoder: a small transformer over the hash tokenizer's ids
(jav.tokenizer), trained inside the DiT, returning [B, L, D] embeddings. A model
either trains it (model.text.encoder = "builtin") or reads embeddings that a
frozen encoder (jav.frozen_text_encoder: T5 / UMT5, or a trained built-in one)
precomputed into the records (model.text.encoder = "precomputed")."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jav.models.attention import Attention
from jav.models.attention_kernels import key_mask
from jav.models.layers import MLP, RMSNorm, dtype_of, fan_in_normal, param
from jav.tokenizer import HashTokenizer


class TextLayer(nnx.Module):
    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs, dtype: str, param_dtype: str):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.norm1 = RMSNorm(dim, "embed", rngs=rngs, param_dtype=param_dtype)
        self.attn = Attention(dim, dim, heads, **kw)
        self.norm2 = RMSNorm(dim, "embed", rngs=rngs, param_dtype=param_dtype)
        self.mlp = MLP(dim, 4 * dim, **kw)

    def __call__(self, x, mask):
        h = self.norm1(x)
        x = x + self.attn(h, h, mask=key_mask(None, mask))
        return x + self.mlp(self.norm2(x))


class TextEncoder(nnx.Module):
    """ids [B, L] -> embeddings [B, L, D] (padding positions zeroed)."""

    def __init__(self, cfg, *, rngs: nnx.Rngs, dtype: str, param_dtype: str):
        self.tokenizer = HashTokenizer(cfg.vocab_size, cfg.max_len)
        self.embed = param(rngs, fan_in_normal(1), (cfg.vocab_size, cfg.width), ("vocab", "embed"), dtype_of(param_dtype))
        self.pos = param(rngs, fan_in_normal(cfg.width), (cfg.max_len, cfg.width), ("norm", "embed"), dtype_of(param_dtype))
        self.layers = nnx.List([TextLayer(cfg.width, cfg.heads, rngs=rngs, dtype=dtype, param_dtype=param_dtype) for _ in range(cfg.depth)])
        self.norm = RMSNorm(cfg.width, "embed", rngs=rngs, param_dtype=param_dtype)
        self.dtype = dtype_of(dtype)

    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        x = jnp.take(self.embed[...], ids, axis=0).astype(self.dtype) + self.pos[...][: ids.shape[1]].astype(self.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x) * mask[..., None]

    def encode(self, texts: Sequence[str]) -> tuple[jax.Array, jax.Array]:
        ids, mask = self.tokenizer.encode(texts)
        mask = jnp.asarray(mask)
        return self(jnp.asarray(ids), mask), mask


# model.text.encoder: "builtin" trains the encoder above inside the DiT from token
# ids; "precomputed" takes embeddings [B, L, model.text.dim] made once by a frozen
# encoder (records' text_emb).
MODEL_TEXT_ENCODERS = ("builtin", "precomputed")


def uses_token_ids(text_cfg) -> bool:
    """Whether a model with this `model.text` config reads caption token ids (else precomputed embeddings)."""
    if text_cfg.encoder not in MODEL_TEXT_ENCODERS:
        raise ValueError(f"model.text.encoder={text_cfg.encoder!r} is not one of {MODEL_TEXT_ENCODERS}")
    return text_cfg.encoder == "builtin"
