"""The T5 / UMT5 text encoder stack in Flax NNX, loaded from a local Hugging Face
directory (config.json + model.safetensors or pytorch_model.bin): frozen caption
embeddings [B, L, D] for models trained on precomputed text.

The forward pass follows the T5 papers: token embedding, then per layer a
pre-norm self-attention whose logits are q·k (no 1/sqrt(d) scaling) plus a
learned relative-position bias, and a pre-norm feed-forward (ReLU in the
original T5, gated GELU in T5 v1.1, mT5 and UMT5); a final norm. The norm is
RMS without mean subtraction or bias. T5 and mT5 learn one bias table in the
first layer and share it; UMT5 learns one per layer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import re
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

# model_type in config.json -> whether every layer has its own relative-position bias
ARCHITECTURES = {"t5": False, "mt5": False, "umt5": True}
_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    num_buckets: int
    max_distance: int
    eps: float
    gated: bool
    activation: str
    bias_per_layer: bool

    @classmethod
    def from_hf(cls, hf: dict, where: str = "config.json") -> "T5Config":
        """A Hugging Face config.json dict -> T5Config (encoder side only)."""
        model_type = hf.get("model_type")
        if model_type not in ARCHITECTURES:
            raise ValueError(f"{where}: model_type={model_type!r} is not a T5-family encoder jav can load; supported: {sorted(ARCHITECTURES)}")
        proj = hf.get("feed_forward_proj", "relu")
        parts = proj.split("-")
        gated = parts[0] == "gated"
        act = parts[-1]
        if gated and act == "gelu":
            act = "gelu_new"  # Hugging Face's convention: gated-gelu means the tanh approximation
        if act not in _ACTIVATIONS or len(parts) > 2 or (len(parts) == 2 and not gated):
            raise ValueError(f"{where}: feed_forward_proj={proj!r} is not supported; use one of {sorted(_ACTIVATIONS)} or gated-<that>")
        return cls(
            vocab_size=hf["vocab_size"],
            d_model=hf["d_model"],
            d_kv=hf["d_kv"],
            d_ff=hf["d_ff"],
            num_layers=hf["num_layers"],
            num_heads=hf["num_heads"],
            num_buckets=hf.get("relative_attention_num_buckets", 32),
            max_distance=hf.get("relative_attention_max_distance", 128),
            eps=hf.get("layer_norm_epsilon", 1e-6),
            gated=gated,
            activation=act,
            bias_per_layer=ARCHITECTURES[model_type],
        )


def relative_position_bucket(relative: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 buckets of key - query offsets: half the buckets for each
    sign; within a half, exact offsets below num_buckets / 4, then logarithmic bins
    up to max_distance, everything beyond in the last bin."""
    half = num_buckets // 2
    bucket = np.where(relative > 0, half, 0)
    distance = np.abs(relative)
    exact = half // 2
    with np.errstate(divide="ignore"):
        log_bin = exact + (np.log(np.maximum(distance, 1) / exact) / math.log(max_distance / exact) * (half - exact)).astype(np.int64)
    return bucket + np.where(distance < exact, distance, np.minimum(log_bin, half - 1))


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """T5's layer norm: scale by the root mean square (in float32), no mean, no bias."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight * y.astype(weight.dtype)


def _zeros(shape, dtype):
    return nnx.Param(jnp.zeros(shape, dtype))


class T5Attention(nnx.Module):
    def __init__(self, cfg: T5Config, has_bias: bool, dtype):
        inner = cfg.num_heads * cfg.d_kv
        self.q, self.k, self.v = (_zeros((cfg.d_model, inner), dtype) for _ in range(3))  # [D, H * dk]
        self.o = _zeros((inner, cfg.d_model), dtype)
        self.bias = _zeros((cfg.num_buckets, cfg.num_heads), dtype) if has_bias else None
        self.heads = cfg.num_heads

    def position_bias(self, buckets: jax.Array) -> jax.Array:
        """buckets [L, L] -> bias [H, L, L] in float32."""
        return jnp.take(self.bias[...], buckets, axis=0).astype(jnp.float32).transpose(2, 0, 1)

    def __call__(self, x: jax.Array, bias: jax.Array, mask: jax.Array) -> jax.Array:
        b, length, _ = x.shape
        q, k, v = ((x @ w[...]).reshape(b, length, self.heads, -1) for w in (self.q, self.k, self.v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) + bias  # no 1/sqrt(d)
        logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, length, -1)
        return out @ self.o[...]


class T5FeedForward(nnx.Module):
    def __init__(self, cfg: T5Config, dtype):
        self.wi = _zeros((cfg.d_model, cfg.d_ff), dtype)
        self.wi_gate = _zeros((cfg.d_model, cfg.d_ff), dtype) if cfg.gated else None
        self.wo = _zeros((cfg.d_ff, cfg.d_model), dtype)
        self.act = _ACTIVATIONS[cfg.activation]

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.wi_gate is None:
            h = self.act(x @ self.wi[...])
        else:
            h = self.act(x @ self.wi_gate[...]) * (x @ self.wi[...])
        return h @ self.wo[...]


class T5Layer(nnx.Module):
    def __init__(self, cfg: T5Config, has_bias: bool, dtype):
        self.attn_norm = _zeros((cfg.d_model,), dtype)
        self.attn = T5Attention(cfg, has_bias, dtype)
        self.ff_norm = _zeros((cfg.d_model,), dtype)
        self.ff = T5FeedForward(cfg, dtype)
        self.eps = cfg.eps

    def __call__(self, x, bias, mask):
        x = x + self.attn(rms_norm(x, self.attn_norm[...], self.eps), bias, mask)
        return x + self.ff(rms_norm(x, self.ff_norm[...], self.eps))


class T5Encoder(nnx.Module):
    """ids int [B, L], mask bool [B, L] -> embeddings float32 [B, L, D], padding positions zeroed.

    Built with zero weights: `load_t5` fills them from a checkpoint.
    """

    def __init__(self, cfg: T5Config, dtype=jnp.float32):
        self.cfg = cfg
        self.embed = _zeros((cfg.vocab_size, cfg.d_model), dtype)
        self.layers = nnx.List([T5Layer(cfg, cfg.bias_per_layer or i == 0, dtype) for i in range(cfg.num_layers)])
        self.final_norm = _zeros((cfg.d_model,), dtype)

    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        cfg = self.cfg
        length = ids.shape[1]
        offsets = np.arange(length)[None, :] - np.arange(length)[:, None]  # key - query
        buckets = jnp.asarray(relative_position_bucket(offsets, cfg.num_buckets, cfg.max_distance))
        mask = mask.astype(bool)
        x = jnp.take(self.embed[...], ids, axis=0)  # [B, L, D]
        shared = self.layers[0].attn.position_bias(buckets)
        for layer in self.layers:
            bias = layer.attn.position_bias(buckets) if cfg.bias_per_layer else shared
            x = layer(x, bias, mask)
        x = rms_norm(x, self.final_norm[...], cfg.eps).astype(jnp.float32)
        return x * mask[..., None]


def _hf_names(cfg: T5Config) -> dict[str, tuple[str, bool]]:
    """jav parameter path -> (Hugging Face tensor name, transpose?); torch Linear weights are [out, in]."""
    names = {"embed": ("shared.weight", False), "final_norm": ("encoder.final_layer_norm.weight", False)}
    for i in range(cfg.num_layers):
        hf, jv = f"encoder.block.{i}.layer.", f"layers.{i}."
        for w in "qkvo":
            names[jv + f"attn.{w}"] = (hf + f"0.SelfAttention.{w}.weight", True)
        if cfg.bias_per_layer or i == 0:
            names[jv + "attn.bias"] = (hf + "0.SelfAttention.relative_attention_bias.weight", False)
        names[jv + "attn_norm"] = (hf + "0.layer_norm.weight", False)
        names[jv + "ff_norm"] = (hf + "1.layer_norm.weight", False)
        ff = hf + "1.DenseReluDense."
        if cfg.gated:
            names[jv + "ff.wi_gate"] = (ff + "wi_0.weight", True)
            names[jv + "ff.wi"] = (ff + "wi_1.weight", True)
        else:
            names[jv + "ff.wi"] = (ff + "wi.weight", True)
        names[jv + "ff.wo"] = (ff + "wo.weight", True)
    return names


def _weight_files(path: pathlib.Path) -> tuple[list[pathlib.Path], str]:
    """The checkpoint's weight files (one, or the shards an index names) and their format."""
    for single, index, fmt in (
        ("model.safetensors", "model.safetensors.index.json", "safetensors"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json", "torch"),
    ):
        if (path / single).exists():
            return [path / single], fmt
        if (path / index).exists():
            shards = sorted(set(json.loads((path / index).read_text())["weight_map"].values()))
            return [path / s for s in shards], fmt
    raise FileNotFoundError(
        f"{path}: no model.safetensors or pytorch_model.bin (nor a sharded index of either); "
        "point at a directory written by save_pretrained of a T5 / UMT5 encoder"
    )


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


def read_safetensors(path: pathlib.Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """The wanted tensors of one .safetensors file (names as `_strip` gives them), memory-mapped.

    The format is a little-endian uint64 header length, a JSON header of name -> dtype,
    shape and byte range, then the bytes; read here directly because the safetensors
    package's NumPy reader rejects bfloat16, the dtype of most large T5 checkpoints.
    """
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    data = np.memmap(path, np.uint8, mode="r", offset=8 + size)
    out = {}
    for name, spec in header.items():
        key = _strip(name)
        if name == "__metadata__" or key not in wanted:
            continue
        if spec["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {spec['dtype']}; jav reads {sorted(_SAFETENSORS_DTYPES)}")
        start, end = spec["data_offsets"]
        out[key] = data[start:end].view(_SAFETENSORS_DTYPES[spec["dtype"]]).reshape(spec["shape"])
    return out


def read_tensors(path: pathlib.Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """The named tensors of a Hugging Face checkpoint as NumPy arrays; safetensors needs no torch."""
    files, fmt = _weight_files(path)
    out = {}
    for f in files:
        if fmt == "safetensors":
            out.update(read_safetensors(f, wanted))
        else:
            try:
                import torch
            except ImportError as e:
                raise ImportError(
                    f"{f} is a PyTorch checkpoint: reading it needs torch (pip install -r requirements-hf.txt), or convert it to model.safetensors"
                ) from e
            for name, t in torch.load(f, map_location="cpu", weights_only=True).items():
                key = _strip(name)
                if key in wanted:
                    out[key] = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
    return out


_ENCODER_NAME = re.compile(r"(?:^|\.)(encoder\.(?:block|final_layer_norm)\..*)$")


def _strip(name: str) -> str:
    """A checkpoint tensor name -> the name `_hf_names` uses. Full T5 checkpoints name the token
    table shared or encoder.embed_tokens; some wrap everything in a prefix ("text_encoder.")."""
    if name == "shared.weight" or name.endswith((".shared.weight", "encoder.embed_tokens.weight")):
        return "shared.weight"
    m = _ENCODER_NAME.search(name)
    return m.group(1) if m else name


def load_t5(path, dtype: str = "float32") -> T5Encoder:
    """A T5 / mT5 / UMT5 encoder from a local Hugging Face directory, weights in `dtype` (float32 or bfloat16)."""
    path = pathlib.Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{path / 'config.json'} not found: give a local directory holding a Hugging Face "
            "T5 / UMT5 checkpoint (config.json + model.safetensors or pytorch_model.bin)"
        )
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype={dtype!r}: the T5 encoder runs in 'float32' or 'bfloat16'")
    cfg = T5Config.from_hf(json.loads((path / "config.json").read_text()), str(path / "config.json"))
    names = _hf_names(cfg)
    tensors = read_tensors(path, {hf for hf, _ in names.values()})
    missing = sorted(hf for hf, _ in names.values() if hf not in tensors)
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} encoder tensors, e.g. {missing[:3]}; is it a T5 / UMT5 checkpoint matching its config.json?")
    abstract = nnx.eval_shape(lambda: T5Encoder(cfg, jnp.dtype(dtype)))  # no memory for the zeros
    graphdef, state = nnx.split(abstract)
    flat = dict(nnx.to_flat_state(state))
    for jv, (hf, transpose) in names.items():
        key = tuple(int(p) if p.isdigit() else p for p in jv.split("."))
        want = tuple(flat[key].get_value().shape)
        want = want[::-1] if transpose else want  # in the checkpoint's layout
        if tensors[hf].shape != want:
            raise ValueError(f"{path}: tensor {hf} has shape {tensors[hf].shape}, config.json implies {want}")
        flat[key].set_value(jnp.asarray(tensors[hf].T if transpose else tensors[hf], dtype))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


@functools.partial(jax.jit, static_argnames="graphdef")
def _encode(graphdef, state, ids, mask):
    return nnx.merge(graphdef, state)(ids, mask)


def encode_ids(model: T5Encoder, ids, mask) -> jax.Array:
    """Jitted forward of a loaded encoder: one compile per (batch, length)."""
    graphdef, state = nnx.split(model)
    return _encode(graphdef, state, jnp.asarray(ids), jnp.asarray(mask))
