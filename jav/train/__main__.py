"""Command line for training.

    python -m jav.train --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]

`cfg.phase` picks the phase from PHASES: "diffusion" (the default,
jav/train/diffusion.py), "autoencoder" (jav/train/autoencoder.py: video VAE,
audio VAE, vocoder), "reward_model" (the same phase for reward models:
configs/sync_reward.py), "distill" (jav/train/distill.py: a few-step student of a
diffusion run) or "reward" (jav/train/reward.py: GRPO against reward models);
each runs on the one loop of jav/train/loop.py. Rerunning
the same command resumes from DIR's latest checkpoint. Started once per host
(launch/), it joins the other processes first (jav/distributed.py).
"""

import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jav import distributed, schema
from jav.train import loop
from jav.train.autoencoder import AutoencoderPhase
from jav.train.diffusion import DiffusionPhase
from jav.train.distill import DistillPhase
from jav.train.reward import RewardPhase

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/NAME.py)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: checkpoints, TensorBoard events, config.json")
# "reward_model" is the autoencoder phase under the name its configs read: a clip model
# (configs/sync_reward.py) trained on clips by its own loss, scored on held-out clips.
PHASES = {"diffusion": DiffusionPhase, "autoencoder": AutoencoderPhase, "reward_model": AutoencoderPhase, "distill": DistillPhase, "reward": RewardPhase}


def phase_of(cfg) -> loop.Phase:
    """The phase `cfg.phase` names, made from `cfg`."""
    if cfg.phase not in PHASES:
        raise ValueError(f"phase={cfg.phase!r} is not a training phase; use one of {tuple(PHASES)}")
    return PHASES[cfg.phase](cfg)


def main(argv):
    del argv
    joined = distributed.initialize()  # before the loop touches a device
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO; keep the progress lines readable
    if jax.process_index() == 0:
        print(f"jav.train: {joined}", flush=True)
    try:
        cfg = schema.complete(_CONFIG.value)  # every key the config leaves unsaid at its default, in one pass
        loop.run(cfg, _WORKDIR.value, phase_of(cfg), log=lambda msg: print(msg, flush=True))
    except (ValueError, FileNotFoundError) as e:
        # a config that cannot run, a missing run or data directory, corrupt shards: jav's errors name the key
        # or file and the fix, so one line says it (JAV_TRACEBACK=1 shows where it was raised)
        if os.environ.get("JAV_TRACEBACK"):
            raise
        sys.exit(f"jav.train: {type(e).__name__}: {e}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
