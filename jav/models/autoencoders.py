"""The clip-model kinds: `cfg.model.kind` of an autoencoder-phase run (VAEs,
the vocoder and reward models) -> the module that builds and scores that model, imported on first use. What such a
module provides (`init_model`, `training_loss`, ...) is the autoencoder phase's
contract, described in jav.train.autoencoder.

The LOAD_ONLY kinds are published models that `python -m jav.convert` imports into run
directories (jav.convert.parts): jav.runs.load_autoencoder loads them and `python -m
jav.convert export` writes them back, but jav does not train them (`refuse_training`)."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

MODELS = {
    "video_vae": "jav.models.video_vae",
    "audio_vae": "jav.models.audio_vae",
    "vocoder": "jav.models.vocoder",
    "sync_reward": "jav.models.sync_reward",  # a reward model: the same contract, a classifier's loss
    "prompt_reward": "jav.models.prompt_reward",  # a reward model that reads the captions too
    # published models (LOAD_ONLY)
    "ltx2_video_vae": "jav.models.ltx2_video_vae",
    "ltx2_audio_vae": "jav.models.ltx2_audio_vae",
    "ltx2_vocoder": "jav.models.ltx2_vocoder",
    "ltx2_connectors": "jav.models.ltx2_text",
    "wan_video_vae": "jav.models.wan_video_vae",
}
# Their inputs are not the autoencoder phase's batches (LTX-2's audio VAE and vocoder read a
# stereo mel of their own, the connectors Gemma's hidden states, the VAEs channels-first clips
# of their own frame counts), so a reconstruction loss on those batches would fit them to the
# wrong signal. Their modules keep the contract (the phase's checks and jav.runs find
# `init_model` and `training_loss`), but their `training_loss` is `refuse_training`'s, which
# stops the first training step with that reason.
LOAD_ONLY = ("ltx2_video_vae", "ltx2_audio_vae", "ltx2_vocoder", "ltx2_connectors", "wan_video_vae")


def model_module(kind: str):
    """The module registered for `kind` (imported on first use)."""
    if kind not in MODELS:
        raise ValueError(
            f"model.kind={kind!r} is not an autoencoder kind; valid kinds: {sorted(k for k in MODELS if k not in LOAD_ONLY)}, "
            f"and the load-only kinds of runs `python -m jav.convert` writes: {sorted(LOAD_ONLY)}"
        )
    module = importlib.import_module(MODELS[kind])
    missing = [f for f in ("init_model", "training_loss") if not hasattr(module, f)]
    if missing:
        raise ValueError(f"{MODELS[kind]} (model.kind={kind!r}) lacks {missing}, which the autoencoder phase needs")
    return module


def _tuples(value):
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def init_imported(module_cls, model_cfg, key: jax.Array, out_shardings=None, **kwargs) -> nnx.Module:
    """A LOAD_ONLY kind's model -> `module_cls(model_cfg.config, rngs=..., **kwargs)`, the module
    jav.convert.parts' loader built (the config as the run's config.json holds it, its lists as
    tuples again), every variable zeros in `model_cfg.dtype`, placed by `out_shardings` when
    given. Zeros, not a random initialisation: such a model is only ever restored into, and
    zeros cost a fraction of drawing the weights (or compiling a draw, `jit_init`)."""
    del key
    cfg = ml_collections.ConfigDict(_tuples(model_cfg.config.to_dict()))
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: module_cls(cfg, rngs=nnx.Rngs(0), **kwargs)))
    state = jax.jit(lambda: jax.tree.map(lambda v: jnp.zeros(v.shape, model_cfg.dtype), abstract), out_shardings=out_shardings)()
    return nnx.merge(graphdef, state)


def refuse_training(kind: str):
    """The `training_loss` of LOAD_ONLY kind `kind`: raises, saying why, when a training step calls it."""

    def training_loss(model, batch, key, cfg):
        raise ValueError(
            f"model.kind={kind!r} is a published model imported by `python -m jav.convert`, loaded and exported but not "
            f"trained: jav has no loss for it on the autoencoder phase's batches; train one of "
            f"{sorted(k for k in MODELS if k not in LOAD_ONLY)}"
        )

    return training_loss
