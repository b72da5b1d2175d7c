"""LTX-2's video VAE (diffusers `AutoencoderKLLTX2Video`) into jav's
`jav.models.ltx2_video_vae.LTX2VideoVAE`, tensor by tensor under PyTorch's names.

    vae = load_video_vae("LTX-2/vae")            # a diffusers folder: config.json + safetensors
    mean, logvar = vae.encode(video)             # [B, 3, 121, 512, 768] -> [B, 128, 16, 16, 24]
    video = vae.decode(mean)                     # -> [B, 3, 121, 512, 768]
"""

from __future__ import annotations

import inspect
import pathlib

import ml_collections
from flax import nnx

from jav.convert.safetensors_io import SafetensorsReader, read_config
from jav.convert.torch_named import module_from_tensors
from jav.models.ltx2_video_vae import LTX2VideoVAE, video_vae_config

KEYS = tuple(inspect.signature(video_vae_config).parameters)


def config_from_diffusers(hf: dict) -> ml_collections.ConfigDict:
    """A diffusers `AutoencoderKLLTX2Video` config.json -> jav's config (keys starting with '_'
    are diffusers' bookkeeping); a key jav does not know, or a value it cannot run, is refused."""
    unknown = sorted(k for k in hf if not k.startswith("_") and k not in KEYS)
    if unknown:
        raise ValueError(f"an LTX-2 video VAE config with options jav does not implement: {unknown}")
    return video_vae_config(**{k: hf[k] for k in KEYS if k in hf})


def video_vae_from_tensors(tensors, hf_cfg: dict, dtype: str = "float32") -> LTX2VideoVAE:
    cfg = config_from_diffusers(hf_cfg)
    return module_from_tensors(lambda: LTX2VideoVAE(cfg, rngs=nnx.Rngs(0)), tensors, "LTX-2 video VAE", dtype)


def load_video_vae(src, dtype: str = "float32") -> LTX2VideoVAE:
    src = pathlib.Path(src)
    hf_cfg = read_config(src)
    return video_vae_from_tensors(SafetensorsReader(src), hf_cfg, dtype)
