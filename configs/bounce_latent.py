"""The demo: the joint model trained on VAE latents of the bounce world, on CPU.

    make demo-latent    # VAEs, latent shards, this config, samples of held-out captions, their metrics

or step by step (as the Makefile runs it; each command resumes if interrupted):

    python -m jav.train --config configs/video_vae.py:demo --workdir runs/demo_latent/vae/video
    python -m jav.train --config configs/audio_vae.py:demo --workdir runs/demo_latent/vae/audio
    python -m jav.data.synthetic --out runs/demo_latent/latents --num 2000 --duration 2.125 --latent \
        --video-vae runs/demo_latent/vae/video --audio-vae runs/demo_latent/vae/audio
    python -m jav.train --config configs/bounce_latent.py --workdir runs/demo_latent/run --config.data.dir=runs/demo_latent/latents
    python -m jav.evaluate --workdir runs/demo_latent/run --num 16 --out runs/demo_latent/samples

The pixel / log-mel path without VAEs is configs/bounce_demo.py (`make demo`).
Clips of 17 frames (2.125 s: a causal VAE with 4x time compression takes 1 + 4k
frames). The video VAE (4 x 8 x 8, 16 channels) makes 5 x 4 x 4 latents, one
token each (80 tokens of 16 values, against 128 tokens of 384 pixels in
configs/bounce_demo.py); the audio VAE makes 53 tokens of 128 values at 25 per
second. Latents are normalised per channel with statistics kept in the shards'
latent.json, which the sampler reads to decode through the same VAEs.
Token times follow the causal VAE (data.video_time_compression): latent i >= 1
sits at the centre of the four frames it holds. Results against the pixel-space
demo at equal wall-clock are in benchmarks/RESULTS.md ("The demo in latent space").
"""

from configs import common

VIDEO_LATENT = (5, 4, 4, 16)
AUDIO_LATENT = (53, 128)


def get_config(arg=None):
    del arg
    model = common.model(
        video_width=128,
        video_heads=4,
        audio_width=64,
        audio_heads=2,
        depth=4,
        joint="cross_attn",
        video_patch=(1, 1, 1),
        video_channels=VIDEO_LATENT[-1],
        audio_patch=1,
        audio_channels=AUDIO_LATENT[-1],
        text_dim=64,
    )
    model.prediction = "x0"
    # 1,000 steps (about 7 min on 2 CPU cores) keep `make demo`, its two VAEs'
    # training included, at about 24 minutes. A step is 1.64x cheaper than the pixel
    # demo's (133 tokens of 16 / 128 values against 178 of 384 / 256;
    # benchmarks/step_time.py), so 1,300 steps cost the pixel demo's 800 (the
    # equal-training-time comparison in benchmarks/RESULTS.md used
    # --config.train.steps=1300).
    cfg = common.experiment(model, batch_size=16, steps=1000, lr=1e-3, warmup_steps=50)
    cfg.data = dict(
        world="latent",
        video_latent_shape=VIDEO_LATENT,
        audio_latent_shape=AUDIO_LATENT,
        video_time_compression=4,  # token times of a causal VAE's latents at the world's frame rate
        pixel_fps=8,
        fps=2.0,  # latent frames per second (for readers; positions use pixel_fps)
        audio_rate=25.0,  # audio latents per second
        # the world the latents were made from: the evaluation renders its held-out clips with these
        canvas=32,
        duration=2.125,
        sample_rate=16000,
        mel_hop=160,
        mel_bins=64,
        dir="",  # from `python -m jav.data.synthetic --latent ...`
    )
    cfg.train.ema_decay = 0.99
    cfg.train.checkpoint_every = 200
    cfg.sample.text_video = 3.0
    return cfg
