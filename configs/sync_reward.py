"""The sync reward model (jav/models/sync_reward.py): reads a clip's video and
log-mel and tells how many video frames the sound is off, or that it belongs to
another clip. The first reward of the reward-tuning phase, trained on the
on-the-fly bounce world (2 s windows of the diffusion demo's shape: 16 frames of
32 x 32 at 8 fps, 200 log-mel frames, cut from 3 s clips) by the autoencoder
phase's loop:

    python -m jav.train --config configs/sync_reward.py --workdir runs/reward/sync
    python -m jav.train --config configs/sync_reward.py:tiny --workdir /tmp/sync_tiny   # what the tests train

Held-out scores every train.eval_every steps on clips no training batch holds
(eval_offset_within_frame, eval_auc_250ms, eval_auc_unrelated; TensorBoard and
metrics.jsonl). `jav.runs.load_autoencoder(WORKDIR)` loads the trained model;
`jav.models.sync_reward.reward(model, video, logmel)` scores clips.
"""

from configs import autoencoder
from jav.models import sync_reward


def get_config(arg=None):
    """'bounce' (default) or 'tiny'."""
    # each example is a 2 s window (the diffusion demo's 16 frames, 200 log-mel frames)
    # cut from inside a longer clip, its sound moved by up to max_shift frames either way
    # "events": the frames holding a contact, which both embeddings learn to tell (model.event_weight)
    data = autoencoder.bounce_stream(duration=3.0, fields=("video", "logmel", "events"))  # 2 s + 2 x 4 frames at 8 fps
    data.eval_clips = 64
    if arg in (None, "", "bounce"):
        cfg = autoencoder.experiment(
            sync_reward.model_config(event_weight=1.0),
            "sync_reward",
            batch_size=32,
            steps=8000,  # AUC vs 250 ms shifts 0.964 at 8,000 (0.799 at 4,000): benchmarks/RESULTS.md
            lr=3e-3,
            warmup_steps=100,
            data=data,
            log_every=50,
            checkpoint_every=250,
            eval_every=250,
            ema_decay=0.99,
        )
    elif arg == "tiny":
        data.eval_clips, data.duration = 4, 2.5  # 2 s + 2 x 2 frames
        model = sync_reward.model_config(width=16, depth=1, patch_dim=4, max_shift=2, event_weight=1.0)
        cfg = autoencoder.experiment(
            model, "sync_reward", batch_size=4, steps=4, lr=1e-3, warmup_steps=1, data=data, log_every=2, checkpoint_every=2, eval_every=2, ema_decay=0.9
        )
    else:
        raise ValueError(f"configs/sync_reward.py: unknown arg {arg!r}; use 'bounce' or 'tiny'")
    cfg.phase = "reward_model"
    return cfg
