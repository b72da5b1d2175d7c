"""Compiles (never runs) the train step of a tiny model on 8 simulated CPU
devices with fsdp = 1, 2 and 8 (data = 8 / fsdp, so every device holds one
clip of the batch of 8) and prints, per fsdp size, the compiler's memory
analysis and the bytes per device of each input as JSON. Run by
tests/test_memory_scaling.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (fixed when JAX starts).

    python tests/memory_scaling_check.py
"""

import json

import jax

from configs import common
from jav import aot, sharding

FSDP = (1, 2, 8)


def config(fsdp: int):
    model = common.model(
        video_width=32,
        video_heads=2,
        audio_width=16,
        audio_heads=2,
        depth=2,
        joint="none",
        video_patch=(1, 2, 2),
        video_channels=4,
        audio_patch=1,
        audio_channels=8,
        text_dim=16,
        text_encoder="precomputed",
    )
    cfg = common.experiment(model, batch_size=8, steps=10)
    cfg.data = dict(world="latent", video_latent_shape=(2, 4, 4, 4), audio_latent_shape=(8, 8), text_len=4, fps=4.0, audio_rate=16.0)
    cfg.train.ema_decay = 0.0  # parameters and optimizer state only
    cfg.mesh.shape = dict(data=8 // fsdp, fsdp=fsdp, context=1, tensor=1)
    return cfg


if __name__ == "__main__":
    out = {}
    for n in FSDP:
        cfg = config(n)
        lowered, inputs = aot.lower_train_step(cfg, sharding.make_mesh(dict(cfg.mesh.shape), jax.devices()))
        mem = lowered.compile().memory_analysis()
        out[n] = dict(
            inputs=inputs,
            argument_bytes=mem.argument_size_in_bytes,
            output_bytes=mem.output_size_in_bytes,
            alias_bytes=mem.alias_size_in_bytes,
            temp_bytes=mem.temp_size_in_bytes,
        )
    print(json.dumps(out))
