"""LTX-2's audio VAE (diffusers `AutoencoderKLLTX2Audio`) into jav's
`jav.models.ltx2_audio_vae.LTX2AudioVAE`, tensor by tensor under PyTorch's names.

    vae = load_audio_vae("LTX-2/audio_vae")      # a diffusers folder: config.json + safetensors
    mean, logvar = vae.encode(mel)               # [B, 2, T, 64] -> [B, 8, (T - 1) / 4 + 1, 16]
"""

from __future__ import annotations

import pathlib

import ml_collections
from flax import nnx

from jav.convert.safetensors_io import SafetensorsReader, read_config
from jav.convert.torch_named import module_from_tensors
from jav.models.ltx2_audio_vae import LTX2AudioVAE, audio_vae_config

KEYS = (
    "base_channels",
    "output_channels",
    "ch_mult",
    "num_res_blocks",
    "attn_resolutions",
    "in_channels",
    "resolution",
    "latent_channels",
    "norm_type",
    "causality_axis",
    "mid_block_add_attention",
    "mel_bins",
    "double_z",
)


def config_from_diffusers(hf: dict) -> ml_collections.ConfigDict:
    if hf.get("dropout", 0.0):
        raise ValueError(f"an LTX-2 audio VAE with dropout={hf['dropout']}: jav's runs it at inference only (dropout 0)")
    return audio_vae_config(**{k: hf[k] for k in KEYS if k in hf})


def audio_vae_from_tensors(tensors, hf_cfg: dict, dtype: str = "float32") -> LTX2AudioVAE:
    cfg = config_from_diffusers(hf_cfg)
    return module_from_tensors(lambda: LTX2AudioVAE(cfg, rngs=nnx.Rngs(0)), tensors, "LTX-2 audio VAE", dtype)


def load_audio_vae(src, dtype: str = "float32") -> LTX2AudioVAE:
    src = pathlib.Path(src)
    hf_cfg = read_config(src)
    return audio_vae_from_tensors(SafetensorsReader(src), hf_cfg, dtype)
