"""One-time conversion of a run saved by the retired training loops of
benchmarks/audio_vae.py and benchmarks/vocoder.py (model_config.json +
params.msgpack) into a run directory of the autoencoder phase, which
jav.runs.load_autoencoder, the benchmarks and jav.latents read:

    python -m benchmarks.convert_msgpack_run runs/vae/audio runs/vae/audio_run [--step 1601]
    python -m benchmarks.audio_vae --workdir runs/vae/audio_run

The saved weights become both the params and the EMA of a checkpoint at --step,
in the default experiment of configs/audio_vae.py or configs/vocoder.py (by the
saved keys) with the saved model's keys, so that
`python -m jav.train --config ... --workdir NEW_DIR` resumes it with fresh Adam
moments.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import ml_collections
from flax import nnx, serialization

from configs import audio_vae as audio_vae_configs
from configs import vocoder as vocoder_configs
from jav.models.autoencoders import model_module
from jav.train.autoencoder import make_stream
from jav.train.checkpoint import Checkpointer
from jav.train.step import optimizer

EXPERIMENTS = {"audio_vae": audio_vae_configs.get_config, "vocoder": vocoder_configs.get_config}


def saved_model_keys(old_dir: str) -> ml_collections.ConfigDict:
    """The saved model's keys, with its kind: model_config.json, or config.json in runs saved
    before it (the keys themselves, or an experiment holding them in `model`)."""
    path = os.path.join(old_dir, "model_config.json")
    if not os.path.exists(path):
        path = os.path.join(old_dir, "config.json")
    if not os.path.exists(os.path.join(old_dir, "params.msgpack")) or not os.path.exists(path):
        raise FileNotFoundError(
            f"{old_dir} holds no params.msgpack with a model_config.json or config.json beside it: it is not a run of the retired benchmark loops"
        )
    with open(path) as f:
        keys = json.load(f)
    keys = keys.get("model", keys)
    if "kind" not in keys:  # the two models' keys tell them apart
        keys["kind"] = "audio_vae" if "latent_channels" in keys else "vocoder"
    return ml_collections.ConfigDict(keys)


def convert(old_dir: str, new_dir: str, step: int = 0) -> ml_collections.ConfigDict:
    """Writes new_dir as an autoencoder-phase run of old_dir's weights at `step` -> its config."""
    if os.path.exists(os.path.join(new_dir, "config.json")):
        raise FileExistsError(f"{new_dir} is already a run directory; name a new one")
    keys = saved_model_keys(old_dir)
    cfg = EXPERIMENTS[keys.kind]()
    cfg.model = keys
    cfg.train.steps = max(cfg.train.steps, step)
    model = model_module(keys.kind).init_model(cfg.model, jax.random.key(0))
    params = nnx.state(model, nnx.Param)
    with open(os.path.join(old_dir, "params.msgpack"), "rb") as f:
        nnx.replace_by_pure_dict(params, serialization.msgpack_restore(f.read()))
    os.makedirs(new_dir, exist_ok=True)
    with open(os.path.join(new_dir, "config.json"), "w") as f:
        f.write(cfg.to_json_best_effort(indent=2))
    with Checkpointer(new_dir, max_to_keep=cfg.train.keep_checkpoints) as ckpt:
        ckpt.save(step, params=params, ema=params, opt_state=optimizer(cfg).init(params), data_state=make_stream(cfg).get_state(), config=cfg, force=True)
        ckpt.wait()
    return cfg


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old_dir", help="a workdir with model_config.json and params.msgpack")
    parser.add_argument("new_dir", help="the run directory to write")
    parser.add_argument("--step", type=int, default=0, help="the step to record, such as the steps the old run trained (its train_log.jsonl)")
    args = parser.parse_args(argv)
    cfg = convert(args.old_dir, args.new_dir, args.step)
    print(
        f"wrote {args.new_dir}: a {cfg.model.kind} run at step {args.step}; evaluate it with `python -m benchmarks.{cfg.model.kind} --workdir {args.new_dir}`"
    )


if __name__ == "__main__":
    main()
