"""Neural vocoder experiments (jav/models/vocoder.py): `default` (about 0.7 M parameters:
128 channels, 6 ConvNeXt blocks over log-mel frames at 16 kHz, hop 160, 64 mel bins,
the features of jav.data.mel) and `tiny` (for tests).

    python -m jav.train --config configs/vocoder.py:tiny --workdir /tmp/vocoder_tiny
    # 6 steps in about 1.5 min on 2 CPU cores; loss about 2.1 -> 1.3

A run is trained and compared with Griffin-Lim by

    python -m jav.train --config configs/vocoder.py --workdir runs/vocoder
    python -m benchmarks.vocoder --workdir runs/vocoder --vae runs/vae/audio
    # prints onset error, pitch agreement, re-analysed log-mel L1 and speed for
    # Griffin-Lim and the vocoder (also on the audio VAE run's reconstructions);
    # writes runs/vocoder/eval.json

    from jav.models import vocoder
    from jav.runs import load_autoencoder
    cfg, model = load_autoencoder("runs/vocoder"); wave = vocoder.vocode(model, logmel)
"""

import ml_collections

from configs import autoencoder


def vocoder(channels=128, hidden=384, blocks=6, kernel=7, mel_weight=1.0) -> ml_collections.ConfigDict:
    """Keys:
    sample_rate, n_fft, hop, n_mels: the log-mel's features (jav.audio.mel_params.MelParams); the
      vocoder's STFT frames are the log-mel's frames.
    channels, hidden, blocks, kernel: width, MLP width, number and convolution size of the
      ConvNeXt blocks over time.
    prior_floor: power added to the mel pseudo-inverse before its log (the magnitude prior).
    max_log_magnitude: cap on a predicted log magnitude (a full-scale sine's STFT peak is about 4.6).
    resolutions: (n_fft, hop) pairs of the multi-resolution STFT loss.
    mel_weight: weight of the L1 between the output's log-mel and the input's.
    """
    return ml_collections.ConfigDict(
        dict(
            sample_rate=16000,
            n_fft=400,
            hop=160,
            n_mels=64,
            channels=channels,
            hidden=hidden,
            blocks=blocks,
            kernel=kernel,
            prior_floor=1e-8,
            max_log_magnitude=8.0,
            resolutions=((128, 32), (400, 100), (1024, 256)),
            mel_weight=mel_weight,
            dtype="float32",
            param_dtype="float32",
        )
    )


def get_config(arg=None):
    """The autoencoder-phase experiment (configs/autoencoder.py) around `vocoder()`: 'default' or 'tiny'."""
    data = autoencoder.bounce_stream(duration=2.125, fields=("logmel", "wave"))
    if arg in (None, "", "default"):
        return autoencoder.experiment(
            vocoder(),
            "vocoder",
            batch_size=8,
            steps=3000,
            lr=2e-3,
            warmup_steps=50,
            data=data,
            log_every=25,
            checkpoint_every=250,
            eval_every=250,
            ema_decay=0.99,
        )
    if arg == "tiny":
        data.duration, data.eval_clips = 0.64, 2
        return autoencoder.experiment(
            tiny(), "vocoder", batch_size=2, steps=6, lr=3e-3, warmup_steps=1, data=data, log_every=2, checkpoint_every=3, eval_every=3, ema_decay=0.99
        )
    raise ValueError(f"configs/vocoder.py: unknown arg {arg!r}; use 'default' or 'tiny'")


def tiny() -> ml_collections.ConfigDict:
    return vocoder(channels=16, hidden=32, blocks=1)
