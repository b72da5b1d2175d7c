"""A distilled student against its teacher on the same held-out clips: the world's
metrics per task, network passes per clip (NFE) and sampling seconds per clip.

    python -m benchmarks.distill_compare --teacher runs/demo/run --student runs/demo/distill \
        --num 64 --tasks t2va,v2a --student-steps 4,2,1 [--out runs/demo/compare]

The teacher samples at its config's steps and guidance (the demo's: 32 Euler steps
with text guidance on video, two passes each: 64 NFE); the student at each of
`--student-steps`, one pass a step, at the same guidance scales (an input of the
student). Each is scored by `jav.evaluate` (held-out bounce clips from seed
1,000,000, per-clip noise seeds from 0). Seconds per clip: T2VA sampling of one
batch of `--batch` captions after the sampler is compiled, the median of
`--repeats` timings, both models in this process. Prints a table and writes
OUT/compare.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

from jav import cli, distributed
from jav.clip_tokens import TokenLayout
from jav.data.bounce import generate_clip
from jav.evaluate import HELD_OUT_SEED, evaluate, world_params
from jav.generate import generate
from jav.runs import load_run
from jav.sample import clip_keys
from jav import samplers

METRICS = ("colour_accuracy", "pitch_agreement", "sync_error_ms", "event_f1")


def passes_per_step(model, guidance) -> int:
    """Network passes of one sampler step: a student takes its guidance as input (1);
    a teacher runs the conditional pass plus one per guidance term that is on."""
    return 1 if model.guide is not None else samplers.passes_per_step(guidance)


def seconds_per_clip(workdir, steps: int, batch: int, repeats: int) -> float:
    """Median wall-clock seconds per clip of T2VA sampling, compiled first."""
    cfg, model, _ = load_run(workdir)
    layout = TokenLayout.from_config(cfg)
    captions = [generate_clip(HELD_OUT_SEED + i, world_params(cfg)).caption for i in range(batch)]
    guidance = samplers.guidance_from(cfg)
    keys = clip_keys(range(batch))

    def once():
        start = time.perf_counter()
        generate(model, layout, captions, keys, num_steps=steps, flow_cfg=cfg.flow, guidance=guidance)
        return time.perf_counter() - start

    once()  # compiles
    return statistics.median(once() for _ in range(repeats)) / batch


def compare(teacher, student, *, num: int, tasks, student_steps, out, batch: int = 8, repeats: int = 3, log=print) -> list[dict]:
    rows = []
    runs = [("teacher", teacher, None)] + [("student", student, s) for s in student_steps]
    for role, workdir, steps in runs:
        cfg, model, step = load_run(workdir)
        steps = steps or cfg.sample.steps
        nfe = steps * passes_per_step(model, samplers.guidance_from(cfg))
        log(f"{role} {workdir} (step {step}): {steps} steps, {nfe} NFE per clip")
        summaries = evaluate(workdir, num, tasks=tasks, out=pathlib.Path(out) / f"{role}_{steps}", steps=steps, log=lambda _: None)
        rows.append(
            dict(
                role=role,
                workdir=str(workdir),
                checkpoint_step=step,
                steps=steps,
                nfe=nfe,
                seconds_per_clip=seconds_per_clip(workdir, steps, batch, repeats),
                metrics={task: {k: s["metrics"][k] for k in METRICS} for task, s in summaries.items()},
            )
        )
    return rows


def table(rows: list[dict], tasks) -> str:
    head = "| model | steps | NFE | s / clip | speed-up | " + " | ".join(f"{t.upper()} colour / pitch / sync ms / F1" for t in tasks) + " |"
    lines = [head, "|" + "---|" * (5 + len(tasks))]
    base = rows[0]["seconds_per_clip"]
    for r in rows:
        cells = [" / ".join(f"{r['metrics'][t][k]:.3f}" if k != "sync_error_ms" else f"{r['metrics'][t][k]:.1f}" for k in METRICS) for t in tasks]
        lines.append(
            f"| {r['role']} | {r['steps']} | {r['nfe']} | {r['seconds_per_clip']:.3f} | {base / r['seconds_per_clip']:.1f}x | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="the teacher's run directory")
    parser.add_argument("--student", required=True, help="the distilled student's run directory (configs/distill.py)")
    parser.add_argument("--num", type=int, default=64, help="held-out clips per task")
    parser.add_argument("--tasks", default="t2va,v2a")
    parser.add_argument("--student-steps", default="4,2,1", help="comma-separated step counts for the student")
    parser.add_argument("--batch", type=int, default=8, help="captions per timed sampling batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches (the median is kept)")
    parser.add_argument("--out", default=None, help="samples and compare.json (default: STUDENT/compare)")
    args = parser.parse_args(argv)
    distributed.require_single_process("python -m benchmarks.distill_compare")
    tasks = cli.comma_list(args.tasks)
    out = pathlib.Path(args.out or pathlib.Path(args.student) / "compare")
    rows = compare(
        args.teacher,
        args.student,
        num=args.num,
        tasks=tasks,
        student_steps=[int(s) for s in cli.comma_list(args.student_steps)],
        out=out,
        batch=args.batch,
        repeats=args.repeats,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(dict(num=args.num, caption_seed=HELD_OUT_SEED, rows=rows), indent=2))
    print(table(rows, tasks))
    print(f"wrote {out / 'compare.json'}")


if __name__ == "__main__":
    main()
