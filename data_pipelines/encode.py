"""Encoding a curated clip into the arrays of a training record, in the shape of its bucket.

Default: pixels (uint8 frames resampled to the bucket's fps, area-resized and centre-cropped to
its height x width) and the normalised log-mel of `jav.data.mel` (audio mixed to mono and
resampled to the mel rate). Optional, when the config names them: normalised latents through
the latent codec of `encode.latent` (a latent.json: two VAE runs and their statistics,
`jav.latents`; the same latent space `jav.data.synthetic --latent` writes, packed beside the
shards so samplers decode with it) and text embeddings (`jav.frozen_text_encoder.load_text_encoder`).
Those pull in JAX and the models, so they are imported only when a config uses them.

A shape bucket is "FRAMESxHEIGHTxWIDTH" at the config's fps; its audio length follows from the
duration. Its name, e.g. "v16x32x32_a200", names the shard directory it is packed into.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
from scipy import signal

from data_pipelines.clip import Clip
from jav.data import mel
from jav.latent_file import read_latent_json


@dataclasses.dataclass(frozen=True)
class Bucket:
    frames: int
    height: int
    width: int
    fps: float
    audio_frames: int  # log-mel frames

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    @property
    def name(self) -> str:
        return f"v{self.frames}x{self.height}x{self.width}_a{self.audio_frames}"


def mel_params(cfg) -> mel.MelParams:
    return mel.MelParams(**dict(cfg.encode.mel))


def parse_buckets(cfg) -> list[Bucket]:
    """cfg.encode.buckets "16x32x32,8x32x32" at cfg.encode.fps -> buckets; raises naming the bad entry."""
    params, out = mel_params(cfg), []
    for spec in str(cfg.encode.buckets).split(","):
        try:
            t, h, w = (int(v) for v in spec.strip().lower().split("x"))
        except ValueError:
            raise ValueError(f"encode.buckets entry {spec!r} is not FRAMESxHEIGHTxWIDTH (e.g. 16x32x32); fix --config.encode.buckets") from None
        if min(t, h, w) < 1:
            raise ValueError(f"encode.buckets entry {spec!r} has a size below 1; fix --config.encode.buckets")
        samples = round(t / cfg.encode.fps * params.sample_rate)
        out.append(Bucket(t, h, w, float(cfg.encode.fps), samples // params.hop))
    return out


def choose_bucket(clip: Clip, buckets: list[Bucket]) -> Bucket | None:
    """The longest bucket that fits in the clip; among those, the largest that needs no upscaling
    (else the smallest). None when the clip is shorter than every bucket."""
    fits = [b for b in buckets if b.duration <= clip.duration + 0.5 / b.fps]
    if not fits:
        return None
    longest = max(b.duration for b in fits)
    fits = [b for b in fits if b.duration == longest]
    height, width = clip.video.shape[1:3]
    no_upscale = [b for b in fits if b.height <= height and b.width <= width]
    if no_upscale:
        return max(no_upscale, key=lambda b: (b.height * b.width, b.name))
    return min(fits, key=lambda b: (b.height * b.width, b.name))


def _area_matrix(n_in: int, n_out: int, offset: float, span: float) -> np.ndarray:
    """[n_out, n_in] weights averaging input cells over each output cell's interval (box filter)."""
    edges = offset + np.arange(n_out + 1) * span / n_out  # output cell edges in input coordinates
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resize_crop(video: np.ndarray, height: int, width: int) -> np.ndarray:
    """[T, H, W, C] uint8 -> [T, height, width, C] uint8: scale to cover, centre-crop, area-average."""
    _, h, w, _ = video.shape
    scale = max(height / h, width / w)
    span_h, span_w = height / scale, width / scale  # the centred window of the input that is kept
    mh = _area_matrix(h, height, (h - span_h) / 2, span_h).astype(np.float32)  # [height, H]
    mw = _area_matrix(w, width, (w - span_w) / 2, span_w).astype(np.float32)  # [width, W]
    t, c = video.shape[0], video.shape[3]
    out = np.matmul(mh, video.astype(np.float32).reshape(t, h, w * c)).reshape(t, height, w, c)
    out = np.matmul(out.transpose(0, 1, 3, 2), mw.T).transpose(0, 1, 3, 2)  # [T, height, width, C]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def resample_frames(video: np.ndarray, src_fps: float, bucket: Bucket) -> np.ndarray:
    """The source frame shown at each of the bucket's frame times (nearest earlier frame)."""
    times = np.arange(bucket.frames) / bucket.fps
    index = np.minimum(np.floor(times * src_fps + 1e-6).astype(int), len(video) - 1)
    return video[index]


def audio_logmel(audio: np.ndarray, sample_rate: int, bucket: Bucket, params: mel.MelParams) -> np.ndarray:
    """[S, C] float at sample_rate -> normalised log-mel [bucket.audio_frames, n_mels] of the bucket's duration."""
    wave = np.asarray(audio, np.float64).mean(axis=1)
    if sample_rate != params.sample_rate:
        g = math.gcd(int(sample_rate), params.sample_rate)
        wave = signal.resample_poly(wave, params.sample_rate // g, int(sample_rate) // g)
    need = bucket.audio_frames * params.hop
    wave = np.pad(wave[:need], (0, max(0, need - len(wave))))
    return mel.waveform_to_logmel(wave.astype(np.float32), params)


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def fingerprint(cfg) -> str:
    """Digest of the settings that change encoded bytes: a clip encoded under others is encoded again.
    A latent codec counts by its contents (runs and statistics), not only its path."""
    enc = cfg.encode.to_dict() if hasattr(cfg.encode, "to_dict") else dict(cfg.encode)
    if enc.get("latent"):
        enc["latent_codec"] = read_latent_codec(enc["latent"])
    return hashlib.sha256(json.dumps(enc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_latent_codec(path: str) -> dict:
    """The codec file `encode.latent` names (jav.latent_file), its errors naming the key."""
    try:
        return read_latent_json(path)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"encode.latent={path!r}: {e}") from None


class Encoders:
    """The optional learned encoders named by the config, loaded once per worker on first use."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._loaded = None

    def _load(self):
        enc, out = self.cfg.encode, {}
        if enc.latent:
            try:
                from jav.latents import LatentCodec
            except ImportError as e:
                raise ImportError(f"encode.latent needs jav.latents ({e}); leave it empty to store pixels and log-mel") from e
            out["latent"] = LatentCodec.from_latent_json(enc.latent)
        if enc.text_encoder:
            try:
                from jav.frozen_text_encoder import load_text_encoder
            except ImportError as e:
                raise ImportError(f"encode.text_encoder needs jav.frozen_text_encoder.load_text_encoder ({e}); leave it empty to store captions only") from e
            out["text"] = load_text_encoder(enc.text_encoder)
        return out

    def get(self) -> dict:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded


def encode_clip(clip: Clip, bucket: Bucket, cfg, encoders: Encoders | None = None) -> tuple[dict, dict]:
    """(arrays, fields): the record's arrays and its other fields (caption, fps, sample_rate, duration,
    metadata, bucket). The clip must carry decoded video and audio (the `load` stage)."""
    if clip.video is None or clip.audio is None:
        raise ValueError(
            f"encode_clip: clip {clip.key} of {clip.source} has no decoded {'video' if clip.video is None else 'audio'}; put the 'load' stage before encoding"
        )
    if not (clip.fps or 0) > 0 or not (clip.sample_rate or 0) > 0:
        raise ValueError(f"encode_clip: clip {clip.key} of {clip.source} has fps={clip.fps}, sample_rate={clip.sample_rate}; the 'probe' stage sets them")
    params = mel_params(cfg)
    frames = resize_crop(resample_frames(clip.video, clip.fps, bucket), bucket.height, bucket.width)
    logmel = audio_logmel(clip.audio, clip.sample_rate, bucket, params)
    arrays = {"video": frames, "audio": logmel}
    metadata = jsonable(clip.without_media().manifest_entry())
    metadata["bucket"] = bucket.name
    metadata["audio_repr"] = {"kind": "logmel", **dataclasses.asdict(params)}
    learned = encoders.get() if encoders is not None else {}
    if "latent" in learned:  # the model's latent space: both modalities through one codec
        from jav.clip_tokens import frames_to_model

        codec = learned["latent"]
        zv, za = codec.encode(frames_to_model(frames)[None], logmel[None])
        arrays["video"], arrays["audio"] = np.asarray(zv[0], np.float32), np.asarray(za[0], np.float32)
        metadata["video_repr"] = {"kind": "video_vae_latent", "run": codec.video_dir}
        metadata["audio_repr"] = {"kind": "audio_vae_latent", "run": codec.audio_dir, "of": metadata["audio_repr"]}
    if "text" in learned:
        emb, mask = learned["text"].encode([clip.caption or ""])
        arrays["text_emb"] = np.asarray(emb[0], np.float32)
        arrays["text_mask"] = np.asarray(mask[0], bool)
    fields = {
        "caption": clip.caption or "",
        "fps": float(bucket.fps),
        "sample_rate": int(params.sample_rate),
        "duration": float(bucket.duration),
        "metadata": metadata,
        "bucket": bucket.name,
    }
    return arrays, fields
