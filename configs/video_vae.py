"""Causal video VAE configs (jav/models/video_vae.py): `bounce` (the default,
4 x 8 x 8 with 16 latent channels, as Wan2.1) and `ltx2` (8 x 32 x 32 with 128
channels, as LTX-2: a 4 x 4 patch then three downsamplings).

Not yet a runnable experiment: the VAE training phase and wiring latents into
the data path and sampler are later work. Today these configs build the model:

    from configs import video_vae
    from jav.models import video_vae as V
    vae = V.init_vae(video_vae.get_config("bounce"), jax.random.key(0))
    mean, logvar = V.encode_chunked(vae, clip)       # clip [B, 1 + 4k, H, W, 3] in [-1, 1]
    frames = V.decode_tiled(vae, mean, tile_latents=32, overlap_latents=8)
"""
import ml_collections


def vae(compression=(4, 8, 8), patch=1, latent_channels=16, widths=(64, 128, 256, 256), blocks=2) -> ml_collections.ConfigDict:
    """Keys:
      compression: (time, height, width) factors, each a power of two; clips
        need 1 + time * k frames and sides divisible by the spatial factor.
      patch: spatial space-to-depth at the input (and back at the output),
        part of the height / width factor.
      latent_channels: channels per latent position (the KL bottleneck's size).
      widths: channels at each resolution level, full resolution first; one
        entry per level, so log2(height factor / patch) + 1 of them.
      blocks: residual blocks per level, in the encoder and in the decoder.
      logvar_range: clip on the encoder's log-variance, so exp() stays finite.
      chunk_latents: latent frames per temporal chunk in encode_chunked /
        decode_chunked / *_tiled (0 = the whole clip at once).
      tile_latents, overlap_latents: latent pixels per spatial tile and shared
        by neighbouring tiles in encode_tiled / decode_tiled (0 tile = no tiling).
    """
    return ml_collections.ConfigDict(dict(
        compression=tuple(compression),
        patch=patch,
        in_channels=3,
        latent_channels=latent_channels,
        widths=tuple(widths),
        blocks=blocks,
        logvar_range=(-30.0, 20.0),
        chunk_latents=4,
        tile_latents=0,
        overlap_latents=2,
        dtype="float32",
        param_dtype="float32",
    ))


def get_config(arg=None):
    if arg in (None, "", "bounce"):
        return vae()
    if arg == "ltx2":
        return vae(compression=(8, 32, 32), patch=4, latent_channels=128, widths=(128, 256, 512, 512), blocks=2)
    raise ValueError(f"configs/video_vae.py: unknown arg {arg!r}; use 'bounce' or 'ltx2'")
