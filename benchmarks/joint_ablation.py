"""Joint-mode ablation: a model trained with each audio-video coupling and several
training seeds, then scored per task on held-out clips with the bounce world's metrics.

    python -m benchmarks.joint_ablation --out runs/ablation [--config configs/bounce_demo.py] [--train-steps 800] \
        [--num 16] [--modes cross_attn,joint_attn,none] [--seeds 0,1] [--tasks t2va,v2a,a2v] [--config.KEY=VALUE ...]

For each mode (`model.joint.mode`: cross_attn, joint_attn, none) and training
seed it trains the config with that mode (same data and steps) into
OUT/MODE/sSEED through the trainer (so a killed ablation resumes and a finished
run is not trained again), measures how much of the held-out loss the partner
modality's timing explains (benchmarks.sync_probe), and evaluates it with
`jav.evaluate` on each task (t2va; v2a with the real video given; a2v with the
real audio given). It prints one row per mode and task, the mean over seeds
with their spread, beside the real clips and unrelated sound, and writes
OUT/summary.json. Shards are written once to OUT/data (or taken from
--config.data.dir). `--config.KEY=VALUE` overrides apply to every mode.
"""

from __future__ import annotations

import argparse
import ast
import json
import pathlib

import numpy as np

from jav.data import synthetic
from jav import cli
from jav.evaluate import TASKS, check_tasks, evaluate
from jav.train.diffusion import train

from benchmarks.model_stats import load_config
from benchmarks.sync_probe import probe

MODES = ("cross_attn", "joint_attn", "none")


def _override(cfg, key: str, value: str) -> None:
    *parents, leaf = key.split(".")
    node = cfg
    for name in parents:
        node = node[name]
    old = node[leaf]
    node[leaf] = type(old)(ast.literal_eval(value)) if not isinstance(old, str) else value


def run(
    out: str,
    steps: int,
    num: int,
    modes=MODES,
    seeds=(0,),
    tasks=("t2va", "v2a", "a2v"),
    config: str = "configs/bounce_demo.py",
    overrides: dict | None = None,
    clips: int = 2000,
    log=print,
) -> dict:
    out = pathlib.Path(out)
    overrides = dict(overrides or {})
    data = pathlib.Path(overrides.pop("data.dir", out / "data"))
    if not (data / "manifest.json").exists():
        synthetic.main(["--out", str(data), "--num", str(clips)])
    rows, references = {}, {}
    for mode in modes:
        for seed in seeds:
            cfg = load_config(config)
            for key, value in overrides.items():
                _override(cfg, key, value)
            cfg.model.joint.mode = mode
            if mode != "cross_attn":  # the time bias belongs to the cross-attention's softmax
                cfg.model.joint.time_bias = 0.0
            if mode == "none":  # uncoupled: no aligned path either
                cfg.model.joint.update(aligned=False, frame_tokens=0)
            cfg.data.dir = str(data)
            cfg.train.steps = steps
            cfg.train.seed = seed
            workdir = out / mode / f"s{seed}"
            log(f"== {mode}, seed {seed}: training {steps} steps")
            last = train(cfg, str(workdir), log=log)
            probe_result = probe(str(workdir), num, log=log)
            summaries = evaluate(workdir, num, tasks=tasks, out=workdir / "samples", log=log)
            losses = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
            rows.setdefault(mode, []).append(
                dict(
                    seed=seed,
                    loss_last=losses[-1]["loss"],
                    loss_video=losses[-1]["loss_video"],
                    loss_audio=losses[-1]["loss_audio"],
                    steps_per_s=last.get("steps_per_s"),
                    probe={t: probe_result[t] for t in ("v2a", "a2v")},
                    metrics={t: s["metrics"] for t, s in summaries.items()},
                )
            )
            references = dict(real=summaries[tasks[0]]["reference_metrics"], unrelated=summaries[tasks[0]]["unrelated_metrics"])
    keys = ("colour_accuracy", "pitch_agreement", "sync_error_ms", "event_f1", "num_audio_onsets", "num_video_contacts")
    log(f"{'mode':<11} {'task':<5} {'v2a gain':>9} " + " ".join(f"{k:>22}" for k in keys))
    for mode, runs in rows.items():
        gain = np.asarray([r["probe"]["v2a"]["gain"] for r in runs])
        for task in tasks:
            values = {k: np.asarray([r["metrics"][task][k] for r in runs]) for k in keys}
            log(f"{mode:<11} {task:<5} {100 * gain.mean():8.1f}% " + " ".join(f"{np.nanmean(v):>13.3f} ± {np.nanstd(v):6.3f}" for v in values.values()))
    for name, m in references.items():
        log(f"{name:<17} {'':>9} " + " ".join(f"{m[k]:>22.3f}" for k in keys))
    result = dict(
        config=config,
        overrides=overrides,
        steps=steps,
        num=num,
        seeds=list(seeds),
        tasks=list(tasks),
        rows=rows,
        reference_metrics=references.get("real"),
        unrelated_metrics=references.get("unrelated"),
    )
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--config", default="configs/bounce_demo.py", help="the experiment every mode starts from")
    parser.add_argument("--train-steps", type=int, default=800, help="training steps per run (the pixel demo's)")
    parser.add_argument("--num", type=int, default=16, help="held-out clips per run and task")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, among {','.join(MODES)}")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds per mode")
    parser.add_argument("--tasks", default="t2va,v2a,a2v", help=f"comma-separated, among {','.join(TASKS)}")
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    for item in rest:
        if not item.startswith("--config.") or "=" not in item:
            parser.error(f"unknown argument {item!r}; overrides are --config.KEY=VALUE")
        key, value = item[len("--config.") :].split("=", 1)
        overrides[key] = value
    modes, tasks = cli.comma_list(args.modes), cli.comma_list(args.tasks)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes {','.join(unknown)}: choose among {','.join(MODES)}")
    check_tasks(tasks)
    seeds = [int(s) for s in cli.comma_list(args.seeds)]
    return run(args.out, args.train_steps, args.num, modes, seeds, tasks, args.config, overrides, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
