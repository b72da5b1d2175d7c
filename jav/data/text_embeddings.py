"""Caption embeddings computed once, when shards are written, so that a model
trained on precomputed text (model.text.encoder = "precomputed") never runs its
frozen text encoder inside the training step.

    from jav.data.text_embeddings import add_text_embeddings
    from jav.frozen_text_encoder import load_text_encoder
    records = add_text_embeddings(records, load_text_encoder("hf:/models/t5_base", max_len=64))

Each record then carries text_emb [max_len, D] (float16 by default) and
text_mask [max_len] bool, which the loader passes to the model instead of token ids.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator, Sequence

import numpy as np

STORAGE_DTYPES = ("float16", "float32")


def embed_captions(encoder, captions: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Captions -> (emb float32 [N, max_len, D], mask bool [N, max_len]), encoded `batch_size` at a time.

    The last batch is padded to `batch_size` (and the padding dropped), so a jitted encoder
    compiles once for any number of captions.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    captions = list(captions)
    embs, masks = [], []
    for start in range(0, len(captions), batch_size):
        chunk = captions[start : start + batch_size]
        emb, mask = encoder.encode(chunk + [chunk[-1]] * (batch_size - len(chunk)))
        embs.append(np.asarray(emb, np.float32)[: len(chunk)])
        masks.append(np.asarray(mask, bool)[: len(chunk)])
    if not embs:
        return np.zeros((0, encoder.max_len, encoder.dim), np.float32), np.zeros((0, encoder.max_len), bool)
    return np.concatenate(embs), np.concatenate(masks)


def add_text_embeddings(records: Iterable[dict], encoder, *, batch_size: int = 64, dtype: str = "float16", cache_captions: int = 256) -> Iterator[dict]:
    """Record kwargs (as `jav.data.synthetic.clip_record` returns) -> the same records with
    text_emb [max_len, D] in `dtype` and text_mask [max_len] bool added, lazily, `batch_size`
    captions encoded together. Up to `cache_captions` recent captions are kept, so repeated
    captions (the bounce world has few) are encoded once."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype={dtype!r}: text embeddings are stored as one of {STORAGE_DTYPES}")
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    records = iter(records)
    while chunk := list(itertools.islice(records, batch_size)):
        new = list(dict.fromkeys(r["caption"] for r in chunk if r["caption"] not in cache))
        if new:
            emb, mask = embed_captions(encoder, new, batch_size)
            with np.errstate(over="ignore"):  # reported below, with the fix
                stored = emb.astype(dtype)
            if not np.isfinite(stored).all():
                raise ValueError(f"text embeddings overflow {dtype} (largest magnitude {np.abs(emb).max():.3g}); store them with dtype='float32'")
            if len(cache) + len(new) > cache_captions:
                cache = {r["caption"]: cache[r["caption"]] for r in chunk if r["caption"] in cache}
            cache.update({c: (stored[i], mask[i]) for i, c in enumerate(new)})
        for r in chunk:
            emb, mask = cache[r["caption"]]
            yield {**r, "text_emb": emb, "text_mask": mask}
