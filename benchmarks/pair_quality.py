"""How far apart the two sounds of on-policy SyncDPO pairs are, by the world's own metrics.

    python -m benchmarks.pair_quality --pairs runs/demo/pairs --workdir runs/demo/run

Decodes each pair's generated picture with its preferred sound (the run's V2A given that
picture) and with its rejected one (the sound sampled beside the picture, T2VA) and scores
both by `jav.data.bounce_metrics.clip_metrics`, as jav.evaluate scores samples. A report
only: training never reads these metrics (the pairs are chosen by sampling mode alone).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from jav.clip_tokens import TokenLayout
from jav.data.bounce_metrics import aggregate, clip_metrics
from jav.evaluation import world_params
from jav.runs import load_config
from jav.sampling import clip_decoder
from jav.train.sync_dpo import load_pairs


def score_pairs(pairs_dir, workdir, limit: int | None = None) -> dict:
    """-> {"preferred": aggregate, "rejected": aggregate, "per_clip": [(preferred sync ms, rejected sync ms)]}."""
    cfg = load_config(workdir)
    pairs = load_pairs(pairs_dir, TokenLayout.from_config(cfg))
    captions = [str(c) for c in pairs["captions"]]
    n = len(captions) if limit is None else min(limit, len(captions))
    decode, world = clip_decoder(cfg), world_params(cfg)
    out = {}
    for name, key in (("preferred", "audio"), ("rejected", "audio_moved")):
        metrics = []
        for start in range(0, n, 16):
            rows = slice(start, min(n, start + 16))
            for (frames, wave), caption in zip(decode(pairs["video"][rows], pairs[key][rows]), captions[rows]):
                metrics.append(clip_metrics(frames, wave, caption, world))
        out[name] = metrics
    per_clip = [(p["sync_error_ms"], r["sync_error_ms"]) for p, r in zip(out["preferred"], out["rejected"])]
    return dict(num=n, preferred=aggregate(out["preferred"]), rejected=aggregate(out["rejected"]), per_clip=per_clip)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.pair_quality", description=__doc__.split("\n")[0])
    p.add_argument("--pairs", required=True, help="a directory made by python -m jav.train.policy_pairs")
    p.add_argument("--workdir", required=True, help="the run that made them (its config decodes the clips)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N pairs")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args(argv)
    result = score_pairs(a.pairs, a.workdir, a.limit)
    both = [(x, y) for x, y in result["per_clip"] if np.isfinite(x) and np.isfinite(y)]
    for name in ("preferred", "rejected"):
        m = result[name]
        print(f"{name:9s}: " + "  ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, (int, float))))
    if both:
        d = np.array([x - y for x, y in both])
        print(f"pairs judged on both sides: {len(both)} of {result['num']}")
        print(f"preferred - rejected sync error: mean {d.mean():+.1f} ms, median {np.median(d):+.1f} ms")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
