"""LTX-2's vocoder (diffusers `LTX2Vocoder`) into jav's `jav.models.ltx2_vocoder.LTX2Vocoder`.

    vocoder = load_vocoder("LTX-2/vocoder")      # a diffusers folder: config.json + safetensors
    wave = vocoder(mel)                          # [B, 2, T, 64] -> [B, 2, T * 240] at 24 kHz

jav's parameters keep PyTorch's names and layouts (`conv_in.weight` is ("conv_in",
"weight"), `resnets.3.convs1.0.bias` is ("resnets", 3, "convs1", 0, "bias")), so each
tensor is copied as it is, the resampling filters and STFT bases the checkpoint carries
included. LTX-2.0's vocoder and LTX-2.3's (snake activations, anti-aliased resampling,
bandwidth extension: `LTX2VocoderWithBWE`) both load.
"""

from __future__ import annotations

import pathlib

import ml_collections
from flax import nnx

from jav.convert.safetensors_io import SafetensorsReader, read_config
from jav.convert.torch_named import module_from_tensors
from jav.models.ltx2_vocoder import LTX2Vocoder, LTX2VocoderWithBWE, bwe_config, vocoder_config

KEYS = (
    "in_channels",
    "hidden_channels",
    "out_channels",
    "upsample_kernel_sizes",
    "upsample_factors",
    "resnet_kernel_sizes",
    "resnet_dilations",
    "leaky_relu_negative_slope",
    "final_act_fn",
    "final_bias",
    "act_fn",
    "antialias",
    "antialias_ratio",
    "antialias_kernel_size",
    "output_sampling_rate",
)
BWE_KEYS = ("filter_length", "hop_length", "window_length", "num_mel_channels", "input_sampling_rate", "output_sampling_rate")


def config_from_diffusers(hf: dict) -> ml_collections.ConfigDict:
    """A diffusers `LTX2Vocoder` (or `LTX2VocoderWithBWE`: it has `bwe_*` keys) config.json -> jav's config."""
    if not any(k.startswith("bwe_") for k in hf):
        return vocoder_config(**{k: hf[k] for k in KEYS if k in hf})
    # LTX2VocoderWithBWE's defaults (its config.json may leave them out)
    first = dict(
        hidden_channels=1536,
        upsample_kernel_sizes=(11, 4, 4, 4, 4, 4),
        upsample_factors=(5, 2, 2, 2, 2, 2),
        act_fn="snakebeta",
        antialias=True,
        final_act_fn=None,
        final_bias=False,
    )
    bwe = dict(first, hidden_channels=512, upsample_kernel_sizes=(12, 11, 4, 4, 4), upsample_factors=(6, 5, 2, 2, 2))
    vocoder = vocoder_config(**(first | {k: hf[k] for k in KEYS if k in hf and k != "output_sampling_rate"}))
    generator = vocoder_config(**(bwe | {k: hf["bwe_" + k] for k in KEYS if "bwe_" + k in hf}))
    return bwe_config(vocoder, generator, **{k: hf[k] for k in BWE_KEYS if k in hf})


def vocoder_from_tensors(tensors, hf_cfg: dict, dtype: str = "float32") -> LTX2Vocoder | LTX2VocoderWithBWE:
    """`tensors` (name -> array: a dict or a SafetensorsReader) of a diffusers LTX2Vocoder or
    LTX2VocoderWithBWE whose config is `hf_cfg` -> jav's module holding them in `dtype`."""
    cfg = config_from_diffusers(hf_cfg)
    cls = LTX2VocoderWithBWE if "bwe" in cfg else LTX2Vocoder
    return module_from_tensors(lambda: cls(cfg, rngs=nnx.Rngs(0)), tensors, "LTX-2 vocoder", dtype)


def load_vocoder(src, dtype: str = "float32") -> LTX2Vocoder:
    """A diffusers `LTX2Vocoder` folder (config.json and safetensors) -> jav's LTX2Vocoder."""
    src = pathlib.Path(src)
    hf_cfg = read_config(src)
    return vocoder_from_tensors(SafetensorsReader(src), hf_cfg, dtype)
