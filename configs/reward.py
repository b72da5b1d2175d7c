"""Reward-tune a trained run by GRPO against jav's own reward models.

    python -m jav.train --config configs/sync_reward.py --workdir runs/reward/sync        # the sync reward model first
    python -m jav.train --config configs/reward.py:runs/reference/run,runs/reward/sync --workdir runs/reference/reward
    python -m jav.train --config configs/prompt_reward.py --workdir runs/reward/prompt    # optional: prompt consistency
    python -m jav.train --config configs/reward.py:runs/reference/run,runs/reward/sync,runs/reward/prompt --workdir ...
    python -m jav.evaluate --workdir runs/reference/reward --num 64 --tasks t2va

`arg` is POLICY_RUN,SYNC_RUN[,PROMPT_RUN]: the run tuned (its EMA weights; its data,
model, flow, sampling guidance and mesh), the sync reward model's run and,
optionally, the prompt-consistency model's (configs/prompt_reward.py), each
weighted 1 (`--config.reward.models.NAME.weight`). The policy
keeps the policy's model, so `jav.sample` and `jav.evaluate` read the result as
they read the run it started from. jav/train/reward.py describes the step.
"""

from jav.runs import load_config
from jav.train.reward import reward_config


def get_config(arg=None):
    runs = (arg or "").split(",")
    if len(runs) not in (2, 3) or not all(runs):
        raise ValueError(
            "name the policy's run, the sync reward model's run and optionally the prompt model's: --config configs/reward.py:POLICY_RUN,SYNC_RUN[,PROMPT_RUN]"
        )
    policy, sync, prompt = runs + [""] * (3 - len(runs))
    cfg = load_config(policy)
    cfg.phase = "reward"
    cfg.reward = reward_config(policy)
    cfg.reward.models.sync.run = sync
    if prompt:
        cfg.reward.models.prompt = dict(run=prompt, weight=1.0, modalities=("video", "audio"), reading="reward")
    cfg.init_from = ""  # the policy starts from reward.policy
    cfg.train.batch_size = 2  # captions per step, each sampled reward.group_size times
    cfg.train.steps = 100
    cfg.train.log_every = 5
    cfg.train.checkpoint_every = 25
    cfg.train.ema_decay = 0.9
    cfg.train.eval_every = 0
    cfg.optim.lr = 1e-5
    cfg.optim.warmup_steps = 5
    return cfg
