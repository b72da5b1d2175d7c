"""An LTX-2-shaped joint model small enough to time on a CPU: the benchmark
config of `benchmarks/step_time.py`, which also times diffusers'
LTX2VideoTransformer3DModel built with the same sizes
(`benchmarks/diffusers_ltx2.py`) in the same run:

    python -m benchmarks.step_time --config configs/ltx2_bench.py --reference

Same structure as configs/ltx2_19b.py (latent space, patch 1, RoPE only,
audio-video cross-attention in every layer, precomputed text embeddings), at
video width 512 (8 heads of 64), audio width 256 (4 heads of 64), 8 layers,
8 x 8 x 16 video latents (1,024 tokens), 256 audio latents, 64 text tokens,
batch 4, float32. Expect about 60 M parameters; on a 2-core CPU a step takes
seconds (see benchmarks/RESULTS.md).
"""

from configs import common


def get_config(arg=None):
    del arg
    model = common.model(
        video_width=512,
        video_heads=8,
        audio_width=256,
        audio_heads=4,
        depth=8,
        joint="cross_attn",
        video_patch=(1, 1, 1),
        video_channels=128,
        audio_patch=1,
        audio_channels=128,
        text_dim=512,
        text_encoder="precomputed",
    )
    model.abs_pos = False  # RoPE only, as LTX-2
    cfg = common.experiment(model, batch_size=4, steps=100, lr=1e-4, warmup_steps=10)
    cfg.data = dict(
        world="latent",
        video_latent_shape=(8, 8, 16, 128),
        audio_latent_shape=(256, 128),
        text_len=64,
        fps=8.0 / 10.24,  # latent frames per second: 8 frames over the audio's 10.24 s
        audio_rate=25.0,  # audio latents per second (16 kHz, hop 160, 4x down)
    )
    return cfg
