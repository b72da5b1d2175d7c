"""Wan's video VAE (diffusers `AutoencoderKLWan`, Wan 2.1's and Wan 2.2's) into jav's
`jav.models.wan_video_vae.WanVideoVAE`, tensor by tensor under PyTorch's names.

    vae = load_video_vae("Wan2.1-T2V-1.3B-Diffusers/vae")   # a diffusers folder: config.json + safetensors
    mean, logvar = vae.encode(video)                         # [B, 3, 81, 480, 832] -> [B, 16, 21, 60, 104]
    z = normalize_latents(mean, vae.latents_mean, vae.latents_std)   # the transformer's latents
    video = vae.decode(denormalize_latents(z, vae.latents_mean, vae.latents_std))  # -> [B, 3, 81, 480, 832]

(`normalize_latents`, `denormalize_latents` from `jav.models.wan_video_vae`.) Every tensor
keeps its name except diffusers' `resample.1.` (an nn.Sequential's convolution), jav's
`resample.` (`jav_name`; `diffusers_name` and `state_dict` go back).
"""

from __future__ import annotations

import inspect
import pathlib

import ml_collections
from flax import nnx

from jav.convert.safetensors_io import SafetensorsReader, read_config
from jav.convert.torch_named import module_from_tensors, torch_name
from jav.models.wan_video_vae import WanVideoVAE, video_vae_config

CLASS_NAME = "AutoencoderKLWan"
KEYS = tuple(inspect.signature(video_vae_config).parameters)


def config_from_diffusers(hf: dict) -> ml_collections.ConfigDict:
    """A diffusers `AutoencoderKLWan` config.json -> jav's config (keys starting with '_' are
    diffusers' bookkeeping); another class, a key jav does not know, or a value it cannot run, is refused."""
    if hf.get("_class_name", CLASS_NAME) != CLASS_NAME:
        raise ValueError(f"diffusers config _class_name={hf['_class_name']!r}: this loader reads {CLASS_NAME}")
    unknown = sorted(k for k in hf if not k.startswith("_") and k not in KEYS)
    if unknown:
        raise ValueError(f"a Wan video VAE config with options jav does not implement: {unknown}")
    return video_vae_config(**{k: hf[k] for k in KEYS if k in hf})


def jav_name(name: str) -> str:
    """A diffusers tensor name -> jav's (dotted) parameter name."""
    return name.replace(".resample.1.", ".resample.")


def diffusers_name(name: str) -> str:
    """jav's (dotted) parameter name -> the diffusers tensor name (the inverse of `jav_name`)."""
    return name.replace(".resample.", ".resample.1.")


def state_dict(flat: dict) -> dict:
    """jav's parameters (path -> array) -> {diffusers tensor name: array}, as they are."""
    return {diffusers_name(torch_name(path)): x for path, x in flat.items()}


class _Renamed:
    """`tensors` (a dict or a SafetensorsReader) under jav's names."""

    def __init__(self, tensors):
        names = tensors.names() if hasattr(tensors, "names") else list(tensors)
        self._tensors, self._source = tensors, {jav_name(n): n for n in names}

    def names(self) -> list[str]:
        return sorted(self._source)

    def __getitem__(self, name: str):
        return self._tensors[self._source[name]]


def video_vae_from_tensors(tensors, hf_cfg: dict, dtype: str = "float32") -> WanVideoVAE:
    cfg = config_from_diffusers(hf_cfg)
    return module_from_tensors(lambda: WanVideoVAE(cfg, rngs=nnx.Rngs(0)), _Renamed(tensors), "Wan video VAE", dtype)


def load_video_vae(src, dtype: str = "float32") -> WanVideoVAE:
    """A diffusers `AutoencoderKLWan` folder (config.json + safetensors) -> jav's VAE with its weights in `dtype`."""
    src = pathlib.Path(src)
    hf_cfg = read_config(src)
    return video_vae_from_tensors(SafetensorsReader(src), hf_cfg, dtype)
