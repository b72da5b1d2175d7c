"""Bounce-world training shards: `python -m jav.data.synthetic --out DIR --num N [--seed S]
[--records-per-shard K]` writes N clips (seeds S .. S+N-1) as record shards with a
manifest, video as uint8 frames and audio as the normalised log-mel of `jav.data.mel`.

With `--latent --video-vae RUN --audio-vae RUN` (trained autoencoder-phase runs)
the records hold normalised VAE latents instead (`jav.latents`): the latent
statistics come from the first `--stats-clips` clips and are kept, with the two
runs, in DIR/latent.json for the sampler to decode with. `--duration` sets the
clip length (a causal video VAE with 4x time compression needs 1 + 4k frames:
2.125 s at 8 fps is 17). `--text-encoder hf:DIR` (or builtin:RUN) stores each
caption's embedding from a frozen encoder (`jav.data.text_embeddings`), for
models with `model.text.encoder = "precomputed"`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
from etils import epath

from jav.clip_tokens import frames_to_model
from jav.data import bounce, mel, shards
from jav.data.text_embeddings import add_text_embeddings
from jav.frozen_text_encoder import load_text_encoder
from jav.latents import LatentCodec


def _jsonable(x):
    """Bounce metadata holds NumPy arrays and tuples; records take plain JSON."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def clip_record(seed: int, params: bounce.BounceParams = bounce.BounceParams(), mel_params: mel.MelParams | None = None) -> dict:
    """One bounce clip as `encode_record` keyword arguments."""
    mel_params = mel_params or mel.MelParams(sample_rate=params.sample_rate)
    clip = bounce.generate_clip(seed, params)
    metadata = _jsonable(clip.metadata)
    # The record's audio is a spectrogram: keep how it was made next to it.
    metadata["audio_repr"] = {"kind": "logmel", **dataclasses.asdict(mel_params)}
    return {
        "video": clip.frames,
        "audio": mel.waveform_to_logmel(clip.audio, mel_params),
        "caption": clip.caption,
        "fps": float(params.fps),
        "sample_rate": int(params.sample_rate),
        "duration": float(params.duration),
        "metadata": metadata,
    }


def latent_records(args, params: bounce.BounceParams, log=print):
    """Bounce clips encoded by the two VAEs; writes DIR/latent.json (runs and statistics) first."""
    codec = LatentCodec.load(args.video_vae, args.audio_vae)
    mp = mel.MelParams(sample_rate=params.sample_rate)

    def arrays(seeds):
        recs = [clip_record(s, params, mp) for s in seeds]
        return recs, np.stack([frames_to_model(r["video"]) for r in recs]), np.stack([r["audio"] for r in recs])

    _, video, logmel = arrays(range(args.seed, args.seed + min(args.num, args.stats_clips)))
    codec = codec.fitted(video, logmel, {"video": args.video_norm, "audio": args.audio_norm})
    zv, za = codec.latent_shapes(video.shape[1:], logmel.shape[1:])
    epath.Path(args.out).mkdir(parents=True, exist_ok=True)
    codec.write_latent_json(
        args.out,
        video_latent_shape=zv,
        audio_latent_shape=za,
        stats_clips=min(args.num, args.stats_clips),
        world=dataclasses.asdict(params) | {"fps": params.fps},
        mel=dataclasses.asdict(mp),
    )
    log(f"latents: video {zv}, audio {za}; statistics from {min(args.num, args.stats_clips)} clips in {args.out}/latent.json")
    for start in range(args.seed, args.seed + args.num, args.batch):
        recs, video, logmel = arrays(range(start, min(start + args.batch, args.seed + args.num)))
        lv, la = codec.encode(video, logmel)
        for rec, v, a in zip(recs, lv, la):
            rec["metadata"]["audio_repr"] = {"kind": "audio_vae_latent", "run": str(args.audio_vae)}
            rec["metadata"]["video_repr"] = {"kind": "video_vae_latent", "run": str(args.video_vae)}
            yield dict(rec, video=v.astype(np.float32), audio=a.astype(np.float32))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m jav.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="shard directory to write")
    parser.add_argument("--num", type=int, required=True, help="number of clips")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first clip")
    parser.add_argument("--records-per-shard", type=int, default=1024)
    parser.add_argument("--duration", type=float, default=None, help="clip length in seconds (default: the world's 2 s)")
    parser.add_argument("--latent", action="store_true", help="write VAE latents (needs --video-vae and --audio-vae)")
    parser.add_argument("--video-vae", default=None, help="trained video VAE run (python -m jav.train --config configs/video_vae.py)")
    parser.add_argument("--audio-vae", default=None, help="trained audio VAE run (python -m jav.train --config configs/audio_vae.py)")
    parser.add_argument("--stats-clips", type=int, default=256, help="clips the latent statistics are measured on")
    parser.add_argument(
        "--video-norm",
        default="channel",
        choices=("channel", "shared"),
        help="--latent: scale each video latent channel to unit variance, or all by one shared scale",
    )
    parser.add_argument("--audio-norm", default="channel", choices=("channel", "shared"), help="--latent: the same for audio")
    parser.add_argument("--batch", type=int, default=32, help="clips encoded together (--latent, --text-encoder)")
    parser.add_argument("--text-encoder", default=None, help="precompute caption embeddings into the records: hf:DIR (a T5 / UMT5 directory) or builtin:RUN")
    parser.add_argument("--text-len", type=int, default=64, help="caption tokens kept with --text-encoder")
    args = parser.parse_args(argv)
    if args.latent and not (args.video_vae and args.audio_vae):
        parser.error("--latent needs --video-vae RUN and --audio-vae RUN (runs of python -m jav.train --config configs/{video,audio}_vae.py)")
    params = bounce.BounceParams() if args.duration is None else bounce.BounceParams(duration=args.duration)
    start = time.perf_counter()
    every = max(1, args.num // 10)

    def records():
        source = (
            latent_records(args, params, log=lambda m: print(m, flush=True)) if args.latent else (clip_record(args.seed + i, params) for i in range(args.num))
        )
        for i, record in enumerate(source):
            yield record
            if (i + 1) % every == 0 or i + 1 == args.num:
                print(f"{i + 1}/{args.num} clips ({time.perf_counter() - start:.1f} s)", flush=True)

    recs = records()
    if args.text_encoder:
        recs = add_text_embeddings(recs, load_text_encoder(args.text_encoder, max_len=args.text_len), batch_size=args.batch)
    manifest = shards.write_shards(recs, args.out, args.records_per_shard)
    print(f"wrote {manifest['num_records']} records in {len(manifest['shards'])} shards to {args.out}")
    return manifest


if __name__ == "__main__":
    main(sys.argv[1:])
