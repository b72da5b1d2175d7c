"""The latent space the diffusion model works in: a trained video VAE and audio
VAE (runs of the autoencoder phase, loaded by `jav.runs`) that turn pixels
and log-mel into latents and back, and the per-channel normalisation that gives
the diffusion model latents of about zero mean and unit variance.

    codec = LatentCodec.load("runs/vae/video", "runs/vae/audio")
    stats = codec.fit_stats(video, logmel)               # once, over a few hundred clips
    zv, za = codec.encode(video, logmel, stats)          # [B, t, h, w, c], [B, ta, d]
    video, logmel = codec.decode(zv, za, stats)          # pixels in [-1, 1], normalised log-mel

A latent shard set (`python -m jav.data.synthetic --latent ...`) keeps the
codec's run directories and the statistics in its `latent.json`; the sampler
reads them from there (`codec_from_config`) to decode what the model makes.
Encoding takes the posterior mean; decoding to sound goes through the
configured vocoder (Griffin-Lim by default).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jav.runs import load_autoencoder

LATENT_JSON = "latent.json"


@functools.partial(jax.jit, static_argnums=0)
def _encode(graphdef, state, x):
    return nnx.merge(graphdef, state).encode(x)[0]


@functools.partial(jax.jit, static_argnums=(0, 2))
def _decode(graphdef, state, clip, z):
    out = nnx.merge(graphdef, state).decode(z)
    return jnp.clip(out, -1.0, 1.0) if clip else out


def _normalise(z, stats, inverse=False):
    mean, std = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
    return z * std + mean if inverse else (z - mean) / std


@dataclasses.dataclass
class LatentCodec:
    video_vae: nnx.Module
    audio_vae: nnx.Module
    video_dir: str = ""
    audio_dir: str = ""

    @classmethod
    def load(cls, video_dir, audio_dir) -> "LatentCodec":
        """The EMA weights of two autoencoder-phase runs."""
        kinds = {}
        for name, run in (("video", video_dir), ("audio", audio_dir)):
            if not (pathlib.Path(run) / "config.json").exists():
                raise FileNotFoundError(f"{name} VAE run {run!r} has no config.json: train it first with "
                                        f"`python -m jav.train --config configs/{name}_vae.py --workdir {run}`")
            cfg, model = load_autoencoder(run)
            if cfg.model.kind != f"{name}_vae":
                raise ValueError(f"{run} is a {cfg.model.kind} run, expected a {name}_vae run")
            kinds[name] = model
        return cls(kinds["video"], kinds["audio"], str(video_dir), str(audio_dir))

    def latent_shapes(self, video_shape, audio_shape) -> tuple[tuple, tuple]:
        """Pixel / log-mel shapes [T, H, W, 3], [Ta, n_mels] -> latent shapes [t, h, w, c], [ta, d]."""
        zv = jax.eval_shape(lambda v: _encode(*nnx.split(self.video_vae), v), jax.ShapeDtypeStruct((1, *video_shape), jnp.float32))
        za = jax.eval_shape(lambda a: _encode(*nnx.split(self.audio_vae), a), jax.ShapeDtypeStruct((1, *audio_shape), jnp.float32))
        return tuple(zv.shape[1:]), tuple(za.shape[1:])

    def encode_video(self, video, stats: dict | None = None) -> np.ndarray:
        """video [B, T, H, W, 3] in [-1, 1] (T = 1 + 4k; one frame for an image) -> posterior means
        [B, t, h, w, c], normalised by stats["video"] when given."""
        z = np.asarray(_encode(*nnx.split(self.video_vae), jnp.asarray(video, jnp.float32)))
        return z if stats is None else _normalise(z, stats["video"])

    def encode_audio(self, logmel, stats: dict | None = None) -> np.ndarray:
        """log-mel [B, Ta, n_mels] -> posterior means [B, ta, d], normalised by stats["audio"] when given."""
        z = np.asarray(_encode(*nnx.split(self.audio_vae), jnp.asarray(logmel, jnp.float32)))
        return z if stats is None else _normalise(z, stats["audio"])

    def fit_stats(self, video, logmel, norm: dict | None = None) -> dict:
        """Per-channel mean and scale of the latents of these clips. norm[modality] picks the
        scale: "channel" (the default) each channel's standard deviation, "shared" one
        standard deviation over all channels (about the mean of each), so channels keep
        their relative sizes and a quiet channel's rare large values are not magnified."""
        norm = {"video": "channel", "audio": "channel", **(norm or {})}

        def stat(z, kind):
            z = z.reshape(-1, z.shape[-1])
            mean = z.mean(0)
            if kind == "channel":
                std = z.std(0)
            elif kind == "shared":
                std = np.full_like(mean, np.sqrt(((z - mean) ** 2).mean()))
            else:
                raise ValueError(f"latent normalisation {kind!r}: use 'channel' or 'shared'")
            return {"mean": mean.tolist(), "std": np.maximum(std, 1e-6).tolist(), "norm": kind}

        return {"video": stat(self.encode_video(video), norm["video"]), "audio": stat(self.encode_audio(logmel), norm["audio"])}

    def encode(self, video, logmel, stats: dict) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_video(video, stats), self.encode_audio(logmel, stats)

    def decode(self, zv, za, stats: dict) -> tuple[np.ndarray, np.ndarray]:
        """Normalised latents -> pixels in [-1, 1] [B, T, H, W, 3] and log-mel [B, Ta, n_mels]."""
        zv = _normalise(np.asarray(zv, np.float32), stats["video"], inverse=True)
        za = _normalise(np.asarray(za, np.float32), stats["audio"], inverse=True)
        video = _decode(*nnx.split(self.video_vae), True, jnp.asarray(zv))
        logmel = _decode(*nnx.split(self.audio_vae), False, jnp.asarray(za))
        return np.asarray(video), np.asarray(logmel)


def write_latent_json(data_dir, codec: LatentCodec, stats: dict, **extra) -> None:
    info = dict(video_vae=codec.video_dir, audio_vae=codec.audio_dir, stats=stats, **extra)
    (pathlib.Path(data_dir) / LATENT_JSON).write_text(json.dumps(info, indent=2))


def read_latent_json(data_dir) -> dict:
    path = pathlib.Path(data_dir) / LATENT_JSON
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: latent shards are written by `python -m jav.data.synthetic --latent "
                                "--video-vae DIR --audio-vae DIR`, which records the VAEs and latent statistics there")
    return json.loads(path.read_text())


def codec_from_config(cfg) -> tuple[LatentCodec, dict]:
    """The codec and statistics a latent-space run was trained with (from its shards' latent.json)."""
    info = read_latent_json(cfg.data.dir)
    return LatentCodec.load(info["video_vae"], info["audio_vae"]), info["stats"]
