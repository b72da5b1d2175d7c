"""Audio VAE configs (jav/models/audio_vae.py): `ltx2` (the default: 64 mel bins
at hop 160 -> 128-d tokens at 25 per second, 4x down in time and frequency
with 8 latent channels, as LTX-2's audio VAE) and `tiny` (the same shapes at a
few thousand parameters, for tests).

Not yet a runnable experiment: the VAE training phase and wiring latents into
the data path and sampler are later work. Today these configs build the model,
and `python -m benchmarks.audio_vae` trains one briefly on the bounce world:

    from configs import audio_vae
    from jav.models.audio_vae import init_vae
    vae = init_vae(audio_vae.get_config("ltx2"), jax.random.key(0))
"""
import ml_collections


def vae(n_mels=64, channels=(64, 128, 256), downsample=((2, 2), (2, 2)), blocks=1, latent_channels=8,
        kl_weight=1e-4) -> ml_collections.ConfigDict:
    """Keys:
      n_mels: mel bins of the input (jav.data.mel.MelParams.n_mels).
      channels: width at each resolution, full resolution first; one more entry than downsample.
      downsample: (time, frequency) stride between consecutive resolutions; their
        products are the latent's time and frequency reduction.
      blocks: residual blocks at each resolution, in the encoder and in the decoder.
      latent_channels: channels per latent frequency bin; a token has
        (n_mels / frequency reduction) * latent_channels features.
      causal: convolutions see no later frames.
      kl_weight: weight of the KL term (per latent value) beside the mean L1 reconstruction.
    """
    return ml_collections.ConfigDict(dict(
        n_mels=n_mels,
        channels=tuple(channels),
        downsample=tuple(tuple(s) for s in downsample),
        blocks=blocks,
        latent_channels=latent_channels,
        causal=True,
        kl_weight=kl_weight,
        dtype="float32",
        param_dtype="float32",
    ))


def get_config(arg=None):
    if arg in (None, "", "ltx2"):
        return vae()
    if arg == "tiny":
        return vae(channels=(8, 16, 32), blocks=0)
    raise ValueError(f"configs/audio_vae.py: unknown arg {arg!r}; use 'ltx2' or 'tiny'")
