"""jav's T5 / UMT5 encoder against the PyTorch models of `transformers` on the same
random weights: tiny T5 v1.1 (gated GELU), original T5 (ReLU) and UMT5 (per-layer
position bias) saved to a temporary directory, loaded by jav, equal embeddings."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

transformers = pytest.importorskip("transformers", reason="Hugging Face text encoders are optional: pip install -r requirements-hf.txt")
torch = pytest.importorskip("torch", reason="the reference models need torch: pip install -r requirements-hf.txt")

from jav.frozen_text_encoder import load_text_encoder  # noqa: E402
from jav.models import t5  # noqa: E402

WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "ball", "disc", "bouncing", "on", "navy", "background", "beep"]
# max_distance 8 < the test length: the logarithmic bins and the last bin are exercised
TINY = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=8)
ARCHS = {"t5_v1_1": ("T5", "gated-gelu"), "t5_relu": ("T5", "relu"), "umt5": ("UMT5", "gated-gelu")}


def save_tokenizer(path):
    """A word-level tokenizer built here (no download) that appends </s> like T5's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch -> (directory, PyTorch reference encoder)."""
    torch.manual_seed(0)
    out = {}
    for name, (family, proj) in ARCHS.items():
        config = getattr(transformers, f"{family}Config")(feed_forward_proj=proj, **TINY)
        model = getattr(transformers, f"{family}EncoderModel")(config).eval()
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        if name == "t5_relu":  # this one goes through the pytorch_model.bin reader, the others through safetensors
            (path / "model.safetensors").unlink()
            torch.save(model.state_dict(), path / "pytorch_model.bin")
        save_tokenizer(path)
        out[name] = (path, model)
    return out


def reference(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()


def ids_and_mask():
    rng = np.random.default_rng(0)
    ids = rng.integers(2, TINY["vocab_size"], (2, 12)).astype(np.int32)
    mask = np.ones((2, 12), bool)
    mask[1, 7:] = False
    ids[~mask] = 0
    return ids, mask


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_embeddings_equal_pytorch_on_same_weights(saved, arch):
    path, ref = saved[arch]
    assert any(path.glob("model.safetensors" if arch != "t5_relu" else "pytorch_model.bin"))
    ids, mask = ids_and_mask()
    want = reference(ref, ids, mask)
    got = np.asarray(t5.encode_ids(t5.load_t5(path), ids, mask))
    assert got.dtype == np.float32 and got.shape == want.shape
    rel = np.abs(got - want)[mask].max() / np.abs(want[mask]).max()
    assert rel < 1e-5, rel
    assert not got[~mask].any()  # padding zeroed


def test_bfloat16_weights_stay_close(saved):
    path, ref = saved["umt5"]
    ids, mask = ids_and_mask()
    want = reference(ref, ids, mask)
    model = t5.load_t5(path, "bfloat16")
    assert model.layers[0].attn.q[...].dtype == np.dtype("bfloat16")
    got = np.asarray(t5.encode_ids(model, ids, mask))
    rel = np.abs(got - want)[mask].max() / np.abs(want[mask]).max()
    assert 0 < rel < 3e-2, rel


def test_buckets_equal_transformers():
    rel = np.arange(-300, 301)[None, :]
    for buckets, distance in ((32, 128), (8, 8), (16, 40)):
        want = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
            torch.tensor(rel), bidirectional=True, num_buckets=buckets, max_distance=distance
        ).numpy()
        np.testing.assert_array_equal(t5.relative_position_bucket(rel, buckets, distance), want)


def test_frozen_interface_tokenises_like_transformers(saved):
    path, ref = saved["t5_v1_1"]
    enc = load_text_encoder(f"hf:{path}", max_len=12)  # the shape compiled above
    assert (enc.dim, enc.max_len) == (32, 12)
    texts = ["a red ball bouncing on a navy background", "beep"]
    emb, mask = enc.encode(texts)
    tokens = transformers.AutoTokenizer.from_pretrained(path)(texts, padding="max_length", max_length=12, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(mask, tokens["attention_mask"].astype(bool))
    assert mask.sum(1).tolist() == [9, 2]  # 8 words + </s>; 1 word + </s>
    want = reference(ref, tokens["input_ids"], tokens["attention_mask"])
    assert emb.dtype == np.float32 and emb.shape == (2, 12, 32)
    np.testing.assert_allclose(emb[mask], want[mask], rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_clear_errors(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_text_encoder(f"hf:{tmp_path / 'nowhere'}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type='bert' is not a T5-family encoder"):
        t5.load_t5(tmp_path)
    path, _ = saved["umt5"]
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        t5.load_t5(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "d_ff": 48}))
    (tmp_path / "model.safetensors").symlink_to(path / "model.safetensors")
    with pytest.raises(ValueError, match=r"wi_0.weight has shape \(64, 32\), config.json implies \(48, 32\)"):
        t5.load_t5(tmp_path)
    with pytest.raises(ValueError, match="'float32' or 'bfloat16'"):
        t5.load_t5(path, "float16")


def test_bfloat16_checkpoint_with_prefixed_names(saved, tmp_path):
    """Large T5 checkpoints are bfloat16 and may wrap the encoder in a prefix or carry a decoder."""
    from safetensors.torch import save_file

    path, model = saved["umt5"]
    tensors = {f"text_encoder.{k}": v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    tensors["decoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(3, 3)
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    got, want = nnx.state(t5.load_t5(tmp_path, "bfloat16")), nnx.state(t5.load_t5(path, "bfloat16"))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.dtype == b.dtype == np.dtype("bfloat16")
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
