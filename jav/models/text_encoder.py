"""jav's built-in text encoder: a word-hashing tokenizer (no vocabulary file,
nothing to download) and a small trainable transformer, returning [B, L, D]
embeddings and a mask like any precomputed text encoder would."""
from __future__ import annotations

import re
import zlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jav.models.attention import Attention, key_mask
from jav.models.layers import MLP, RMSNorm, dtype_of, fan_in_normal, param

PAD, BOS = 0, 1
_WORD = re.compile(r"[a-z0-9]+")


class HashTokenizer:
    """Lower-cased words hashed (CRC32) into `vocab_size - 2` buckets after PAD and BOS.

    Hashing keeps the tokenizer a pure function of the text: any caption maps to
    ids, and the bounce world's few dozen words land in distinct buckets.
    """

    def __init__(self, vocab_size: int, max_len: int):
        self.vocab_size = vocab_size
        self.max_len = max_len

    def word_id(self, word: str) -> int:
        return 2 + zlib.crc32(word.encode()) % (self.vocab_size - 2)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """-> ids int32 [B, max_len], mask bool [B, max_len]; longer texts are truncated."""
        ids = np.full((len(texts), self.max_len), PAD, np.int32)
        for i, text in enumerate(texts):
            words = [BOS] + [self.word_id(w) for w in _WORD.findall(text.lower())]
            words = words[: self.max_len]
            ids[i, : len(words)] = words
        return ids, ids != PAD


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
