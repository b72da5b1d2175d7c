"""The demo: a small joint audio-video model trained on the bounce world on CPU.

    python -m benchmarks.model_stats --config configs/bounce_demo.py

(The training CLI, `python -m jav.train`, comes with the training system.)

Pixel-space video (32x32 RGB, 8 fps, patches of 2x4x4) and log-mel audio
(64 bins, 100 frames/s, patches of 1 frame), cross-attention coupling in every
layer. Sized to train in minutes on a 2-core CPU.
"""
from configs import common


def get_config(arg=None):
    del arg
    model = common.model(
        video_width=128, video_heads=4, audio_width=64, audio_heads=2, depth=4,
        joint="cross_attn", video_patch=(2, 4, 4), audio_patch=1, text_dim=64,
    )
    model.prediction = "x0"
    return common.experiment(model, batch_size=8, steps=2000, lr=1e-3, warmup_steps=100)
