"""Joint-mode ablation: the demo model trained with each audio-video coupling,
then scored on held-out captions with the bounce world's metrics.

    python -m benchmarks.joint_ablation --out runs/ablation [--steps 800] [--num 16] [--modes cross_attn joint_attn none]

For each mode (`model.joint.mode`: cross_attn, joint_attn, none) it trains
configs/bounce_demo.py with that mode (same data, seed, steps) into OUT/MODE
through the trainer (so a killed ablation resumes), evaluates OUT/MODE with
`jav.evaluate`, and prints a table of final loss, step rate and metrics; the
table is also written to OUT/summary.json. Shards are written once to OUT/data.
With the defaults (the demo's 800 steps) it takes about 40 minutes on a 2-core CPU;
a finished mode is not trained again, so OUT/cross_attn may be a link to the
demo's run (same config, data and steps).
"""
from __future__ import annotations

import argparse
import json
import pathlib

from jav.data import synthetic
from jav.evaluate import evaluate
from jav.train.trainer import train

from benchmarks.model_stats import load_config

MODES = ("cross_attn", "joint_attn", "none")


def run(out: str, steps: int, num: int, modes=MODES, clips: int = 2000, log=print) -> dict:
    out = pathlib.Path(out)
    data = out / "data"
    if not (data / "manifest.json").exists():
        synthetic.main(["--out", str(data), "--num", str(clips)])
    rows = {}
    for mode in modes:
        cfg = load_config("configs/bounce_demo.py")
        cfg.model.joint.mode = mode
        cfg.data.dir = str(data)
        cfg.train.steps = steps
        log(f"== {mode}: training {steps} steps")
        last = train(cfg, str(out / mode), log=log)
        summary = evaluate(out / mode, num, out=out / mode / "samples", log=log)
        losses = [json.loads(line) for line in (out / mode / "metrics.jsonl").read_text().splitlines()]
        rows[mode] = dict(loss_last=losses[-1]["loss"], loss_video=losses[-1]["loss_video"], loss_audio=losses[-1]["loss_audio"],
                          steps_per_s=last.get("steps_per_s"), metrics=summary["metrics"])
    reference = summary["reference_metrics"]
    keys = list(reference)
    log(f"{'mode':<12} {'loss':>7} {'video':>7} {'audio':>7} " + " ".join(f"{k:>18}" for k in keys))
    for mode, r in rows.items():
        log(f"{mode:<12} {r['loss_last']:7.4f} {r['loss_video']:7.4f} {r['loss_audio']:7.4f} " + " ".join(f"{r['metrics'][k]:18.3f}" for k in keys))
    log(f"{'real clips':<12} {'':>7} {'':>7} {'':>7} " + " ".join(f"{reference[k]:18.3f}" for k in keys))
    result = dict(steps=steps, num=num, rows=rows, reference_metrics=reference)
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--steps", type=int, default=800, help="training steps per mode (the demo's)")
    parser.add_argument("--num", type=int, default=16, help="held-out captions per mode")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    run(args.out, args.steps, args.num, args.modes, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
