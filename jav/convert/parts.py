"""LTX-2's video VAE, audio VAE, vocoder and text connectors, and Wan's video VAE: a
diffusers folder to a jav run directory and back; `export`, any convertible run back.

    python -m jav.convert ltx2-video-vae SRC --workdir OUT    # also ltx2-audio-vae, ltx2-vocoder, ltx2-connectors, wan-vae
    python -m jav.convert export RUN --out DIR                 # the run -> config.json + diffusion_pytorch_model.safetensors

The run holds step 0 (EMA = params) of the module the in-process loader builds
(`load_video_vae` and the others, jav.convert.ltx2_video_vae ...), and a config.json
whose `model` section has the kind (a LOAD_ONLY kind of jav.models.autoencoders), the
dtype, `config` (jav's module config, as the loader derives it from diffusers' config.json)
and `diffusers` (that config.json, written back on export); jav.runs.load_autoencoder
rebuilds the module from them. Tensor names are the loaders': PyTorch's own for the VAEs
and the vocoder (Wan's `resample.1.` aside), jav.convert.ltx2's map for the connectors.
Each exported tensor is the imported one, bit for bit when the run keeps the weights' dtype
(the default).
"""

from __future__ import annotations

import json
import pathlib
from typing import Callable, NamedTuple

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jav.convert import ltx2, ltx2_audio_vae, ltx2_text, ltx2_video_vae, ltx2_vocoder, torch_named, wan_video_vae
from jav.convert.safetensors_io import SafetensorsReader, read_config, write_safetensors

# a converted run keeps EMA weights (equal to its weights): a decay so that loaders read them
EMA_DECAY = 0.999


class Part(NamedTuple):
    command: str  # python -m jav.convert COMMAND SRC --workdir OUT
    classes: tuple[str, ...]  # the diffusers classes it reads
    config_from_diffusers: Callable  # diffusers' config.json -> jav's module config
    from_tensors: Callable  # (tensors, diffusers' config, dtype) -> jav's module
    state_dict: Callable  # (jav's parameters {path: array}, jav's module config) -> {diffusers name: array}


def _by_torch_name(flat: dict, cfg) -> dict:
    """The parts that keep PyTorch's names (jav.convert.torch_named): their parameters as they are."""
    return torch_named.state_dict(flat)


PARTS = {
    "ltx2_video_vae": Part(
        "ltx2-video-vae",
        ("AutoencoderKLLTX2Video",),
        ltx2_video_vae.config_from_diffusers,
        ltx2_video_vae.video_vae_from_tensors,
        _by_torch_name,
    ),
    "ltx2_audio_vae": Part(
        "ltx2-audio-vae",
        ("AutoencoderKLLTX2Audio",),
        ltx2_audio_vae.config_from_diffusers,
        ltx2_audio_vae.audio_vae_from_tensors,
        _by_torch_name,
    ),
    "ltx2_vocoder": Part(
        "ltx2-vocoder",
        ("LTX2Vocoder", "LTX2VocoderWithBWE"),
        ltx2_vocoder.config_from_diffusers,
        ltx2_vocoder.vocoder_from_tensors,
        _by_torch_name,
    ),
    "ltx2_connectors": Part(
        "ltx2-connectors",
        ("LTX2TextConnectors",),
        ltx2_text.config_from_diffusers,
        ltx2_text.connectors_from_tensors,
        ltx2_text.state_dict,
    ),
    "wan_video_vae": Part(
        "wan-vae",
        (wan_video_vae.CLASS_NAME,),
        wan_video_vae.config_from_diffusers,
        wan_video_vae.video_vae_from_tensors,
        lambda flat, cfg: wan_video_vae.state_dict(flat),
    ),
}
COMMANDS = {part.command: kind for kind, part in PARTS.items()}


def _check_class(kind: str, src, hf: dict) -> None:
    name = hf.get("_class_name")
    part = PARTS[kind]
    if name is None or name in part.classes:
        return
    other = [p.command for p in PARTS.values() if name in p.classes]
    fix = f"import it with `python -m jav.convert {other[0]}`" if other else f"`{part.command}` reads {' or '.join(part.classes)}"
    raise ValueError(f"{src}/config.json is a diffusers {name}: {fix}")


def to_jav(kind: str, src, workdir, dtype: str | None = None) -> ml_collections.ConfigDict:
    """Converts the diffusers folder `src` of part `kind` (a key of PARTS) into the jav run
    directory `workdir` (config.json and step 0 with EMA = params) -> the run's config.
    `dtype`: the parameters' dtype (default: the weights' own)."""
    part = PARTS[kind]
    src, workdir = pathlib.Path(src), pathlib.Path(workdir)
    hf = read_config(src)
    _check_class(kind, src, hf)
    reader = SafetensorsReader(src)
    try:
        dtype = jnp.dtype(dtype or ltx2.main_dtype(reader)).name
    except TypeError:
        raise ValueError(f"--dtype {dtype!r} is not a dtype: give float32, bfloat16 or float16") from None
    model = part.from_tensors(reader, hf, dtype)
    cfg = ml_collections.ConfigDict(
        dict(
            phase="autoencoder",  # loaded with jav.runs.load_autoencoder
            model=dict(kind=kind, dtype=dtype, config=part.config_from_diffusers(hf).to_dict(), diffusers=hf),
            train=dict(ema_decay=EMA_DECAY),
            converted_from=str(src),
        )
    )
    workdir.mkdir(parents=True, exist_ok=True)
    ltx2.save_converted(workdir, cfg, nnx.state(model))
    return cfg


def to_diffusers(run, out, weights: str = "ema", step: int | None = None) -> pathlib.Path:
    """Writes a run of a PARTS kind (its `weights` of `step`, default the latest) as a diffusers
    folder `out`: the config.json it was imported from and diffusion_pytorch_model.safetensors
    -> the safetensors path."""
    from jav.runs import load_autoencoder

    cfg, model = load_autoencoder(run, weights=weights, step=step)
    flat = {path: np.asarray(var.get_value()) for path, var in nnx.to_flat_state(nnx.state(model))}
    tensors = PARTS[cfg.model.kind].state_dict(flat, cfg.model.config)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.model.diffusers.to_dict(), indent=2) + "\n")
    path = out / ltx2.WEIGHTS_NAME
    write_safetensors(path, [(n, x.shape, x.dtype) for n, x in sorted(tensors.items())], tensors.__getitem__, metadata={"format": "pt"})
    return path


def export(run, out, weights: str = "ema", step: int | None = None) -> pathlib.Path:
    """A jav run -> a diffusers folder `out`, by what the run holds: a PARTS kind (`to_diffusers`),
    an LTX-2 transformer (jav.convert.ltx2) or a Wan transformer's video branch (jav.convert.wan)
    -> the safetensors path."""
    from jav import schema
    from jav.runs import load_config

    cfg = load_config(run)
    kind = cfg.model.get("kind", None)
    if kind in PARTS:
        return to_diffusers(run, out, weights, step)
    if cfg.phase in schema.DIFFUSION_PHASES:
        layout = cfg.model.rope.layout
        if layout == "ltx2":
            return ltx2.to_diffusers(run, out, weights, step)
        if layout == "wan":
            from jav.convert import wan

            return wan.to_diffusers(run, out, weights, step)
        raise ValueError(f"{run}: a transformer of jav's own (model.rope.layout={layout!r}) has no diffusers format; LTX-2's ('ltx2') and Wan's ('wan') do")
    raise ValueError(f"{run}: model.kind={kind!r} is jav's own and has no diffusers format; export runs written by {', '.join(COMMANDS)}, ltx2 or wan")
