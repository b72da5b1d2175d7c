"""LTX-2's audio-video transformer (diffusers `LTX2VideoTransformer3DModel`, 19B) as
jav's AVDiT, to load its published weights:

    python -m jav.convert ltx2 /path/to/LTX-2/transformer --workdir runs/ltx2
    python -m jav.convert ltx2-export runs/ltx2 --out /path/to/transformer   # back to diffusers

`SRC` is a diffusers transformer folder (config.json and safetensors, sharded or
not); the converter reads its sizes from config.json, so any LTX-2-shaped model
converts, and writes a run directory that `jav.runs.load_run` loads (EMA =
params). The argument `tiny` gives a small model of the same structure (2
blocks; what tests/test_ltx2_parity.py checks against diffusers):

    --config configs/ltx2.py          video 32 heads x 128, audio 32 x 64, 48 blocks
    --config configs/ltx2.py:tiny     video 2 x 16, audio 2 x 8, 2 blocks

What makes it LTX-2 beside the sizes: latent tokens of 128 channels, patch 1;
RMS pre-norms without parameters; QK RMS-norm across heads; RoPE over positions
as fractions of (20 s, 2048 px, 2048 px) on LTX-2's per-head ladder, split
pairs (positions from `jav.models.rope.ltx2_video_positions` /
`ltx2_audio_positions`); audio-video attention in the audio heads, by time,
with its own AdaLN; a caption projection per branch from 3840-d text features.
Timesteps are sigma in [0, 1] (jav scales by 1000 inside, as LTX-2's callers do).
Sampling follows LTX-2's recipe (`sample.` keys below; `--config.sample.schedule=ltx2_distilled
--config.sample.steps=8` with guidance off for its distilled model).
"""

from configs import common
from configs.ltx2_19b import get_config as ltx2_19b


def model(
    video_heads=32,
    video_head_dim=128,
    audio_heads=32,
    audio_head_dim=64,
    depth=48,
    channels=128,
    audio_channels=128,
    text_dim=3840,
    theta=10_000.0,
    max_pos=(20.0, 2048.0, 2048.0),
    pairs="split",
    dtype="float32",
):
    """The AVDiT model config of an LTX-2-shaped transformer of these sizes."""
    m = common.model(
        video_width=video_heads * video_head_dim,
        video_heads=video_heads,
        audio_width=audio_heads * audio_head_dim,
        audio_heads=audio_heads,
        depth=depth,
        joint="cross_attn",
        video_patch=(1, 1, 1),
        video_channels=channels,
        audio_patch=1,
        audio_channels=audio_channels,
        text_dim=text_dim,
        text_encoder="precomputed",
    )
    m.abs_pos = False
    m.norm = "rms"
    m.qk_norm_across_heads = True
    m.rope.update(layout="ltx2", pairs=pairs, theta=float(theta), max_pos=tuple(float(x) for x in max_pos))
    m.joint.update(heads="audio", adaln="own")
    m.dtype = m.param_dtype = dtype
    return m


TINY = dict(video_heads=2, video_head_dim=16, audio_heads=2, audio_head_dim=8, depth=2, channels=8, audio_channels=8, text_dim=24)


def get_config(arg=None):
    cfg = ltx2_19b()  # LTX-2's latent data and sampling settings
    cfg.model = model(**TINY) if arg == "tiny" else model()
    # LTX-2's sampling recipe (jav.samplers; tests/test_ltx2_sampling.py checks it against
    # diffusers' LTX2Pipeline): its shifted schedule with the last step stretched to start at
    # 0.1, spatio-temporal guidance skipping block 29's self-attention (LTX-2.0's block; 28 is
    # LTX-2.3's), guidance rescale 0.7, beside 40 steps at guidance 3 / 7 and modality 3
    cfg.sample.update(schedule="ltx2", stg_scale=1.0, stg_blocks=(29,) if arg != "tiny" else (1,), guidance_rescale=0.7)
    if arg not in (None, "", "tiny"):
        raise ValueError(f"configs/ltx2.py:{arg}: the argument is empty or 'tiny'")
    return cfg
