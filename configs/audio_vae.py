"""Audio VAE experiments (jav/models/audio_vae.py) for the autoencoder phase:

    python -m jav.train --config configs/audio_vae.py --workdir runs/vae/audio_phase
    # 'ltx2' (default): 64 mel bins at hop 160 -> 128-d tokens at 25 per second
    # (4x down in time and frequency, 8 latent channels, as LTX-2's audio VAE),
    # widths 32/64/128, on 2.125 s bounce clips (212 frames -> 53 tokens); logs
    # l1, weighted_l1, flux_l1, kl, and eval_* on held-out clips
    python -m jav.train --config configs/audio_vae.py:tiny --workdir /tmp/audio_vae_tiny
    # 6 steps of a 0.02 M-parameter model in about 1.5 min on 2 CPU cores; loss 1.06 -> about 0.45

    python -m benchmarks.audio_vae --workdir runs/vae/audio_phase
    # held-out log-mel L1, onsets and pitch after Griffin-Lim, latent statistics;
    # writes runs/vae/audio_phase/eval.json

The loss weighs each log-mel bin by its level above the clip's floor and adds a
time-difference term (`burst_gain`, `flux_weight`), so the sparse bursts are not
drowned by the noise floor and their onsets stay sharp. A run loads with
`cfg, vae = jav.runs.load_autoencoder(workdir)` (its EMA weights); `vae()` /
`tiny()` are the model keys alone.
"""

import ml_collections

from configs import autoencoder


def vae(
    n_mels=64, channels=(32, 64, 128), downsample=((2, 2), (2, 2)), blocks=1, latent_channels=8, kl_weight=1e-4, burst_gain=8.0, flux_weight=1.0
) -> ml_collections.ConfigDict:
    """Keys:
    n_mels: mel bins of the input (jav.audio.mel_params.MelParams.n_mels).
    channels: width at each resolution, full resolution first; one more entry than downsample.
    downsample: (time, frequency) stride between consecutive resolutions; their
      products are the latent's time and frequency reduction.
    blocks: residual blocks at each resolution, in the encoder and in the decoder.
    latent_channels: channels per latent frequency bin; a token has
      (n_mels / frequency reduction) * latent_channels features.
    causal: convolutions see no later frames.
    kl_weight: weight of the KL term (per latent value) beside the reconstruction terms.
    burst_gain: the reconstruction L1 weighs a bin 1 + burst_gain * (its level above the clip's
      per-bin median), so sparse bursts are not drowned by the noise floor (0: plain L1).
    flux_weight: weight of the (burst-weighted) L1 of frame-to-frame differences, which keeps onsets sharp.
    """
    return ml_collections.ConfigDict(
        dict(
            n_mels=n_mels,
            channels=tuple(channels),
            downsample=tuple(tuple(s) for s in downsample),
            blocks=blocks,
            latent_channels=latent_channels,
            causal=True,
            kl_weight=kl_weight,
            burst_gain=burst_gain,
            flux_weight=flux_weight,
            dtype="float32",
            param_dtype="float32",
        )
    )


def get_config(arg=None):
    """The autoencoder-phase experiment (configs/autoencoder.py) around `vae()`: 'ltx2' (default) or 'tiny'."""
    data = autoencoder.bounce_stream(duration=2.125, fields=("logmel",))  # 212 log-mel frames -> 53 tokens
    if arg in (None, "", "ltx2"):
        model = vae()
        return autoencoder.experiment(
            model,
            "audio_vae",
            batch_size=8,
            steps=3000,
            lr=2e-3,
            warmup_steps=100,
            data=data,
            loss_cfg=autoencoder.loss(kl_weight=model.kl_weight),
            log_every=25,
            checkpoint_every=250,
            eval_every=250,
            ema_decay=0.995,
        )
    if arg == "demo":
        # `make demo`'s audio VAE: the model of record trained on short clips (0.64 s
        # = 64 log-mel frames, most hold a burst; the VAE is convolutional, so it
        # encodes the demo's 2.125 s clips as well); 700 steps, 14 min beside the
        # video VAE on 2 CPU cores (9 min alone), log-mel L1 0.041 held-out
        # (benchmarks/RESULTS.md, "The demo")
        cfg = get_config("ltx2")
        cfg.data.duration, cfg.data.eval_clips = 0.64, 32
        cfg.optim.warmup_steps = 50
        t = cfg.train
        t.batch_size, t.steps, t.ema_decay, t.log_every, t.checkpoint_every, t.eval_every = 16, 700, 0.99, 50, 100, 350
        return cfg
    if arg == "tiny":
        model = tiny()
        data.duration, data.eval_clips = 0.64, 2  # 64 log-mel frames
        return autoencoder.experiment(
            model,
            "audio_vae",
            batch_size=2,
            steps=6,
            lr=3e-3,
            warmup_steps=1,
            data=data,
            loss_cfg=autoencoder.loss(kl_weight=model.kl_weight),
            log_every=2,
            checkpoint_every=3,
            eval_every=3,
            ema_decay=0.9,
        )
    raise ValueError(f"configs/audio_vae.py: unknown arg {arg!r}; use 'ltx2', 'demo' or 'tiny'")


def tiny() -> ml_collections.ConfigDict:
    """The default's shapes at a few thousand parameters, for tests."""
    return vae(channels=(8, 16, 32), blocks=0)
