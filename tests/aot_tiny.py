"""A toy config shaped like configs/ltx2_19b.py (latent clips, precomputed text
embeddings, bf16, guided sampling) that tests/test_aot.py compiles ahead of
time for a small TPU slice. No cross-modal module: the TPU compiler takes a
third longer with it, and the compile, not the model, is what the test is about.

    python -m jav.aot --config tests/aot_tiny.py --topology v5e-4
"""

from configs import common


def get_config(arg=None):
    del arg
    model = common.model(
        video_width=64,
        video_heads=2,
        audio_width=32,
        audio_heads=2,
        depth=2,
        joint="none",
        video_patch=(1, 2, 2),
        video_channels=8,
        audio_patch=1,
        audio_channels=8,
        text_dim=32,
        text_encoder="precomputed",
    )
    model.abs_pos = False
    model.dtype = "bfloat16"
    model.remat = "offload"
    cfg = common.experiment(model, batch_size=8, steps=10)
    cfg.data = dict(world="latent", video_latent_shape=(4, 8, 8, 8), audio_latent_shape=(16, 8), text_len=8, fps=4.0, audio_rate=16.0)
    cfg.sample.update(text_video=3.0, text_audio=7.0, modality=3.0)
    return cfg
