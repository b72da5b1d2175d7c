"""Command line of the curation pipeline.

    python -m data_pipelines.run --config configs/curate.py[:bounce] --input DIR_OR_GLOB --out DIR \
        [--config.KEY=VALUE ...] [Beam pipeline options, e.g. --runner DirectRunner --direct_num_workers 2]

Runs `data_pipelines.pipeline` and prints the counts and how many output files changed (0 on a
re-run over the same input). Flags this program does not know go to Beam, so the same command runs on
    Dataflow: --runner DataflowRunner --project P --region R --temp_location gs://B/tmp
              --requirements_file requirements-beam.txt --setup_file ./setup.py (--out gs://B/curated)
    Flink:    --runner FlinkRunner --flink_master HOST:8081 --environment_type LOOPBACK
    Spark:    --runner SparkRunner --spark_master_url spark://HOST:7077 --environment_type LOOPBACK
(configs/curate.py says more). Re-running the same command skips clips already encoded and
resumes a killed run.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from etils import epath


def output_snapshot(output: str) -> dict[str, tuple]:
    """{path: (size, modification time)} of every file under output except the encode store's
    (local or gs://: a bucket's objects through etils.epath)."""
    if "://" in output:
        return _remote_snapshot(epath.Path(output), "")
    snap = {}
    for root, dirs, names in os.walk(output):
        if os.path.relpath(root, output) == ".":
            dirs[:] = [d for d in dirs if d != "store"]
        for name in names:
            path = os.path.join(root, name)
            st = os.stat(path)
            snap[os.path.relpath(path, output)] = (st.st_size, st.st_mtime_ns)
    return snap


def _remote_snapshot(folder: epath.Path, prefix: str) -> dict[str, tuple]:
    snap = {}
    for path in folder.iterdir() if folder.is_dir() else ():
        rel = prefix + path.name
        if path.is_dir():
            if rel != "store":
                snap.update(_remote_snapshot(path, rel + "/"))
        else:
            st = path.stat()  # os.stat_result locally, epath's StatResult (length, mtime) on a bucket
            snap[rel] = (getattr(st, "st_size", getattr(st, "length", None)), getattr(st, "st_mtime_ns", getattr(st, "mtime", None)))
    return snap


def quiet_beam_logs() -> None:
    """Beam relays every worker's start-up warnings through these loggers; keep the progress readable."""
    for name in ("apache_beam", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


def beam_options(cfg, beam_args: list[str]):
    from apache_beam.options.pipeline_options import PipelineOptions

    defaults = [
        f"--runner={cfg.engine.runner}",
        f"--direct_running_mode={cfg.engine.direct_running_mode}",
        f"--direct_num_workers={cfg.engine.direct_num_workers}",
        "--default_sdk_harness_log_level=WARNING",
    ]  # the workers' INFO lines drown the progress
    return PipelineOptions(defaults + list(beam_args))  # later flags win: the command line over the config


def run(cfg, input_pattern: str, output: str, beam_args: list[str] = (), stage_fns: dict | None = None) -> dict:
    """Run the pipeline to completion; returns report.json's counts plus `changed` (output files
    created, modified or removed, the encode store aside) and `seconds`."""
    try:
        import apache_beam as beam
    except ImportError as e:
        raise ImportError("data_pipelines needs Apache Beam, an optional extra: pip install -r requirements-beam.txt") from e
    from data_pipelines import pipeline

    inputs = pipeline.list_inputs(input_pattern)
    epath.Path(output).mkdir(parents=True, exist_ok=True)
    before = output_snapshot(output)
    start = time.perf_counter()
    p = beam.Pipeline(options=beam_options(cfg, beam_args))
    pipeline.build(p, cfg, inputs, output if "://" in output else os.path.abspath(output), stage_fns)
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - start
    after = output_snapshot(output)
    summary = json.loads((epath.Path(output) / "report.json").read_text())
    summary["changed"] = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    summary["seconds"] = seconds
    summary["inputs"] = len(inputs)
    summary["step_metrics"] = step_metrics(result)
    return summary


def step_metrics(result) -> dict:
    """{step: {clips, seconds}} from the pipeline's Beam counters (empty where a runner reports none)."""
    out = {}
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # a runner without metrics support
        return out
    for c in counters:
        if c.key.metric.namespace != "curation":
            continue
        step, kind = c.key.metric.name.rsplit("/", 1)
        entry = out.setdefault(step, {"clips": 0, "seconds": 0.0})
        value = c.committed if c.committed is not None else c.attempted
        if kind == "clips":
            entry["clips"] += value
        else:
            entry["seconds"] += value / 1e6
    return out


def main(argv: list[str]) -> dict:
    from absl import flags
    from ml_collections import config_flags

    # flags of our own, apart from absl's global ones, which other programs (and tests) define too
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "curation config (configs/curate.py[:bounce])", flag_values=fv, lock_config=True)
    flags.DEFINE_string("input", None, "a directory of media files or a glob", flag_values=fv)
    flags.DEFINE_string("out", None, "output directory: shards/, store/, manifest.jsonl, drops.jsonl, report", flag_values=fv)
    beam_args = fv(argv, known_only=True)[1:]  # what these flags do not name is Beam's
    for name in ("config", "input", "out"):
        if fv[name].value is None:
            raise SystemExit(f"python -m data_pipelines.run: --{name} is required\n\n{__doc__}")
    quiet_beam_logs()
    summary = run(fv.config, fv.input, fv.out, beam_args)
    print(
        f"data_pipelines.run: {summary['inputs']} inputs, kept {summary['kept']} clips "
        f"{summary['kept_by_bucket']}, dropped {summary['dropped']} {summary['dropped_by_reason']}, "
        f"{len(summary['changed'])} output files changed, {summary['seconds']:.1f} s -> {fv.out}",
        flush=True,
    )
    return summary


if __name__ == "__main__":
    main(sys.argv)
