"""Bounce-world training shards: `python -m jav.data.synthetic --out DIR --num N [--seed S]
[--records-per-shard K]` writes N clips (seeds S .. S+N-1) as record shards with a
manifest, video as uint8 frames and audio as the normalised log-mel of `jav.data.mel`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from jav.data import bounce, mel, shards


def _jsonable(x):
    """Bounce metadata holds NumPy arrays and tuples; records take plain JSON."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def clip_record(seed: int, params: bounce.BounceParams = bounce.BounceParams(),
                mel_params: mel.MelParams | None = None) -> dict:
    """One bounce clip as `encode_record` keyword arguments."""
    mel_params = mel_params or mel.MelParams(sample_rate=params.sample_rate)
    clip = bounce.generate_clip(seed, params)
    metadata = _jsonable(clip.metadata)
    # The record's audio is a spectrogram: keep how it was made next to it.
    metadata["audio_repr"] = {"kind": "logmel", **dataclasses.asdict(mel_params)}
    return {"video": clip.frames, "audio": mel.waveform_to_logmel(clip.audio, mel_params), "caption": clip.caption,
            "fps": float(params.fps), "sample_rate": int(params.sample_rate), "duration": float(params.duration),
            "metadata": metadata}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m jav.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="shard directory to write")
    parser.add_argument("--num", type=int, required=True, help="number of clips")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first clip")
    parser.add_argument("--records-per-shard", type=int, default=1024)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    every = max(1, args.num // 10)

    def records():
        for i in range(args.num):
            yield clip_record(args.seed + i)
            if (i + 1) % every == 0 or i + 1 == args.num:
                print(f"{i + 1}/{args.num} clips ({time.perf_counter() - start:.1f} s)", flush=True)

    manifest = shards.write_shards(records(), args.out, args.records_per_shard)
    print(f"wrote {manifest['num_records']} records in {len(manifest['shards'])} shards to {args.out}")
    return manifest


if __name__ == "__main__":
    main(sys.argv[1:])
