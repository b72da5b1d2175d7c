"""An LTX-2-sized joint model: video branch 4096 wide, audio branch 2048 wide,
48 layers, bidirectional audio-video cross-attention in every layer (about 14B
video + 5B audio parameters).

    python -m benchmarks.model_stats --config configs/ltx2_19b.py
    python -m jav.aot --config configs/ltx2_19b.py --topology v5p-128
    python -m jav.aot --config configs/ltx2_19b.py:1080p,10s --topology v5p-256

Latent space as LTX-2: a video VAE of 8x32x32 with 128 channels (patch 1),
audio latents of 128 channels at 25 per second, precomputed 4096-d text
embeddings. The argument picks the clip: a resolution (720p, the default, is
704 x 1280; 1080p is 1088 x 1920) and a duration (5s, the default, or any whole
number of seconds) at 24 fps, comma-separated:

    (none) / 720p,5s   16 x 22 x 40 = 14,080 video tokens + 125 audio tokens
    10s                31 x 22 x 40 = 27,280 + 250
    1080p              16 x 34 x 60 = 32,640 + 125
    1080p,10s          31 x 34 x 60 = 63,240 + 250

Placing it needs fsdp and remat: benchmarks/RESULTS.md ("Pod-scale plan") lists, per TPU topology,
the mesh, remat and batch settings that fit (jav.aot); bf16 compute. Sampling
uses LTX-2's guidance (CFG video 3 / audio 7, modality guidance 3, 40 steps).
"""

import re

from configs import common

RESOLUTIONS = {"720p": (704, 1280), "1080p": (1088, 1920)}
FPS = 24
VAE_TIME, VAE_SPACE = 8, 32  # LTX-2's video VAE: 8x in time (after the first frame), 32x in space
AUDIO_LATENTS_PER_S = 25


def clip(arg: str | None) -> tuple[str, int]:
    """'1080p,10s' -> ('1080p', 10); errors name the accepted forms."""
    resolution, seconds = "720p", 5
    for part in filter(None, (arg or "").split(",")):
        if part in RESOLUTIONS:
            resolution = part
        elif re.fullmatch(r"\d+s", part) and int(part[:-1]) > 0:
            seconds = int(part[:-1])
        else:
            raise ValueError(
                f"configs/ltx2_19b.py:{arg}: {part!r} is neither a resolution ({', '.join(RESOLUTIONS)}) "
                "nor a duration like 10s; e.g. configs/ltx2_19b.py:1080p,10s"
            )
    return resolution, seconds


def get_config(arg=None):
    resolution, seconds = clip(arg)
    height, width = RESOLUTIONS[resolution]
    frames = 1 + (seconds * FPS) // VAE_TIME  # latent frames: the first, then one per 8 frames
    model = common.model(
        video_width=4096,
        video_heads=32,
        audio_width=2048,
        audio_heads=32,
        depth=48,
        joint="cross_attn",
        video_patch=(1, 1, 1),
        video_channels=128,
        audio_patch=1,
        audio_channels=128,
        text_dim=4096,
        text_encoder="precomputed",
    )
    model.abs_pos = False  # RoPE only, as LTX-2
    model.dtype = "bfloat16"
    model.remat = "full"
    cfg = common.experiment(model, batch_size=256, steps=100_000, lr=1e-4, warmup_steps=1000)
    # 5 s at 720p: 121 frames of 704 x 1280
    cfg.data = common.latent_data(
        frames, seconds, height, width, video_channels=128, audio_channels=128, text_len=256,
        pixel_fps=FPS, time_compression=VAE_TIME, space_compression=VAE_SPACE, audio_latents_per_s=AUDIO_LATENTS_PER_S,
    )  # fmt: skip
    cfg.sample = common.sample(steps=40)
    cfg.sample.update(text_video=3.0, text_audio=7.0, modality=3.0)
    return cfg
