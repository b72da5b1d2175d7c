"""The space the diffusion model works in, behind one codec interface.

`PixelCodec`: the bounce world's pixels in [-1, 1] and normalised log-mel are the
model's arrays. `LatentCodec`: a trained video VAE and audio VAE (runs of the
autoencoder phase, loaded by `jav.runs`) turn pixels and log-mel into latents and
back, with the per-channel normalisation that gives the diffusion model latents
of about zero mean and unit variance. Both take and give the same things:

    codec = codec_from_config(cfg)                       # from the run's shards (latent.json) or pixels
    zv, za = codec.encode(video, logmel)                 # [B, T, H, W, 3] in [-1, 1], [B, Ta, n_mels] -> model arrays
    video, logmel = codec.decode(zv, za)                 # model arrays -> pixels in [-1, 1], log-mel

A latent codec is made once from its two runs and a few hundred clips
(`LatentCodec.load(video_run, audio_run).fitted(video, logmel)`), and kept as a
`latent.json` (the runs and the statistics) beside every shard set it encoded:
`python -m jav.data.synthetic --latent` writes one, `python -m jav.data.latent_stats`
fits one over pixel shards for curation, whose `encode.latent` names it and whose
packed buckets carry it. Samplers read it from the training shards to decode what the
model makes. Encoding takes the posterior mean; decoding to sound goes through the
configured vocoder (Griffin-Lim by default).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from jav.clip_tokens import TokenLayout
from jav.latent_file import read_latent_json, write_latent_json
from jav.runs import load_autoencoder


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


@dataclasses.dataclass(frozen=True)
class PixelCodec:
    """Pixel space: the model's video is the frames in [-1, 1], its audio the normalised log-mel,
    cut to `audio_frames` (the model's audio length) when given."""

    audio_frames: int | None = None
    latent: ClassVar[bool] = False

    def encode_video(self, video) -> np.ndarray:
        return np.asarray(video, np.float32)

    def encode_audio(self, logmel) -> np.ndarray:
        return np.asarray(logmel, np.float32)[:, : self.audio_frames]

    def encode(self, video, logmel) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_video(video), self.encode_audio(logmel)

    def decode(self, video, audio) -> tuple[np.ndarray, np.ndarray]:
        return np.clip(np.asarray(video, np.float32), -1.0, 1.0), np.asarray(audio, np.float32)


@dataclasses.dataclass(frozen=True)
class LatentCodec:
    """Two autoencoder-phase runs and the latent statistics (per modality: mean, std, norm)."""

    video_vae: nnx.Module
    audio_vae: nnx.Module
    video_dir: str = ""
    audio_dir: str = ""
    stats: dict | None = None
    latent: ClassVar[bool] = True

    @classmethod
    def load(cls, video_dir, audio_dir, stats: dict | None = None) -> "LatentCodec":
        """The EMA weights of two autoencoder-phase runs (statistics still to fit, unless given)."""
        kinds = {}
        for name, run in (("video", video_dir), ("audio", audio_dir)):
            if not (epath.Path(run) / "config.json").exists():
                raise FileNotFoundError(
                    f"{name} VAE run {run!r} has no config.json: train it first with `python -m jav.train --config configs/{name}_vae.py --workdir {run}`"
                )
            cfg, model = load_autoencoder(run)
            if cfg.model.kind != f"{name}_vae":
                raise ValueError(f"{run} is a {cfg.model.kind} run, expected a {name}_vae run")
            kinds[name] = model
        return cls(kinds["video"], kinds["audio"], str(video_dir), str(audio_dir), stats)

    @classmethod
    def from_latent_json(cls, path) -> "LatentCodec":
        """The codec a latent.json records (the file, or a shard directory holding one)."""
        info = read_latent_json(path)
        return cls.load(info["video_vae"], info["audio_vae"], info["stats"])

    def latent_shapes(self, video_shape, audio_shape) -> tuple[tuple, tuple]:
        """Pixel / log-mel shapes [T, H, W, 3], [Ta, n_mels] -> latent shapes [t, h, w, c], [ta, d]."""
        zv = jax.eval_shape(lambda v: _encode(*nnx.split(self.video_vae), v), jax.ShapeDtypeStruct((1, *video_shape), jnp.float32))
        za = jax.eval_shape(lambda a: _encode(*nnx.split(self.audio_vae), a), jax.ShapeDtypeStruct((1, *audio_shape), jnp.float32))
        return tuple(zv.shape[1:]), tuple(za.shape[1:])

    def _stats(self, modality: str) -> dict:
        if self.stats is None:
            raise ValueError(
                "this latent codec has no statistics yet: make it with .fitted(video, logmel) over a few "
                "hundred clips, or load a latent.json (LatentCodec.from_latent_json)"
            )
        return self.stats[modality]

    def encode_video(self, video, raw: bool = False) -> np.ndarray:
        """video [B, T, H, W, 3] in [-1, 1] (T = 1 + 4k; one frame for an image) -> normalised posterior
        means [B, t, h, w, c] (raw: not normalised)."""
        z = np.asarray(_encode(*nnx.split(self.video_vae), jnp.asarray(video, jnp.float32)))
        return z if raw else _normalise(z, self._stats("video"))

    def encode_audio(self, logmel, raw: bool = False) -> np.ndarray:
        """log-mel [B, Ta, n_mels] -> normalised posterior means [B, ta, d] (raw: not normalised)."""
        z = np.asarray(_encode(*nnx.split(self.audio_vae), jnp.asarray(logmel, jnp.float32)))
        return z if raw else _normalise(z, self._stats("audio"))

    def fitted(self, video, logmel, norm: dict | None = None) -> "LatentCodec":
        """This codec with the statistics of these clips' latents (`fit_stats`)."""
        stats = fit_stats(self.encode_video(video, raw=True), self.encode_audio(logmel, raw=True), norm)
        return dataclasses.replace(self, stats=stats)

    def encode(self, video, logmel) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_video(video), self.encode_audio(logmel)

    def decode(self, zv, za) -> tuple[np.ndarray, np.ndarray]:
        """Normalised latents -> pixels in [-1, 1] [B, T, H, W, 3] and log-mel [B, Ta, n_mels]."""
        zv = _normalise(np.asarray(zv, np.float32), self._stats("video"), inverse=True)
        za = _normalise(np.asarray(za, np.float32), self._stats("audio"), inverse=True)
        video = _decode(*nnx.split(self.video_vae), True, jnp.asarray(zv))
        logmel = _decode(*nnx.split(self.audio_vae), False, jnp.asarray(za))
        return np.asarray(video), np.asarray(logmel)

    def write_latent_json(self, path, **extra) -> pathlib.Path:
        """The codec's file at `path` (a .json file, or a directory that gets latent.json): the two runs,
        the statistics and `extra` (latent shapes, where they came from)."""
        self._stats("video")
        return write_latent_json(path, dict(video_vae=self.video_dir, audio_vae=self.audio_dir, stats=self.stats, **extra))


def fit_stats(video_latents, audio_latents, norm: dict | None = None) -> dict:
    """Per-channel mean and scale of raw latents [..., c]. norm[modality] picks the scale:
    "channel" (the default) each channel's standard deviation, "shared" one standard deviation
    over all channels (about the mean of each), so channels keep their relative sizes and a
    quiet channel's rare large values are not magnified."""
    norm = {"video": "channel", "audio": "channel", **(norm or {})}

    def stat(z, kind):
        z = np.asarray(z, np.float64).reshape(-1, np.shape(z)[-1])
        mean = z.mean(0)
        if kind == "channel":
            std = z.std(0)
        elif kind == "shared":
            std = np.full_like(mean, np.sqrt(((z - mean) ** 2).mean()))
        else:
            raise ValueError(f"latent normalisation {kind!r}: use 'channel' or 'shared'")
        return {"mean": mean.tolist(), "std": np.maximum(std, 1e-6).tolist(), "norm": kind}

    return {"video": stat(video_latents, norm["video"]), "audio": stat(audio_latents, norm["audio"])}


def codec_from_config(cfg) -> PixelCodec | LatentCodec:
    """The codec a run was trained with: its shards' latent.json in latent space, else pixels (the
    audio cut to the model's length)."""
    if cfg.data.get("world") == "latent":
        return LatentCodec.from_latent_json(cfg.data.dir)
    return PixelCodec(audio_frames=TokenLayout.from_config(cfg).audio_shape[0])
