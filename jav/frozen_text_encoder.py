"""Frozen text encoders behind one interface, `load_text_encoder(spec).encode(texts)
-> (emb, mask)`: a Hugging Face T5 / mT5 / UMT5 encoder (jav.models.t5), or the
built-in encoder of a trained jav run (jav.models.text_encoder). The data path
precomputes their embeddings into records (jav.data.text_embeddings) for models
with model.text.encoder = "precomputed"; the sampler encodes prompts with the same one."""

from __future__ import annotations

import abc
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jav.models import t5
from jav.models.text_encoder import TextEncoder
from jav.runs import load_run


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
            raise ImportError("Hugging Face text encoders need transformers: pip install -r requirements-hf.txt (after torch==2.13.0, see that file)") from e
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


def load_text_encoder(spec: str, *, max_len: int = 128, dtype: str = "float32", module: TextEncoder | None = None) -> FrozenTextEncoder:
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
            _, model, _ = load_run(arg)
            module = model.text_encoder
            if module is None:
                raise ValueError(f"{arg}: this run's model has model.text.encoder != 'builtin'; it holds no text encoder")
        if module is None:
            raise ValueError(
                "text encoder spec 'builtin' needs trained weights: 'builtin:RUN_DIR' (a jav run "
                "directory) or load_text_encoder('builtin', module=model.text_encoder)"
            )
        return BuiltinFrozenEncoder(module)
    raise ValueError(
        f"unknown text encoder spec {spec!r}: use 'hf:DIR' (T5 / UMT5 from a local Hugging Face "
        "directory) or 'builtin:RUN_DIR' (a jav run's trained built-in encoder)"
    )
