"""LTX-2's vocoder (diffusers `LTX2Vocoder`) into jav's `jav.models.ltx2_vocoder.LTX2Vocoder`.

    vocoder = load_vocoder("LTX-2/vocoder")      # a diffusers folder: config.json + safetensors
    wave = vocoder(mel)                          # [B, 2, T, 64] -> [B, 2, T * 240] at 24 kHz

jav's parameters keep PyTorch's names and layouts (`conv_in.weight` is ("conv_in",
"weight"), `resnets.3.convs1.0.bias` is ("resnets", 3, "convs1", 0, "bias")), so each
tensor is copied as it is. The LTX-2.3 vocoder's options (snake activations,
anti-aliased resampling, bandwidth extension) are refused by name.
"""
from __future__ import annotations

import json
import pathlib

import ml_collections
from flax import nnx

from jav.convert.safetensors_io import SafetensorsReader
from jav.convert.torch_named import module_from_tensors
from jav.models.ltx2_vocoder import LTX2Vocoder, vocoder_config

REQUIRED = dict(act_fn="leaky_relu", antialias=False)


def config_from_diffusers(hf: dict) -> ml_collections.ConfigDict:
    wrong = {k: hf[k] for k, v in REQUIRED.items() if k in hf and hf[k] != v}
    if wrong:
        raise ValueError(f"an LTX-2 vocoder with {wrong}: jav's LTX2Vocoder is LTX-2.0's ({REQUIRED})")
    keys = ("in_channels", "hidden_channels", "out_channels", "upsample_kernel_sizes", "upsample_factors", "resnet_kernel_sizes",
            "resnet_dilations", "leaky_relu_negative_slope", "final_act_fn", "final_bias", "output_sampling_rate")
    return vocoder_config(**{k: hf[k] for k in keys if k in hf})


def vocoder_from_tensors(tensors, hf_cfg: dict, dtype: str = "float32") -> LTX2Vocoder:
    """`tensors` (name -> array: a dict or a SafetensorsReader) of a diffusers LTX2Vocoder whose
    config is `hf_cfg` -> jav's LTX2Vocoder holding them in `dtype`."""
    cfg = config_from_diffusers(hf_cfg)
    return module_from_tensors(lambda: LTX2Vocoder(cfg, rngs=nnx.Rngs(0)), tensors, "LTX-2 vocoder", dtype)


def load_vocoder(src, dtype: str = "float32") -> LTX2Vocoder:
    """A diffusers `LTX2Vocoder` folder (config.json and safetensors) -> jav's LTX2Vocoder."""
    src = pathlib.Path(src)
    return vocoder_from_tensors(SafetensorsReader(src), json.loads((src / "config.json").read_text()), dtype)
