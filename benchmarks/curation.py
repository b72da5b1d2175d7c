"""Curation throughput: clips per second per stage, and the whole pipeline, with the DirectRunner's parallelism.

    python -m data_pipelines.corpus --out runs/corpus --num 200 --seed 0
    python -m benchmarks.curation --corpus runs/corpus [--workers 2] [--out runs/bench_curated] [--json OUT]

Runs `data_pipelines.run` on the corpus twice into a fresh output directory: a cold run (everything
encoded) and a re-run (finished clips skipped; it must change no output file). Per step it reports
the clips that entered it and the worker-seconds spent in it (Beam counters summed over workers),
so clips per worker-second is the per-stage speed of one core, and the wall-clock clips/s of the
run is what the DirectRunner's `--workers` processes reach together. Results in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, help="raw corpus directory (python -m data_pipelines.corpus)")
    parser.add_argument("--out", default="runs/bench_curated", help="output directory (deleted first)")
    parser.add_argument("--workers", type=int, default=2, help="DirectRunner worker processes")
    parser.add_argument("--config-arg", default="bounce", help="configs/curate.py argument")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from configs import curate
    from data_pipelines import run as run_lib

    run_lib.quiet_beam_logs()
    cfg = curate.get_config(args.config_arg)
    beam_args = ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
    shutil.rmtree(args.out, ignore_errors=True)
    cold = run_lib.run(cfg, args.corpus, args.out, beam_args)
    warm = run_lib.run(cfg, args.corpus, args.out, beam_args)
    order = [name for name in cfg.stages.split(",")] + ["encode"]
    print(
        f"{cold['inputs']} files -> {cold['kept']} clips kept, {cold['dropped']} dropped; "
        f"{args.workers} DirectRunner workers, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    )
    print(f"{'step':<20}{'clips in':>10}{'worker-s':>10}{'clips/worker-s':>16}")
    for name in order:
        m = cold["step_metrics"].get(name)
        if m:
            rate = m["clips"] / m["seconds"] if m["seconds"] else float("inf")
            print(f"{name:<20}{m['clips']:>10}{m['seconds']:>10.2f}{rate:>16.1f}")
    for label, r in (("cold run", cold), ("re-run", warm)):
        print(
            f"{label}: {r['seconds']:.1f} s wall, {r['inputs'] / r['seconds']:.2f} files/s, "
            f"{r['kept'] / r['seconds']:.2f} kept clips/s, {len(r['changed'])} output files changed"
        )
    results = {
        "workers": args.workers,
        "inputs": cold["inputs"],
        "kept": cold["kept"],
        "dropped": cold["dropped"],
        "cold_seconds": cold["seconds"],
        "rerun_seconds": warm["seconds"],
        "rerun_changed_files": warm["changed"],
        "step_metrics": cold["step_metrics"],
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
