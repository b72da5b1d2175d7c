"""The engine-free reference run: every file through the stages in a plain loop, then
near-duplicate removal, writing OUTPUT/manifest.jsonl and OUTPUT/drops.jsonl in the
engine's format (no encoding, no shards).

    python -m data_pipelines.stages.local --input DIR --out DIR
    # prints kept / dropped counts and clips per second per stage (one process)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from data_pipelines.clip import Clip, Drop
from data_pipelines.stages import DEFAULT_STAGES, apply, clip_quality, near_duplicates

MEDIA_SUFFIXES = (".mkv", ".mp4", ".mov", ".webm", ".avi", ".m4v")


def list_inputs(input_dir) -> list[str]:
    root = pathlib.Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--input {root} is not a directory")
    return sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES)


def run_local(paths, stages=DEFAULT_STAGES, max_hamming: int = 3, timings: dict | None = None) -> tuple[list[Clip], list[Drop]]:
    """-> (kept clips without media, drops), deduplicated, sorted by key. `timings` as in `apply`."""
    kept, drops = [], []
    for path in paths:
        clips, dropped = apply(Clip(source=str(path)), stages, timings)
        kept += [c.without_media() for c in clips]
        drops += dropped
    hashed = [(c.key, c.scores["phash"], clip_quality(c)) for c in kept if c.scores.get("phash")]
    dup = near_duplicates(hashed, max_hamming)
    drops += [Drop(c, "dedup", "near_duplicate", f"phash within {max_hamming} bits of a better clip") for c in kept if c.key in dup]
    kept = sorted((c for c in kept if c.key not in dup), key=lambda c: c.key)
    return kept, drops


def write_jsonl(path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--out", required=True, help="directory for manifest.jsonl and drops.jsonl")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = list_inputs(args.input)
    t0 = time.time()
    timings = {}
    kept, drops = run_local(paths, timings=timings)
    write_jsonl(out / "manifest.jsonl", [c.manifest_entry() for c in kept])
    write_jsonl(out / "drops.jsonl", [d.manifest_entry() for d in drops])
    print(f"{len(paths)} files -> {len(kept)} clips kept, {len(drops)} drops in {time.time() - t0:.1f} s; wrote {out}")
    print(f"{'stage':20s} {'clips in':>8s} {'seconds':>8s} {'clips/s':>8s}")
    for name, (seconds, count) in timings.items():
        print(f"{name:20s} {count:8d} {seconds:8.2f} {count / max(seconds, 1e-9):8.1f}")


if __name__ == "__main__":
    main()
