"""Wan's transformer (diffusers `WanTransformer3DModel`) to the video branch of a jav
run directory and back.

    python -m jav.convert wan SRC --workdir OUT           # diffusers folder -> jav run (EMA = params)
    python -m jav.convert wan-export RUN --out DIR        # the run's video branch -> config.json + safetensors

The jav model is configs/wan.py's `model()` at the sizes SRC's config.json names;
every option of the diffusers class that jav does not express is refused by name
(`model_config`). Tensors are read one at a time and written into memory-mapped
parameters under the workdir, and Orbax writes the checkpoint from those files, as
for LTX-2 (jav.convert.ltx2), so memory holds a few tensors, not the model. The audio
branch, which Wan lacks, is initialised afresh (seeded; its initialisation computes
only the audio parameters).

Names: a Linear's weight [out, in] is the transposed kernel of jav's `Dense`, reshaped
to its (in..., out...) axes (heads and head dims apart); the Conv3d patch embedding
[dim, C, pt, ph, pw], whose stride is its kernel, is jav's patch-token Dense with
inputs in `patch.patchify_video`'s (pt, ph, pw, C) order; the (1, K, dim) tables are
jav's (K, dim); block b's tensors are row b of the stacked `groups/layers/0/...`.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import NamedTuple

import ml_collections
import numpy as np
from flax import nnx

from jav.convert.ltx2 import abstract_params, main_dtype, write_run
from jav.convert.safetensors_io import SafetensorsReader, read_config, write_safetensors

CLASS_NAME = "WanTransformer3DModel"
# diffusers options jav expresses only at these values (image_dim and the rest: Wan's
# image-to-video path, whose image tokens jav's text attention has no place for)
REQUIRED = dict(freq_dim=256, cross_attn_norm=True, eps=1e-6, image_dim=None, added_kv_proj_dim=None, pos_embed_seq_len=None)
# diffusers builds QK RMS-norms across heads whatever `qk_norm` says; rope_max_seq_len only
# bounds the grid diffusers can rotate (jav computes any position): written back as these
EXPORTED = dict(qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def model_config(hf: dict, dtype: str = "float32") -> ml_collections.ConfigDict:
    """jav's model config for a diffusers Wan transformer config (its config.json);
    errors name each diffusers option jav cannot express."""
    from configs import wan

    if hf.get("_class_name", CLASS_NAME) != CLASS_NAME:
        raise ValueError(f"diffusers config _class_name={hf['_class_name']!r}: this converter reads {CLASS_NAME}")
    for key, want in REQUIRED.items():
        if key in hf and hf[key] != want:
            raise ValueError(f"diffusers config {key}={hf[key]!r}: jav's Wan supports only {want!r}")
    if hf.get("out_channels") not in (None, hf["in_channels"]):
        raise ValueError(f"diffusers config: out_channels={hf['out_channels']} must equal in_channels={hf['in_channels']}")
    heads, head_dim = hf["num_attention_heads"], hf["attention_head_dim"]
    return wan.model(
        dim=heads * head_dim,
        heads=heads,
        depth=hf["num_layers"],
        ffn_dim=hf["ffn_dim"],
        channels=hf["in_channels"],
        patch=tuple(hf["patch_size"]),
        text_dim=hf["text_dim"],
        dtype=dtype,
        **wan.audio_sizes(wan.size_of(heads * head_dim, hf["num_layers"])),  # configs/wan.py's audio branch for that size
    )


def diffusers_config(m) -> dict:
    """The diffusers config.json of a jav Wan model config (the inverse of `model_config`)."""
    v = m.video
    return dict(
        _class_name=CLASS_NAME,
        **REQUIRED,
        **EXPORTED,
        patch_size=list(v.patch),
        num_attention_heads=v.heads,
        attention_head_dim=v.width // v.heads,
        in_channels=v.channels,
        out_channels=v.channels,
        text_dim=m.text.dim,
        ffn_dim=int(v.width * v.mlp_ratio),
        num_layers=m.depth,
    )


# the model keys that decide what the video branch computes alone
VIDEO_KEYS = (
    "video",
    "norm",
    "text_norm",
    "qk_norm",
    "qk_norm_across_heads",
    "abs_pos",
    "prediction",
    "guidance_embed",
    "interval_embed",
    "rope",
    "text.dim",
    "lora.rank",
)


def check_exportable(m, what: str = "the run") -> None:
    """Raises, naming the keys, unless the video branch of model config `m` is a Wan transformer
    (configs/wan.py's model at some size: what `diffusers_config` can describe)."""
    from jav.models.av_dit import modulation_names

    def value(cfg, key):
        for part in key.split("."):
            cfg = cfg[part]
        return json.loads(json.dumps(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg))

    want = model_config(diffusers_config(m))
    differ = [f"model.{k}={value(m, k)!r} (Wan: {value(want, k)!r})" for k in VIDEO_KEYS if value(m, k) != value(want, k)]
    if len(modulation_names(m, "video")) != 6:
        differ.append(f"model.joint.adaln={m.joint.adaln!r} with joint.mode={m.joint.mode!r} (Wan: 6 AdaLN chunks; joint.adaln 'own')")
    if differ:
        raise ValueError(f"{what}: the video branch is not a Wan transformer: " + "; ".join(differ))


class Entry(NamedTuple):
    hf: str  # diffusers tensor name
    path: tuple  # jav parameter path
    layer: int | None  # row of a stacked (per-block) parameter
    kind: str  # "linear" (a Linear weight), "conv" (the patch embedding's weight) or "flat" (reshaped only)
    linear_in: int = 1  # a Linear weight: how many of the kernel's leading axes are inputs


def _linear(hf: str, path: tuple, layer=None, n_in=1) -> list[Entry]:
    return [Entry(f"{hf}.weight", path + ("kernel",), layer, "linear", n_in), Entry(f"{hf}.bias", path + ("bias",), layer, "flat")]


def _attention(hf: str, path: tuple, layer: int) -> list[Entry]:
    out = []
    for src, dst in (("to_q", "q"), ("to_k", "k"), ("to_v", "v")):
        out += _linear(f"{hf}.{src}", path + ("proj", dst), layer)
    out += _linear(f"{hf}.to_out.0", path + ("proj", "o"), layer, n_in=2)
    out += [
        Entry(f"{hf}.norm_q.weight", path + ("proj", "q_norm", "scale"), layer, "flat"),
        Entry(f"{hf}.norm_k.weight", path + ("proj", "k_norm", "scale"), layer, "flat"),
    ]
    return out


def tensor_map(depth: int) -> list[Entry]:
    """Every diffusers tensor of a Wan transformer of `depth` blocks and its jav parameter (video branch)."""
    cond = "condition_embedder"
    out = [Entry("patch_embedding.weight", ("embed", "video", "kernel"), None, "conv"), Entry("patch_embedding.bias", ("embed", "video", "bias"), None, "flat")]
    out += _linear(f"{cond}.time_embedder.linear_1", ("time", "video", "fc1")) + _linear(f"{cond}.time_embedder.linear_2", ("time", "video", "fc2"))
    out += _linear(f"{cond}.time_proj", ("adaln", "video", "proj"))
    out += _linear(f"{cond}.text_embedder.linear_1", ("caption", "video", "fc1")) + _linear(f"{cond}.text_embedder.linear_2", ("caption", "video", "fc2"))
    out += [Entry("scale_shift_table", ("final", "video", "table"), None, "flat")] + _linear("proj_out", ("final", "video", "proj"))
    for b in range(depth):
        blk, layer = f"blocks.{b}", ("groups", "layers", 0, "video")
        out += _attention(f"{blk}.attn1", layer + ("self_attn",), b) + _attention(f"{blk}.attn2", layer + ("text_attn",), b)
        out += [Entry(f"{blk}.norm2.weight", layer + ("text_norm", "scale"), b, "flat"), Entry(f"{blk}.norm2.bias", layer + ("text_norm", "bias"), b, "flat")]
        out += _linear(f"{blk}.ffn.net.0.proj", layer + ("mlp", "up"), b) + _linear(f"{blk}.ffn.net.2", layer + ("mlp", "down"), b)
        out += [Entry(f"{blk}.scale_shift_table", layer + ("table",), b, "flat")]
    return out


def hf_shapes(hf: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a diffusers Wan transformer of config `hf` (no torch needed)."""
    dim, ffn, text, freq = hf["num_attention_heads"] * hf["attention_head_dim"], hf["ffn_dim"], hf["text_dim"], hf["freq_dim"]
    channels, patch = hf["in_channels"], tuple(hf["patch_size"])
    cond = "condition_embedder"
    linears = {
        f"{cond}.time_embedder.linear_1": (dim, freq),
        f"{cond}.time_embedder.linear_2": (dim, dim),
        f"{cond}.time_proj": (6 * dim, dim),
        f"{cond}.text_embedder.linear_1": (dim, text),
        f"{cond}.text_embedder.linear_2": (dim, dim),
        "proj_out": (channels * math.prod(patch), dim),
    }
    out = {"patch_embedding.weight": (dim, channels) + patch, "patch_embedding.bias": (dim,), "scale_shift_table": (1, 2, dim)}
    for b in range(hf["num_layers"]):
        blk = f"blocks.{b}"
        for attn in ("attn1", "attn2"):
            linears.update({f"{blk}.{attn}.{p}": (dim, dim) for p in ("to_q", "to_k", "to_v", "to_out.0")})
            out.update({f"{blk}.{attn}.norm_q.weight": (dim,), f"{blk}.{attn}.norm_k.weight": (dim,)})
        linears.update({f"{blk}.ffn.net.0.proj": (ffn, dim), f"{blk}.ffn.net.2": (dim, ffn)})
        out.update({f"{blk}.norm2.weight": (dim,), f"{blk}.norm2.bias": (dim,), f"{blk}.scale_shift_table": (1, 6, dim)})
    for name, shape in linears.items():
        out.update({f"{name}.weight": shape, f"{name}.bias": shape[:1]})
    return out


def to_jav_tensor(x: np.ndarray, e: Entry, shape: tuple) -> np.ndarray:
    """A diffusers tensor -> the jav parameter (one block's row) of `shape`."""
    if e.kind == "linear":
        x = x.T
    elif e.kind == "conv":  # [dim, C, pt, ph, pw] -> [(pt ph pw C), dim]
        x = x.transpose(2, 3, 4, 1, 0)
    return x.reshape(shape)


def to_hf_tensor(x: np.ndarray, e: Entry, shape: tuple) -> np.ndarray:
    """A jav parameter (one block's row) -> the diffusers tensor of `shape` (inverse of `to_jav_tensor`)."""
    if e.kind == "linear":
        return x.reshape(math.prod(x.shape[: e.linear_in]), -1).T.reshape(shape)
    if e.kind == "conv":
        dim, channels, *patch = shape
        return x.reshape(*patch, channels, dim).transpose(4, 3, 0, 1, 2)
    return x.reshape(shape)


def _fresh_audio(cfg_model, paths, seed: int) -> dict:
    """The parameters at `paths` (the audio branch) of an AVDiT initialised from `seed`:
    one jitted initialisation whose other outputs XLA drops, so only these are computed."""
    import jax

    from jav.models import AVDiT

    names = {"/".join(map(str, p)): p for p in paths}

    def make(key):
        flat = dict(nnx.to_flat_state(nnx.state(AVDiT(cfg_model, rngs=nnx.Rngs(params=key)))))
        return {n: flat[p].get_value() for n, p in names.items()}

    return {names[n]: np.asarray(v) for n, v in jax.jit(make)(jax.random.key(seed)).items()}


def to_jav(src, workdir, dtype: str | None = None, seed: int = 0) -> ml_collections.ConfigDict:
    """Converts a diffusers Wan transformer folder `src` into the video branch of the jav run
    directory `workdir` (config.json and step 0 with EMA = params) -> the run's config.
    `dtype`: the parameters' dtype (default: the weights' own); `seed`: the audio branch's."""
    from configs import wan

    src, workdir = pathlib.Path(src), pathlib.Path(workdir)
    hf_cfg = read_config(src)
    reader = SafetensorsReader(src)
    dtype = dtype or main_dtype(reader)
    model_cfg = model_config(hf_cfg, dtype)
    cfg = wan.get_config(wan.size_of(model_cfg.video.width, model_cfg.depth))  # that size's data and sampling settings (1.3b's for others)
    cfg.model = model_cfg
    _, state = abstract_params(cfg.model)
    flat = dict(nnx.to_flat_state(state))
    entries = tensor_map(cfg.model.depth)
    names = set(reader.names())
    missing, unused = sorted(set(e.hf for e in entries) - names), sorted(names - set(e.hf for e in entries))
    if missing or unused:
        raise ValueError(f"{src}: tensors jav needs but the checkpoint lacks: {missing[:8]}; tensors jav has no place for: {unused[:8]}")
    shapes = hf_shapes({**REQUIRED, **hf_cfg})
    wrong = [f"{n} {reader.shape(n)} (config.json makes {shapes[n]})" for n in sorted(names) if reader.shape(n) != shapes[n]]
    if wrong:
        raise ValueError(f"{src}: tensors of the wrong shape: {wrong[:4]}")
    mapped = set(e.path for e in entries)
    if mapped - set(flat):
        raise ValueError(f"the Wan tensor map names parameters jav lacks: {sorted(mapped - set(flat))[:8]}")
    audio = [p for p in flat if p not in mapped]
    if any("audio" not in p for p in audio):
        raise ValueError(f"the Wan tensor map misses video parameters: {[p for p in audio if 'audio' not in p][:8]}")

    write_run(workdir, cfg, flat, entries, reader, to_jav_tensor, preset=_fresh_audio(cfg.model, audio, seed))
    return cfg


def to_diffusers(run, out, weights: str = "ema", step: int | None = None) -> pathlib.Path:
    """Writes the video branch of a jav Wan run's `weights` as a diffusers transformer folder
    `out` (config.json and diffusion_pytorch_model.safetensors) -> the safetensors path."""
    from jav.runs import load_run

    cfg, model, _ = load_run(run, weights=weights, step=step)
    check_exportable(cfg.model, what=str(run))
    flat = {path: np.asarray(var.get_value()) for path, var in nnx.to_flat_state(nnx.state(model))}
    hf_cfg = diffusers_config(cfg.model)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2))
    entries = {e.hf: e for e in tensor_map(cfg.model.depth)}
    shapes = hf_shapes(hf_cfg)

    def tensor(name: str) -> np.ndarray:
        e = entries[name]
        x = flat[e.path] if e.layer is None else flat[e.path][e.layer]
        return to_hf_tensor(x, e, shapes[name])

    path = out / WEIGHTS_NAME
    write_safetensors(path, [(n, shapes[n], flat[e.path].dtype) for n, e in sorted(entries.items())], tensor, metadata={"format": "pt"})
    return path
