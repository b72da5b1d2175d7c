"""Tune a trained run's synchrony by SyncDPO: real bounce-world clips preferred to the same
clips with their sound moved by whole frames (jav/train/sync_dpo.py; no reward model).

    python -m jav.train --config configs/sync_dpo.py:runs/demo/run --workdir runs/demo/sync_dpo
    python -m jav.evaluate --workdir runs/demo/sync_dpo --num 64 --tasks t2va

or on the policy's own clips (python -m jav.train.policy_pairs makes them first):
`--config.reward.dpo.pairs=DIR` prefers its V2A sound to its joint one, adding
`--config.reward.dpo.prefer=real` prefers the caption's real clip to its whole clip.

`arg` is the policy's run (its EMA weights; its data, model, flow, sampling guidance and
mesh). The result keeps the policy's model, so `jav.sample` and `jav.evaluate` read it as
they read the run it started from.
"""

from jav.runs import load_config
from jav.train.reward import reward_config


def get_config(arg=None):
    if not arg:
        raise ValueError("name the policy's run: --config configs/sync_dpo.py:POLICY_RUN")
    cfg = load_config(arg)
    cfg.phase = "reward"
    cfg.reward = reward_config(arg)
    cfg.reward.method = "sync_dpo"
    cfg.reward.models = {}
    cfg.init_from = ""  # the policy starts from reward.policy
    cfg.train.batch_size = 8  # pairs per step
    cfg.train.steps = 200
    cfg.train.log_every = 10
    cfg.train.checkpoint_every = 50
    cfg.train.ema_decay = 0.9
    cfg.train.eval_every = 0
    cfg.optim.lr = 3e-5
    cfg.optim.warmup_steps = 10
    return cfg
