"""Loader speed: batches/s of the flat loader (jav.data.loader) and the bucketed one (jav.data.buckets)
against the rate at which the demo's train step consumes them.

    python -m benchmarks.loader_speed [--data runs/curated/shards] [--batch 16] [--batches 60] [--json OUT]

With --data (a curation run's OUTPUT/shards), the flat loader reads its largest bucket and the
bucketed loader all buckets at equal weights; without it, bounce-world shards are written to a
temporary directory first (128 clips of 16x32x32 and the same clips cut to 8 frames). Each loader
is timed alone (no train step running) after a warm-up, with its default read threads. The demo
(configs/bounce_demo.py) trains at about 1.25 steps/s of 16 clips on the 2-core CPU (the demo
section of benchmarks/RESULTS.md); the target is a loader at least 10x faster than that.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

DEMO_STEPS_PER_S = 1.25  # configs/bounce_demo.py on the 2-core CPU, batch 16 (benchmarks/RESULTS.md)


def _bounce_shards(root: str, num: int) -> None:
    from jav.data import synthetic
    from jav.data.shards import write_shards

    recs = [synthetic.clip_record(seed) for seed in range(num)]
    write_shards(recs, os.path.join(root, "v16x32x32_a200"), records_per_shard=64)
    short = [{**r, "video": r["video"][:8], "audio": r["audio"][:100], "duration": 1.0} for r in recs]
    write_shards(short, os.path.join(root, "v8x32x32_a100"), records_per_shard=64)


def _time(it, batches: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="a directory of bucket shard directories (OUTPUT/shards)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--num", type=int, default=128, help="bounce clips to write when --data is not given")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from jav.data.buckets import find_buckets, make_bucket_loader
    from jav.data.loader import make_loader
    from jav.data.shards import open_shards

    tmp = None
    root = args.data
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = tmp.name
        _bounce_shards(root, args.num)
    names = find_buckets(root)
    largest = max(names, key=lambda n: open_shards(os.path.join(root, n))[0]["num_records"])
    flat = _time(make_loader(os.path.join(root, largest), batch_size=args.batch, seed=0), args.batches)
    bucketed = _time(make_bucket_loader(root, {n: 1.0 for n in names}, batch_size=args.batch, seed=0), args.batches)
    results = {
        "batch": args.batch,
        "flat_bucket": largest,
        "buckets": names,
        "flat_batches_per_s": flat,
        "bucketed_batches_per_s": bucketed,
        "demo_steps_per_s": DEMO_STEPS_PER_S,
        "flat_x_demo": flat / DEMO_STEPS_PER_S,
        "bucketed_x_demo": bucketed / DEMO_STEPS_PER_S,
    }
    print(f"flat loader ({largest}): {flat:.1f} batches/s of {args.batch} = {flat / DEMO_STEPS_PER_S:.0f}x the demo's {DEMO_STEPS_PER_S} steps/s")
    print(f"bucketed loader ({len(names)} buckets, equal weights): {bucketed:.1f} batches/s = {bucketed / DEMO_STEPS_PER_S:.0f}x the demo's step rate")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if tmp is not None:
        tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
