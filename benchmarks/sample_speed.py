"""Sampling throughput of a run: how many compiles and clips/s `jav.sample`'s
batching (`sample_clips`) takes for many prompts.

    python -m benchmarks.sample_speed --workdir runs/reference/run --num 256 --batch 8
    python -m benchmarks.sample_speed --workdir runs/reference/run --num 64 --batch 8 --recompile-each-batch

Captions are the bounce world's held-out scenes (seeds 1,000,000 on); each clip
is sampled with its own noise seed, the run's sampling settings (steps, guidance)
unless overridden, and decoded to frames and a waveform as `jav.sample` writes
them (nothing is written to disk). Compiles are counted by JAX's backend-compile
events, persistent-cache hits included as "loaded". `--recompile-each-batch`
reproduces what sampling cost before one jitted function served every batch (a
new progress closure per batch was a new static argument): the caches are
cleared before each batch and the persistent cache is off. Prints one JSON line;
`--json FILE` appends it.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
from jax import monitoring

from benchmarks.distill_compare import passes_per_step
from jav import cli, samplers
from jav.data.bounce import caption_for, sample_scene
from jav.evaluate import HELD_OUT_SEED
from jav.runs import load_run
from jav.sample import sample_clips

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def measure(workdir: str, num: int, batch: int, steps: int | None = None, recompile_each_batch: bool = False, log=print) -> dict:
    cfg, model, step = load_run(workdir)
    steps = steps or cfg.sample.steps
    guidance = samplers.guidance_from(cfg)
    captions = [caption_for(sample_scene(HELD_OUT_SEED + i)) for i in range(num)]
    counts = {"compiles": 0, "loaded": 0}

    def on_duration(event, _seconds, **_):
        if event == _COMPILE_EVENT:
            counts["compiles"] += 1

    def on_event(event, **_):
        if event == _CACHE_HIT_EVENT:
            counts["loaded"] += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)
    cache_was_on = jax.config.jax_enable_compilation_cache
    if recompile_each_batch:
        jax.config.update("jax_enable_compilation_cache", False)
    batch_seconds, batch_compiles = [], []
    try:
        for start in range(0, num, batch):
            if recompile_each_batch:
                jax.clear_caches()
            began, compiled_before = time.perf_counter(), counts["compiles"]
            sample_clips(model, cfg, captions[start : start + batch], seed=start, steps=steps, batch_size=batch, guidance=guidance, log=lambda _: None)
            batch_seconds.append(time.perf_counter() - began)
            batch_compiles.append(counts["compiles"] - compiled_before)
            log(f"batch {len(batch_seconds)}: {batch_seconds[-1]:.1f}s, {batch_compiles[-1]} compile(s)")
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_was_on)
        monitoring.unregister_event_duration_listener(on_duration)
        monitoring.unregister_event_listener(on_event)
    total = sum(batch_seconds)
    steady = batch_seconds[1:] or batch_seconds
    return dict(
        workdir=workdir,
        checkpoint_step=step,
        clips=num,
        batch=batch,
        steps=steps,
        nfe_per_clip=steps * passes_per_step(model, guidance),
        recompile_each_batch=recompile_each_batch,
        compiles=counts["compiles"],
        compiles_per_batch=batch_compiles,
        persistent_cache_loads=counts["loaded"],
        seconds=round(total, 2),
        first_batch_seconds=round(batch_seconds[0], 2),
        clips_per_s=round(num / total, 3),
        steady_clips_per_s=round(len(steady) * batch / sum(steady), 3),
        device=str(jax.devices()[0]),
        date=time.strftime("%Y-%m-%d"),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a run directory written by `python -m jav.train`")
    parser.add_argument("--num", type=int, default=256, help="number of prompts")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: the config's sample.steps)")
    parser.add_argument("--recompile-each-batch", action="store_true", help="clear the caches before every batch (the old cost)")
    parser.add_argument("--json", default=None, help="append the result line to this file")
    args = parser.parse_args(argv)
    result = measure(args.workdir, args.num, args.batch, args.steps, args.recompile_each_batch)
    print(json.dumps(result))
    if args.json:
        cli.append_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
