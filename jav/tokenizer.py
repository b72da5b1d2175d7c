"""The built-in caption tokenizer: lower-cased words hashed into a fixed vocabulary.

No vocabulary file and nothing to download: the data loader turns captions into
ids with it, and the built-in text encoder (jav.models.text_encoder) embeds them.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

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

    # Equal settings, equal tokenizers: a model keeps its tokenizer as a static attribute, so
    # two models of one config then share a graph definition (and a jitted step's cache entry).
    def __eq__(self, other):
        return isinstance(other, HashTokenizer) and (self.vocab_size, self.max_len) == (other.vocab_size, other.max_len)

    def __hash__(self):
        return hash((HashTokenizer, self.vocab_size, self.max_len))

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
