"""Wan 2.1's text-to-video transformer (diffusers `WanTransformer3DModel`) as the video
branch of jav's AVDiT, to start a video branch from Wan's weights and stitch an audio
branch beside it:

    python -m jav.convert wan /path/to/Wan2.1-T2V-1.3B-Diffusers/transformer --workdir runs/wan
    python -m jav.convert wan-export runs/wan --out /path/to/transformer   # the video branch back

`SRC` is a diffusers transformer folder (config.json and safetensors, sharded or not);
the converter reads the sizes from its config.json, so any text-to-video transformer of
this class converts (Wan 2.2's T2V experts and TI2V-5B are of it; tests/test_wan_parity.py
checks the per-token timesteps TI2V passes, not those checkpoints), and writes a run
directory that `jav.runs.load_run` loads (EMA = params). The argument picks the size:

    --config configs/wan.py:1.3b   dim 1536, 12 heads x 128, 30 blocks, FFN 8960 (Wan2.1-T2V-1.3B; the default)
    --config configs/wan.py:14b    dim 5120, 40 heads x 128, 40 blocks, FFN 13824 (Wan2.1-T2V-14B)
    --config configs/wan.py:tiny   dim 32, 2 heads x 16, 2 blocks, FFN 48 (the parity tests)

Latent tokens of 16 channels in 1x2x2 patches (Wan's VAE: 4x in time after the first
frame, 8x in space) and 4096-d umT5-XXL text states. What makes the video branch Wan
beside the sizes: parameter-free LayerNorm pre-norms (eps 1e-6) modulated by the AdaLN
projection of the timestep embedding to 6 x dim plus each block's (6, dim) table; QK
RMS-norm across heads; RoPE layout "wan" (h and w get head_dim // 6 rotation pairs
each, time the rest, interleaved pairs, theta 1e4) over positions that are latent-grid
indices (`jav.models.rope.wan_video_positions`: latent frame, patch row, patch column);
ungated text cross-attention behind a LayerNorm with a scale and bias
(`model.text_norm="affine"`); a GELU-tanh MLP of ffn_dim; the caption projection (a
GELU-tanh MLP) from the text states; the output LayerNorm shifted and scaled by the
timestep embedding plus a (2, dim) table; no absolute position embedding. Timesteps are
sigma in [0, 1]: Wan's pipeline passes sigma x 1000, which jav multiplies by inside.

Text: diffusers' WanTransformer3DModel takes no text mask; Wan's pipeline zero-pads the
umT5 states to 512 tokens and the blocks attend to all of them. A jav call reproduces
Wan with the zero-padded states and an all-true text mask.

The audio branch is jav's own, small (512 wide, 8 heads), freshly initialised by the
converter, and `model.joint.mode="none"` keeps the branches apart, so the video velocity
is Wan's whatever the audio. Coupling them (joint.mode "cross_attn" with joint.adaln
"own", which leaves the video branch's AdaLN as Wan's) adds cross-modal layers to train.
Positions in the "wan" layout are in latent frames for audio too (t, 0, 0); the clip
token layout (jav.clip_tokens) does not compute them yet, so training and sampling
through jav's loops wait on it.
"""

from configs import common

SIZES = {
    "1.3b": dict(dim=1536, heads=12, depth=30, ffn_dim=8960),
    "14b": dict(dim=5120, heads=40, depth=40, ffn_dim=13824),
    "tiny": dict(dim=32, heads=2, depth=2, ffn_dim=48, channels=4, text_dim=24, audio_width=16, audio_heads=2, audio_channels=8),
}
# the clip each size was trained for: 81 frames at 16 fps, 480 x 832 (1.3B) or 720 x 1280 (14B)
CLIPS = {"1.3b": (81, 480, 832), "14b": (81, 720, 1280), "tiny": (9, 32, 32)}
FPS = 16
VAE_TIME, VAE_SPACE = 4, 8
AUDIO_LATENTS_PER_S = 25  # the audio branch's latents (LTX-2's audio VAE: 128 channels at 25 per second)


def model(
    dim=1536,
    heads=12,
    depth=30,
    ffn_dim=8960,
    channels=16,
    patch=(1, 2, 2),
    text_dim=4096,
    theta=10_000.0,
    audio_width=512,
    audio_heads=8,
    audio_channels=128,
    dtype="float32",
):
    """The AVDiT model config whose video branch is a Wan transformer of these sizes."""
    ratio = ffn_dim / dim
    if int(dim * ratio) != ffn_dim:
        raise ValueError(f"ffn_dim={ffn_dim} is not int(dim * mlp_ratio) for dim={dim}: jav sizes the MLP as model.video.mlp_ratio x width")
    m = common.model(
        video_width=dim,
        video_heads=heads,
        audio_width=audio_width,
        audio_heads=audio_heads,
        depth=depth,
        joint="none",
        video_patch=tuple(patch),
        video_channels=channels,
        audio_patch=1,
        audio_channels=audio_channels,
        text_dim=text_dim,
        text_encoder="precomputed",
    )
    m.video.mlp_ratio = ratio
    m.abs_pos = False
    m.qk_norm_across_heads = True
    m.text_norm = "affine"
    m.rope.update(layout="wan", pairs="interleaved", theta=float(theta))
    m.dtype = m.param_dtype = dtype
    return m


def size_of(dim: int, depth: int) -> str | None:
    """The SIZES name of a Wan transformer `dim` wide and `depth` blocks deep (None: no listed size)."""
    return next((name for name, s in SIZES.items() if (s["dim"], s["depth"]) == (dim, depth)), None)


def audio_sizes(size: str | None) -> dict:
    """model() keys of the audio branch that goes beside the video branch of `size` (None: the defaults)."""
    return {k: v for k, v in SIZES.get(size, {}).items() if k.startswith("audio_")}


def get_config(arg=None):
    size = arg or "1.3b"
    if size not in SIZES:
        raise ValueError(f"configs/wan.py:{arg}: the argument is one of {', '.join(SIZES)} (empty: 1.3b)")
    cfg = common.experiment(model(**SIZES[size]), batch_size=64, steps=10_000, lr=1e-5, warmup_steps=500)
    frames, height, width = CLIPS[size]
    latent_frames = 1 + (frames - 1) // VAE_TIME  # 1.3b: 21 x 60 x 104
    cfg.data = common.latent_data(
        latent_frames, frames / FPS, height, width, video_channels=cfg.model.video.channels, audio_channels=cfg.model.audio.channels,
        text_len=512,  # umT5 states, zero-padded as Wan's pipeline pads them
        pixel_fps=FPS, time_compression=VAE_TIME, space_compression=VAE_SPACE, audio_latents_per_s=AUDIO_LATENTS_PER_S,
    )  # fmt: skip
    # Wan's pipeline defaults: 50 steps at text guidance 5 (its UniPC sampler is not jav's)
    cfg.sample = common.sample(steps=50)
    cfg.sample.text_video = 5.0
    return cfg
