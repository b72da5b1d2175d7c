"""LTX-2's text connectors (diffusers `LTX2TextConnectors`) into jav's
`jav.models.ltx2_text.TextConnectors`, tensor by tensor.

    connectors = load_connectors("LTX-2/connectors")     # a diffusers folder: config.json + safetensors
    video, audio, mask = connectors(gemma_states, gemma_mask)

Names follow jav.convert.ltx2: a Linear's weight [out, in] is the transposed
kernel of jav's `Dense` reshaped to its axes (heads and head dims apart), the QK
norms' [H * Dh] scales are (H, Dh). Options of the diffusers class that jav does
not express (gated attention, causal temporal positions) are refused by name.
"""

from __future__ import annotations

import pathlib

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jav.convert.ltx2 import Entry, _attention, _linear, hf_shape, to_hf_tensor, to_jav_tensor
from jav.convert.safetensors_io import SafetensorsReader, read_config
from jav.models.ltx2_text import STREAMS, TextConnectors, connectors_config

# diffusers options jav expresses only at these values
REQUIRED = dict(video_gated_attn=False, audio_gated_attn=False, causal_temporal_positioning=False, rope_double_precision=True)


def config_from_diffusers(hf: dict) -> ml_collections.ConfigDict:
    """A diffusers `LTX2TextConnectors` config.json -> jav's connectors config."""
    wrong = {k: hf[k] for k, v in REQUIRED.items() if k in hf and hf[k] != v}
    if wrong:
        raise ValueError(f"LTX-2 text connectors with {wrong}: jav's connectors take {REQUIRED}")
    g = lambda key, default: hf.get(key, default)  # noqa: E731  (diffusers leaves defaults out of some configs)
    return connectors_config(
        caption_channels=g("caption_channels", 3840),
        layers=g("text_proj_in_factor", 49),
        heads=g("video_connector_num_attention_heads", 30),
        head_dim=g("video_connector_attention_head_dim", 128),
        depth=g("video_connector_num_layers", 2),
        registers=g("video_connector_num_learnable_registers", 128) or 0,
        audio_heads=g("audio_connector_num_attention_heads", 30),
        audio_head_dim=g("audio_connector_attention_head_dim", 128),
        audio_depth=g("audio_connector_num_layers", 2),
        audio_registers=g("audio_connector_num_learnable_registers", 128) or 0,
        base_seq_len=g("connector_rope_base_seq_len", 4096),
        theta=g("rope_theta", 10_000.0),
        rope_pairs=g("rope_type", "interleaved"),
        per_modality_projections=g("per_modality_projections", False),
        video_dim=g("video_hidden_dim", 4096),
        audio_dim=g("audio_hidden_dim", 2048),
        proj_bias=g("proj_bias", False),
    )


def tensor_map(cfg) -> list[Entry]:
    """Every diffusers tensor of the connectors and its jav parameter."""

    def linear(hf, path):
        return _linear(hf, path) if cfg.proj_bias else _linear(hf, path)[:1]

    out = []
    if cfg.per_modality_projections:
        for m in STREAMS:
            out += linear(f"{m}_text_proj_in", ("proj_in", m))
    else:
        out += linear("text_proj_in", ("proj_in",))
    for m in STREAMS:
        hf, path = f"{m}_connector", ("connectors", m)
        if cfg[m].registers:
            out.append(Entry(f"{hf}.learnable_registers", path + ("registers",), None, 0, None))
        for b in range(cfg[m].depth):
            block, at = f"{hf}.transformer_blocks.{b}", path + ("blocks", b)
            out += _attention(f"{block}.attn1", at + ("attn",), None)
            out += _linear(f"{block}.ff.net.0.proj", at + ("mlp", "up")) + _linear(f"{block}.ff.net.2", at + ("mlp", "down"))
    return out


def connectors_from_tensors(tensors, hf_cfg: dict, dtype: str = "float32") -> TextConnectors:
    """`tensors` (name -> array: a dict, or a SafetensorsReader) of a diffusers connectors model
    whose config is `hf_cfg` -> jav's TextConnectors holding them, parameters and compute in `dtype`."""
    cfg = config_from_diffusers(hf_cfg)
    model = nnx.eval_shape(lambda: TextConnectors(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype))
    graphdef, state = nnx.split(model)
    flat = dict(nnx.to_flat_state(state))
    entries = tensor_map(cfg)
    names = set(tensors.names()) if hasattr(tensors, "names") else set(tensors)
    missing, unused = sorted({e.hf for e in entries} - names), sorted(names - {e.hf for e in entries})
    if missing or unused:
        raise ValueError(f"LTX-2 text connectors: tensors jav needs but the checkpoint lacks: {missing[:8]}; tensors jav has no place for: {unused[:8]}")
    if {e.path for e in entries} != set(flat):
        raise ValueError(f"the connectors' tensor map misses jav parameters: {sorted(set(flat) - {e.path for e in entries})[:8]}")
    values = {e.path: jnp.asarray(to_jav_tensor(np.asarray(tensors[e.hf], np.float32), e, flat[e.path].get_value().shape), dtype) for e in entries}
    return nnx.merge(graphdef, nnx.from_flat_state([(p, v.replace(values[p])) for p, v in flat.items()]))


def state_dict(flat: dict, cfg) -> dict:
    """The parameters (path -> array) of jav's TextConnectors of config `cfg` -> {diffusers tensor
    name: array} (the inverse of `connectors_from_tensors`)."""
    return {e.hf: to_hf_tensor(flat[e.path], e, hf_shape(e, flat[e.path].shape)) for e in tensor_map(cfg)}


def load_connectors(src, dtype: str = "float32") -> TextConnectors:
    """A diffusers `LTX2TextConnectors` folder (config.json and safetensors) -> jav's TextConnectors."""
    src = pathlib.Path(src)
    hf_cfg = read_config(src)
    return connectors_from_tensors(SafetensorsReader(src), hf_cfg, dtype)
