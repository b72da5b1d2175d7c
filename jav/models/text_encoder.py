"""jav's text encoders. The built-in one: a word-hashing tokenizer (no vocabulary
file, nothing to download) and a small transformer trained inside the DiT,
returning [B, L, D] embeddings and a mask. Frozen ones, behind one interface
(`load_text_encoder(spec).encode(texts) -> (emb, mask)`): Hugging Face T5 / UMT5
(jav.models.t5) or a trained built-in encoder, whose embeddings the data path
precomputes (jav.data.text_embeddings) for models with model.text.encoder = "precomputed"."""
from __future__ import annotations

import abc
import re
import zlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jav.models.attention import Attention, key_mask
from jav.models import t5
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


# model.text.encoder: "builtin" trains the encoder above inside the DiT from token
# ids; "precomputed" takes embeddings [B, L, model.text.dim] made once by a frozen
# encoder (records' text_emb).
MODEL_TEXT_ENCODERS = ("builtin", "precomputed")


def uses_token_ids(text_cfg) -> bool:
    """Whether a model with this `model.text` config reads caption token ids (else precomputed embeddings)."""
    if text_cfg.encoder not in MODEL_TEXT_ENCODERS:
        raise ValueError(f"model.text.encoder={text_cfg.encoder!r} is not one of {MODEL_TEXT_ENCODERS}")
    return text_cfg.encoder == "builtin"


class FrozenTextEncoder(abc.ABC):
    """Captions -> (embeddings float32 [B, max_len, dim] NumPy, mask bool [B, max_len]),
    padding positions zeroed. Made by `load_text_encoder`."""

    dim: int
    max_len: int

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The interface every frozen encoder implements (built-in, T5 / UMT5)."""


class BuiltinFrozenEncoder(FrozenTextEncoder):
    """A trained built-in TextEncoder (hash tokenizer + its transformer), held fixed."""

    def __init__(self, module: TextEncoder):
        self.graphdef, self.state = nnx.split(module)
        self.dim = int(module.embed.shape[1])
        self.max_len = module.tokenizer.max_len
        self.tokenizer = module.tokenizer

    def encode(self, texts):
        ids, mask = self.tokenizer.encode(list(texts))
        emb = _builtin_forward(self.graphdef, self.state, jnp.asarray(ids), jnp.asarray(mask))
        return np.asarray(emb, np.float32), mask


@jax.jit(static_argnames="graphdef")
def _builtin_forward(graphdef, state, ids, mask):
    return nnx.merge(graphdef, state)(ids, mask)


class HFTextEncoder(FrozenTextEncoder):
    """A Hugging Face T5 / mT5 / UMT5 encoder (jav.models.t5) with the directory's own tokenizer."""

    def __init__(self, path: str, max_len: int, dtype: str = "float32"):
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise ImportError("Hugging Face text encoders need transformers: "
                              "pip install -r requirements-hf.txt (after torch==2.13.0, see that file)") from e
        self.model = t5.load_t5(path, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.dim = self.model.cfg.d_model
        self.max_len = max_len

    def token_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """-> ids int32 [B, max_len], mask bool [B, max_len]; longer texts are truncated."""
        out = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_len, return_tensors="np")
        return out["input_ids"].astype(np.int32), out["attention_mask"].astype(bool)

    def encode(self, texts):
        ids, mask = self.token_ids(texts)
        return np.asarray(t5.encode_ids(self.model, ids, mask), np.float32), mask


def load_text_encoder(spec: str, *, max_len: int = 128, dtype: str = "float32",
                      module: TextEncoder | None = None) -> FrozenTextEncoder:
    """A frozen text encoder from a spec:

    - "hf:DIR": a T5 / mT5 / UMT5 encoder saved by Hugging Face in local directory DIR,
      captions cut or padded to `max_len` tokens, weights in `dtype` (float32 / bfloat16);
    - "builtin:RUN": the built-in encoder of a jav run directory, as trained inside its DiT
      (EMA weights when the run kept them);
    - "builtin" with `module=`: a TextEncoder already in memory (`model.text_encoder`).
    A built-in encoder keeps the max_len it was trained with (`max_len` applies to "hf:").

    The built-in encoder has no pretrained weights of its own: it is trained jointly with
    the DiT, so only a trained one can serve as a frozen encoder.
    """
    kind, _, arg = spec.partition(":")
    if kind == "hf":
        if not arg:
            raise ValueError("text encoder spec 'hf:' needs a directory: 'hf:/path/to/t5_dir'")
        return HFTextEncoder(arg, max_len, dtype)
    if kind == "builtin":
        if module is None and arg:
            from jav.sample import load_run

            _, model, _ = load_run(arg)
            module = model.text_encoder
            if module is None:
                raise ValueError(f"{arg}: this run's model has model.text.encoder != 'builtin'; it holds no text encoder")
        if module is None:
            raise ValueError("text encoder spec 'builtin' needs trained weights: 'builtin:RUN_DIR' (a jav run "
                             "directory) or load_text_encoder('builtin', module=model.text_encoder)")
        return BuiltinFrozenEncoder(module)
    raise ValueError(f"unknown text encoder spec {spec!r}: use 'hf:DIR' (T5 / UMT5 from a local Hugging Face "
                     "directory) or 'builtin:RUN_DIR' (a jav run's trained built-in encoder)")
