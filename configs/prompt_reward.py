"""The prompt-consistency reward model (jav/models/prompt_reward.py): reads a clip's
video and log-mel and tells which colours its discs have, which background it
shows and which colours' pitches sound, so that a clip can be scored against its
caption. A reward of the reward-tuning phase beside the sync model, trained on
the on-the-fly bounce world (2 s clips of the diffusion demo's shape: 16 frames of
32 x 32 at 8 fps, 200 log-mel frames) by the autoencoder phase's loop:

    python -m jav.train --config configs/prompt_reward.py --workdir runs/reward/prompt
    python -m jav.train --config configs/prompt_reward.py:tiny --workdir /tmp/prompt_tiny   # what the tests train

Held-out scores every train.eval_every steps on clips no training batch holds
(eval_accuracy, eval_consistency_accuracy: the own caption scored above one
altered in one attribute, target 0.95; TensorBoard and metrics.jsonl).
"""

from configs import autoencoder
from jav.models import prompt_reward


def get_config(arg=None):
    """'bounce' (default) or 'tiny'."""
    data = autoencoder.bounce_stream(duration=2.0, fields=("video", "logmel", "colours", "background", "sounds"))
    data.eval_clips = 256
    if arg in (None, "", "bounce"):
        cfg = autoencoder.experiment(
            prompt_reward.model_config(),
            "prompt_reward",
            batch_size=32,
            steps=250,  # held-out (256 clips) accuracy and consistency 1.000 at 250 steps: benchmarks/RESULTS.md
            lr=2e-3,
            warmup_steps=50,
            data=data,
            log_every=50,
            checkpoint_every=250,
            eval_every=250,
            ema_decay=0.99,
        )
    elif arg == "tiny":
        data.eval_clips = 8
        cfg = autoencoder.experiment(
            prompt_reward.model_config(width=8, max_len=16),
            "prompt_reward",
            batch_size=4,
            steps=4,
            lr=1e-3,
            warmup_steps=1,
            data=data,
            log_every=2,
            checkpoint_every=2,
            eval_every=2,
            ema_decay=0.9,
        )
    else:
        raise ValueError(f"configs/prompt_reward.py: unknown arg {arg!r}; use 'bounce' or 'tiny'")
    cfg.phase = "reward_model"
    return cfg
