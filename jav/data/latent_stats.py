"""A latent codec's statistics, fitted over pixel shards:

    python -m jav.data.latent_stats --video-vae RUN --audio-vae RUN --shards DIR --out FILE [--num 256]

DIR is a shard directory of pixel records (uint8 frames and normalised log-mel: a curation run's
`shards/<bucket>` without `encode.latent`, or `python -m jav.data.synthetic` output). The first
`--num` records are encoded by the two autoencoder-phase runs and the per-channel mean and scale of
their posterior means are written, with the runs and the latent shapes, to FILE (a latent.json;
a directory gets DIR/latent.json). Curation then encodes latents with `--config.encode.latent=FILE`
and packs the same file beside every bucket's shards, where samplers read it.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

import numpy as np

from jav.clip_tokens import frames_to_model
from jav.data.record import decode_record
from jav.data.shards import open_shards
from jav.latent_file import LATENT_JSON
from jav.latents import LatentCodec, fit_stats


def pixel_clips(shards: str, num: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `num` records of a pixel shard directory -> video [N, T, H, W, 3] in [-1, 1], log-mel [N, Ta, n_mels]."""
    manifest, source = open_shards(shards)
    if manifest["num_records"] == 0:
        raise ValueError(f"{shards} holds no records")
    video, audio = [], []
    for i in range(min(num, manifest["num_records"])):
        rec = decode_record(source[i], source=shards)
        kind = rec["metadata"].get("audio_repr", {}).get("kind", "logmel")
        if rec["video"].dtype != np.uint8 or kind != "logmel":
            raise ValueError(
                f"{shards} holds {rec['video'].dtype} video / {kind} audio: fit latent statistics over "
                "pixel shards (uint8 frames, log-mel), not over shards that already hold latents"
            )
        video.append(frames_to_model(rec["video"]))
        audio.append(rec["audio"])
    try:
        return np.stack(video), np.stack(audio)
    except ValueError:
        raise ValueError(f"{shards} mixes clip shapes; fit over one bucket's directory (shards/<bucket>)") from None


def fit(video_vae: str, audio_vae: str, shards: str, out: str, num: int = 256, norm: dict | None = None, batch: int = 32, log=print) -> pathlib.Path:
    """Fits the codec's statistics over `num` clips of `shards` and writes its latent.json to `out`."""
    start = time.perf_counter()
    video, logmel = pixel_clips(shards, num)
    codec = LatentCodec.load(video_vae, audio_vae)
    raw_v = np.concatenate([codec.encode_video(video[i : i + batch], raw=True) for i in range(0, len(video), batch)])
    raw_a = np.concatenate([codec.encode_audio(logmel[i : i + batch], raw=True) for i in range(0, len(logmel), batch)])

    codec = dataclasses.replace(codec, stats=fit_stats(raw_v, raw_a, norm))
    path = codec.write_latent_json(
        out, video_latent_shape=raw_v.shape[1:], audio_latent_shape=raw_a.shape[1:], stats_clips=len(video), stats_shards=str(shards)
    )
    log(
        f"latent statistics of {len(video)} clips of {shards}: video latents {raw_v.shape[1:]}, audio {raw_a.shape[1:]} "
        f"-> {path} ({time.perf_counter() - start:.1f} s)"
    )
    return path


def main(argv: list[str] | None = None) -> pathlib.Path:
    parser = argparse.ArgumentParser(prog="python -m jav.data.latent_stats", description=__doc__.split("\n")[0])
    parser.add_argument("--video-vae", required=True, help="trained video VAE run (python -m jav.train --config configs/video_vae.py)")
    parser.add_argument("--audio-vae", required=True, help="trained audio VAE run (python -m jav.train --config configs/audio_vae.py)")
    parser.add_argument("--shards", required=True, help="a pixel shard directory (one clip shape)")
    parser.add_argument("--out", required=True, help=f"the codec file to write (a .json file, or a directory to hold {LATENT_JSON})")
    parser.add_argument("--num", type=int, default=256, help="clips the statistics are measured on")
    parser.add_argument(
        "--video-norm", default="channel", choices=("channel", "shared"), help="scale each video latent channel to unit variance, or all by one shared scale"
    )
    parser.add_argument("--audio-norm", default="channel", choices=("channel", "shared"), help="the same for audio")
    parser.add_argument("--batch", type=int, default=32, help="clips encoded together")
    args = parser.parse_args(argv)
    try:
        return fit(args.video_vae, args.audio_vae, args.shards, args.out, args.num, {"video": args.video_norm, "audio": args.audio_norm}, args.batch)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"python -m jav.data.latent_stats: {e}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
