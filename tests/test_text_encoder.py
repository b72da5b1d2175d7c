"""Text encoders behind one interface and caption embeddings precomputed in the data
path: the frozen built-in encoder, embedding records in batches, the loader passing
text_emb instead of token ids, and the errors when model and shards disagree."""

import sys
import zlib

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import test as test_config
from jav.clip_tokens import frames_to_model
from jav.data.loader import _ToModel, make_loader, text_input_for
from jav.data.record import decode_record, encode_record
from jav.data.shards import open_shards, write_shards
from jav.data.text_embeddings import add_text_embeddings, embed_captions
from jav.frozen_text_encoder import BuiltinFrozenEncoder, load_text_encoder
from jav.models.av_dit import validate_config
from jav.models.layers import jit_init
from jav.models.text_encoder import TextEncoder
from jav.tokenizer import HashTokenizer

TEXT = ml_collections.ConfigDict(dict(encoder="builtin", vocab_size=64, max_len=8, width=16, dim=16, depth=1, heads=2))
CAPTIONS = ["a red ball", "a blue disc bouncing", "beep", "a red ball", "navy background", "beep"]


class FakeEncoder:
    """A deterministic stand-in: each caption's embedding is a function of its CRC32; records the batches it sees."""

    dim, max_len = 3, 4

    def __init__(self, scale=1.0):
        self.batches, self.scale = [], scale

    def encode(self, texts):
        self.batches.append(list(texts))
        codes = np.array([zlib.crc32(t.encode()) % 1000 for t in texts], np.float32)
        emb = self.scale * (codes[:, None, None] + np.arange(12, dtype=np.float32).reshape(1, 4, 3))
        mask = np.arange(4)[None] < np.array([1 + len(t.split()) for t in texts])[:, None]
        return emb * mask[..., None], mask


@pytest.fixture(scope="module")
def builtin():
    return jit_init(lambda cfg, rngs: TextEncoder(cfg, rngs=rngs, dtype="float32", param_dtype="float32"), TEXT, jax.random.key(0))


def test_builtin_frozen_encoder_equals_the_module(builtin):
    enc = load_text_encoder("builtin", module=builtin)
    assert isinstance(enc, BuiltinFrozenEncoder) and (enc.dim, enc.max_len) == (16, 8)
    emb, mask = enc.encode(CAPTIONS[:2])
    ids, want_mask = builtin.tokenizer.encode(CAPTIONS[:2])
    np.testing.assert_array_equal(mask, want_mask)
    assert emb.dtype == np.float32 and emb.shape == (2, 8, 16)
    np.testing.assert_allclose(emb, np.asarray(nnx.jit(lambda m, i, k: m(i, k))(builtin, ids, want_mask)), rtol=1e-6, atol=1e-6)
    assert np.abs(emb[0] - emb[1])[mask[0] & mask[1]].max() > 1e-3  # captions are told apart


def test_spec_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the optional extra were not installed
    with pytest.raises(ImportError, match="pip install -r requirements-hf.txt"):
        load_text_encoder("hf:/models/t5")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unknown text encoder spec 'clip:x'"):
        load_text_encoder("clip:x")
    with pytest.raises(ValueError, match="'builtin' needs trained weights"):
        load_text_encoder("builtin")
    with pytest.raises(ValueError, match="'hf:' needs a directory"):
        load_text_encoder("hf:")


def test_embed_captions_pads_the_last_batch_and_matches_one_by_one():
    enc = FakeEncoder()
    emb, mask = embed_captions(enc, CAPTIONS[:5], batch_size=2)
    assert [len(b) for b in enc.batches] == [2, 2, 2]  # one shape for a jitted encoder
    assert emb.shape == (5, 4, 3) and mask.shape == (5, 4)
    for i, c in enumerate(CAPTIONS[:5]):
        one_emb, one_mask = FakeEncoder().encode([c])
        np.testing.assert_array_equal(emb[i], one_emb[0])
        np.testing.assert_array_equal(mask[i], one_mask[0])


def test_add_text_embeddings_to_records():
    enc = FakeEncoder()
    records = [{"caption": c, "seed": i} for i, c in enumerate(CAPTIONS)]
    out = list(add_text_embeddings(iter(records), enc, batch_size=4))
    assert [r["seed"] for r in out] == list(range(6))
    assert sum(len(b) for b in enc.batches) == 8  # 4 distinct captions, each batch padded to 4
    want, want_mask = embed_captions(FakeEncoder(), CAPTIONS, batch_size=1)
    for r, w, m in zip(out, want, want_mask):
        assert r["text_emb"].dtype == np.float16 and r["text_mask"].dtype == bool
        np.testing.assert_array_equal(r["text_emb"], w.astype(np.float16))
        np.testing.assert_array_equal(r["text_mask"], m)
    with pytest.raises(ValueError, match="overflow float16.*dtype='float32'"):
        list(add_text_embeddings(records, FakeEncoder(scale=1e3), batch_size=4))
    big = list(add_text_embeddings(records, FakeEncoder(scale=1e3), batch_size=4, dtype="float32"))
    assert big[0]["text_emb"].dtype == np.float32


def clip(i, caption):
    rng = np.random.default_rng(i)
    return {
        "video": rng.integers(0, 255, (2, 4, 4, 3), dtype=np.uint8),
        "audio": rng.standard_normal((4, 2)).astype(np.float32),
        "caption": caption,
        "fps": 8.0,
        "sample_rate": 16000,
        "duration": 0.25,
        "metadata": {"seed": i},
    }


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory, builtin):
    plain = [clip(i, c) for i, c in enumerate(CAPTIONS)]
    with_emb = list(add_text_embeddings(plain, load_text_encoder("builtin", module=builtin), batch_size=8))
    dirs = {}
    for name, recs in (("plain", plain), ("emb", with_emb)):
        dirs[name] = str(tmp_path_factory.mktemp(name))
        write_shards(recs, dirs[name], records_per_shard=4)
    return dirs


def test_loader_passes_precomputed_embeddings(shard_dirs):
    _, source = open_shards(shard_dirs["emb"])
    stored = {}
    for i in range(len(source)):
        rec = decode_record(source[i])
        stored[rec["metadata"]["seed"]] = rec
    assert stored[0]["text_emb"].dtype == np.float16 and stored[0]["text_emb"].shape == (8, 16)
    video_seed = {frames_to_model(clip(i, "")["video"]).tobytes(): i for i in range(6)}
    batch = next(make_loader(shard_dirs["emb"], batch_size=3, seed=0, text_input="embeddings", text_dim=16))
    assert set(batch) == {"video", "audio", "text_emb", "text_mask"}
    assert batch["text_emb"].shape == (3, 8, 16) and batch["text_emb"].dtype == np.float32
    for j in range(3):
        seed = video_seed[batch["video"][j].tobytes()]
        np.testing.assert_array_equal(batch["text_emb"][j], stored[seed]["text_emb"].astype(np.float32))
        np.testing.assert_array_equal(batch["text_mask"][j], stored[seed]["text_mask"])
    # the same shards still serve a built-in-encoder model from their captions
    ids = next(make_loader(shard_dirs["emb"], batch_size=3, seed=0, tokenizer_len=8))
    assert set(ids) == {"video", "audio", "text_ids", "text_mask"} and ids["text_ids"].shape == (3, 8)


def test_loader_errors_when_model_and_shards_disagree(shard_dirs):
    with pytest.raises(ValueError, match="records have no text_emb.*--text-encoder SPEC"):
        next(make_loader(shard_dirs["plain"], batch_size=2, seed=0, text_input="embeddings"))
    with pytest.raises(ValueError, match="16 wide but model.text.dim=32"):
        next(make_loader(shard_dirs["emb"], batch_size=2, seed=0, text_input="embeddings", text_dim=32))
    with pytest.raises(ValueError, match="text_input='emb' is not one of"):
        make_loader(shard_dirs["emb"], batch_size=2, seed=0, text_input="emb")
    only_emb = dict(clip(0, ""), text_emb=np.zeros((8, 16), np.float16), text_mask=np.ones(8, bool))
    with pytest.raises(ValueError, match="hold only precomputed text embeddings"):
        _ToModel(HashTokenizer(64, 8))(decode_record(encode_record(**only_emb)))


def test_model_config_picks_the_text_input():
    model = test_config.get_config().model
    assert text_input_for(model.text) == "ids"
    model.text.encoder = "precomputed"
    validate_config(model)
    assert text_input_for(model.text) == "embeddings"
    model.text.encoder = "t5"
    with pytest.raises(ValueError, match="model.text.encoder='t5' is not one of"):
        validate_config(model)
