"""An LTX-2-sized joint model: video branch 4096 wide, audio branch 2048 wide,
48 layers, bidirectional audio-video cross-attention in every layer (about 14B
video + 5B audio parameters).

    python -m benchmarks.model_stats --config configs/ltx2_19b.py

Latent space as LTX-2: a video VAE of 8x32x32 with 128 channels (720p, 5 s,
24 fps -> 16 x 22 x 40 latent tokens, patch 1), audio latents of 128 channels
at 25 per second, precomputed 4096-d text embeddings. Placing it needs fsdp and
remat (the scale-out issue); bf16 compute.
"""
from configs import common


def get_config(arg=None):
    del arg
    model = common.model(
        video_width=4096, video_heads=32, audio_width=2048, audio_heads=32, depth=48,
        joint="cross_attn", video_patch=(1, 1, 1), video_channels=128,
        audio_patch=1, audio_channels=128, text_dim=4096, text_encoder="none",
    )
    model.abs_pos = False  # RoPE only, as LTX-2
    model.dtype = "bfloat16"
    model.remat = "full"
    cfg = common.experiment(model, batch_size=256, steps=100_000, lr=1e-4, warmup_steps=1000)
    cfg.data = dict(
        world="latent",
        video_latent_shape=(16, 22, 40, 128),  # 121 frames of 704 x 1280
        audio_latent_shape=(125, 128),  # 5 s at 25 latents / s
        text_len=256,
        fps=3.2,  # latent frames per second (16 over 5 s), RoPE's time axis
        audio_rate=25.0,  # audio latents per second
    )
    return cfg
