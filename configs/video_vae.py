"""Causal video VAE experiments (jav/models/video_vae.py), trained by the
autoencoder phase on the on-the-fly bounce world (17-frame 32 x 32 clips):

    python -m jav.train --config configs/video_vae.py --workdir runs/vae/video
    python -m benchmarks.video_vae --workdir runs/vae/video

`bounce` (the default) is 4 x 8 x 8 with 16 latent channels, as Wan2.1, at
widths sized for 32 x 32 frames on a CPU; RESULTS are in benchmarks/RESULTS.md
(held-out PSNR, the world's metrics on reconstructions, throughput).
`ltx2` is the same experiment with LTX-2's 8 x 32 x 32 / 128-channel shape (a
4 x 4 patch then three downsamplings); `tiny` is what the tests train. The
model config alone is `get_config(arg).model`, or `vae(...)`:

    vae = V.init_model(video_vae.get_config().model, jax.random.key(0))
    mean, logvar = V.encode_chunked(vae, clip)       # clip [B, 1 + 4k, H, W, 3] in [-1, 1]
    frames = V.decode_tiled(vae, mean, tile_latents=32, overlap_latents=8)
"""

import ml_collections

from configs import autoencoder


def vae(compression=(4, 8, 8), patch=1, latent_channels=16, widths=(64, 128, 256, 256), blocks=2, shortcut=False) -> ml_collections.ConfigDict:
    """Keys:
    compression: (time, height, width) factors, each a power of two; clips
      need 1 + time * k frames and sides divisible by the spatial factor.
    patch: spatial space-to-depth at the input (and back at the output),
      part of the height / width factor.
    latent_channels: channels per latent position (the KL bottleneck's size).
    widths: channels at each resolution level, full resolution first; one
      entry per level, so log2(height factor / patch) + 1 of them.
    blocks: residual blocks per level, in the encoder and in the decoder.
    shortcut: parameter-free paths beside every resolution change (pooling
      and channel averaging down, repetition up), so a fresh VAE starts near
      a block-average codec (DC-AE's residual autoencoding).
    logvar_range: clip on the encoder's log-variance, so exp() stays finite.
    logvar_offset: added to the encoder's log-variance; the `bounce`
      experiment sets -6 so a fresh VAE's posterior noise is small (std
      exp(-3)) rather than std 1 on latents of std about 1 to 3.
    chunk_latents: latent frames per temporal chunk in encode_chunked /
      decode_chunked / *_tiled (0 = the whole clip at once).
    tile_latents, overlap_latents: latent pixels per spatial tile and shared
      by neighbouring tiles in encode_tiled / decode_tiled (0 tile = no tiling).
    """
    return ml_collections.ConfigDict(
        dict(
            compression=tuple(compression),
            patch=patch,
            in_channels=3,
            latent_channels=latent_channels,
            widths=tuple(widths),
            blocks=blocks,
            shortcut=shortcut,
            logvar_range=(-30.0, 20.0),
            logvar_offset=0.0,
            chunk_latents=4,
            tile_latents=0,
            overlap_latents=2,
            dtype="float32",
            param_dtype="float32",
        )
    )


def get_config(arg=None):
    data = autoencoder.bounce_stream(duration=2.125, fields=("video",))  # 17 frames = 1 + 4 * 4
    if arg in (None, "", "bounce"):
        # a 2 x 2 patch first: the full-resolution level runs at 16 x 16, which
        # makes a step about 4x cheaper than patch 1 on a CPU
        # shortcuts: without them this VAE sat on a plain-background plateau (19.9 dB
        # held-out after 2,000 steps); with them it left it within 300 steps
        model = vae(patch=2, widths=(32, 64, 96), blocks=1, shortcut=True)
        model.logvar_offset = -6.0
        # mostly L2: the target is PSNR, and a small L1 keeps edges sharp
        return autoencoder.experiment(
            model,
            "video_vae",
            batch_size=4,
            steps=4000,
            lr=1e-3,
            warmup_steps=50,
            data=data,
            loss_cfg=autoencoder.loss(kl_weight=1e-6, l1=0.2, l2=1.0),
            log_every=10,
            checkpoint_every=100,
            eval_every=100,
            ema_decay=0.99,
        )
    if arg == "demo":
        # `make demo`'s short schedule of the same experiment: 1,200 steps, 13 min
        # beside the audio VAE on 2 CPU cores (8 min alone), 30.7 dB on 64 held-out
        # clips; the 4,000-step run of record reaches 34.7 dB (benchmarks/RESULTS.md)
        cfg = get_config("bounce")
        cfg.train.steps, cfg.train.checkpoint_every, cfg.train.eval_every, cfg.train.log_every = 1200, 200, 600, 50
        return cfg
    if arg == "ltx2":
        model = vae(compression=(8, 32, 32), patch=4, latent_channels=128, widths=(128, 256, 512, 512), blocks=2)
        data = autoencoder.bounce_stream(duration=2.125, fields=("video",))
        data.canvas = 64
        return autoencoder.experiment(model, "video_vae", batch_size=8, steps=10000, lr=1e-3, data=data)
    if arg == "tiny":
        data = autoencoder.bounce_stream(duration=9 / 8, fields=("video",))  # 9 frames = 1 + 4 * 2
        data.canvas, data.eval_clips = 16, 2
        return autoencoder.experiment(
            vae(patch=2, widths=(8, 16, 16), blocks=1),
            "video_vae",
            batch_size=2,
            steps=6,
            lr=3e-3,
            warmup_steps=1,
            data=data,
            log_every=2,
            checkpoint_every=3,
            eval_every=3,
            ema_decay=0.9,
        )
    raise ValueError(f"configs/video_vae.py: unknown arg {arg!r}; use 'bounce', 'demo', 'ltx2' or 'tiny'")
