"""The tiny config the test suite trains: a 2-layer model on the bounce world.

    python -m jav.train --config configs/test.py --workdir /tmp/jav_test

Not meant to produce good clips; it exists so that tests compile and step fast
on a 2-core CPU.
"""
from configs import common


def get_config(arg=None):
    del arg
    model = common.model(
        video_width=64, video_heads=2, audio_width=64, audio_heads=2, depth=2,
        joint="cross_attn", video_patch=(1, 4, 4), audio_patch=1, text_dim=32,
    )
    cfg = common.experiment(model, batch_size=2, steps=300, lr=2e-3, warmup_steps=20)
    return cfg
