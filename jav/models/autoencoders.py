"""The clip-model kinds: `cfg.model.kind` of an autoencoder-phase run (VAEs,
the vocoder and reward models) -> the module that builds and scores that model, imported on first use. What such a
module provides (`init_model`, `training_loss`, ...) is the autoencoder phase's
contract, described in jav.train.autoencoder."""

from __future__ import annotations

import importlib

MODELS = {
    "video_vae": "jav.models.video_vae",
    "audio_vae": "jav.models.audio_vae",
    "vocoder": "jav.models.vocoder",
    "sync_reward": "jav.models.sync_reward",  # a reward model: the same contract, a classifier's loss
}


def model_module(kind: str):
    """The module registered for `kind` (imported on first use)."""
    if kind not in MODELS:
        raise ValueError(f"model.kind={kind!r} is not an autoencoder kind; valid kinds: {sorted(MODELS)}")
    module = importlib.import_module(MODELS[kind])
    missing = [f for f in ("init_model", "training_loss") if not hasattr(module, f)]
    if missing:
        raise ValueError(f"{MODELS[kind]} (model.kind={kind!r}) lacks {missing}, which the autoencoder phase needs")
    return module
