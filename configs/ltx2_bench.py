"""An LTX-2-shaped joint model small enough to time on a CPU: the benchmark
config of `benchmarks/step_time.py` and of its PyTorch counterpart
`benchmarks/diffusers_ltx2.py` (diffusers' LTX2VideoTransformer3DModel built
with the same sizes).

    python -m benchmarks.step_time --config configs/ltx2_bench.py

Same structure as configs/ltx2_19b.py (latent space, patch 1, RoPE only,
audio-video cross-attention in every layer, precomputed text embeddings), at
video width 512 (8 heads of 64), audio width 256 (4 heads of 64), 4 layers,
8 x 8 x 16 video latents (1,024 tokens), 64 audio latents, 64 text tokens,
float32.
"""
from configs import common


def get_config(arg=None):
    del arg
    model = common.model(
        video_width=512, video_heads=8, audio_width=256, audio_heads=4, depth=4,
        joint="cross_attn", video_patch=(1, 1, 1), video_channels=128,
        audio_patch=1, audio_channels=128, text_dim=512, text_encoder="none",
    )
    model.abs_pos = False  # RoPE only, as LTX-2
    cfg = common.experiment(model, batch_size=2, steps=100, lr=1e-4, warmup_steps=10)
    cfg.data = dict(
        world="latent",
        video_latent_shape=(8, 8, 16, 128),
        audio_latent_shape=(64, 128),
        text_len=64,
        fps=8.0,  # latent frames per second, for RoPE's time axis
        audio_rate=25.0,  # audio latents per second
    )
    return cfg
