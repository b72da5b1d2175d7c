"""Command line for training.

    python -m jav.train --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]

Rerunning the same command resumes from DIR's latest checkpoint. Started once
per host (launch/), it joins the other processes first (jav/distributed.py).
"""
import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jav import distributed
from jav.train.trainer import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/NAME.py)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: checkpoints, TensorBoard events, config.json")


def main(argv):
    del argv
    joined = distributed.initialize()  # before the trainer touches a device
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO; keep the progress lines readable
    if jax.process_index() == 0:
        print(f"jav.train: {joined}", flush=True)
    train(_CONFIG.value, _WORKDIR.value, log=lambda msg: print(msg, flush=True))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
