"""Evaluation on the bounce world: sample held-out clips for each task, score the samples.

    python -m jav.evaluate --workdir DIR --num N [--tasks t2va,i2va,v2a,a2v] [--out DIR] [--seed 1000000] \
        [--config.sample.steps=64 --config.sample.modality=3 --config.model.dtype=bfloat16 ...]

Takes N bounce-world clips whose seeds start at `--seed` (default 1,000,000:
clips no training set made by `python -m jav.data.synthetic` with fewer than a
million clips contains) and, for each task, samples one clip per caption from the
run's latest checkpoint:

- t2va: video and audio from the caption;
- i2va: the same, the real clip's first frame (first temporal patch) given;
- v2a: audio for the real video (given clean, held at t = 0);
- a2v: video for the real soundtrack.

Each sample is scored with the world's metrics (colour accuracy, pitch
agreement, sync error, event F1; docs/bounce_world.md) on what a viewer
gets: in v2a the real frames with the generated audio, in a2v the generated
frames with the real audio. Two references are printed beside them: the real
clips through the model's own output path (log-mel and Griffin-Lim in pixel
space, the VAEs' round trip as well in latent space), the ceiling; and each
real video with the real soundtrack of the next clip ("unrelated"), what sound
that ignores the picture scores, the floor for sync error and event F1.
Writes OUT/TASK/NNN.mp4, NNN.wav, NNN.json (prompt, settings, metrics) and
OUT/TASK/summary.json (default OUT: WORKDIR/samples); prints one line per clip
and the means.

Sampling settings are the run's config keys, changed for one evaluation by
`--config.KEY=VALUE` as for `jav.sample` (whose docstring lists them); the
sampling flags below are shorthands for the `sample.` keys.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from absl import logging

from jav import cli, distributed

from jav.evaluation import HELD_OUT_SEED, TASKS, check_tasks, evaluate_model

# the library part, named here too for callers of jav.evaluate (benchmarks, tests)
from jav.evaluation import learned_sync, real_arrays, scored_clip, task_conditions, world_params  # noqa: F401
from jav.generate import SAMPLERS
from jav.runs import load_autoencoder, load_run


def evaluate(
    workdir,
    num: int,
    *,
    tasks=("t2va",),
    out=None,
    steps: int | None = None,
    seed: int = HELD_OUT_SEED,
    sample_seed: int = 0,
    batch_size: int = 8,
    weights: str = "ema",
    guidance: dict | None = None,
    sampler: str | None = None,
    noise_level: float | None = None,
    two_stage: bool = False,
    sync_model: str | None = None,
    overrides: dict[str, str] | None = None,
    log=print,
) -> dict:
    """Samples and scores `num` held-out clips for each task -> {task: summary} (also written to OUT/TASK/summary.json).
    `two_stage`: T2VA and I2VA sample the video, then its soundtrack given it (jav.generate.generate).
    `sync_model`: a sync reward model's run directory, whose reading (`learned_sync`) joins the metrics.
    `overrides`: {KEY: VALUE} applied to the run's config first (jav.cli); steps, guidance, sampler
    and noise_level left None come from its `sample` section."""
    check_tasks(tasks)
    cfg, model, step = load_run(workdir, weights, overrides=overrides)
    out = pathlib.Path(out) if out else pathlib.Path(workdir) / "samples"
    scorer = load_autoencoder(sync_model)[1] if sync_model else None
    return evaluate_model(
        model,
        cfg,
        step,
        num,
        tasks=tasks,
        out=out,
        workdir=workdir,
        steps=steps,
        seed=seed,
        sample_seed=sample_seed,
        batch_size=batch_size,
        weights=weights,
        guidance=guidance,
        sampler=sampler,
        noise_level=noise_level,
        two_stage=two_stage,
        scorer=scorer,
        log=log,
    )


def main(argv: list[str] | None = None) -> dict:
    """-> {task: summary}."""
    overrides, argv = cli.split_overrides(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m jav.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="run directory written by `python -m jav.train`")
    parser.add_argument("--num", type=int, default=16, help="number of held-out clips")
    parser.add_argument("--tasks", default="t2va", help=f"comma-separated tasks among {','.join(TASKS)} (default t2va)")
    parser.add_argument("--out", default=None, help="where samples go (default WORKDIR/samples)")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (--config.sample.steps; default: the run's)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="bounce-world seed of the first held-out caption")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the sampler's noise")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--weights", default="ema", choices=("ema", "params"))
    parser.add_argument(
        "--sampler", default=None, choices=SAMPLERS, help="the probability-flow ODE or the flow SDE (--config.sample.sampler; default: the run's, 'ode')"
    )
    parser.add_argument("--noise-level", type=float, default=None, help="the SDE's noise level a (--config.sample.noise_level; default 0.7)")
    parser.add_argument("--cfg-video", type=float, default=None, help="text guidance scale for video (default: the config's sample.text_video)")
    parser.add_argument("--cfg-audio", type=float, default=None, help="text guidance scale for audio (default: the config's sample.text_audio)")
    parser.add_argument("--modality-guidance", type=float, default=None, help="cross-modal guidance scale (default: the config's sample.modality)")
    parser.add_argument(
        "--two-stage",
        action="store_true",
        help="T2VA and I2VA in two stages: the video, then its soundtrack sampled again with that video given (V2A); twice the passes",
    )
    parser.add_argument(
        "--sync-model",
        default=None,
        help="run directory of a sync reward model (configs/sync_reward.py): adds its reading, learned_sync and learned_offset_frames, to every clip's metrics",
    )
    args = parser.parse_args(argv)
    # It loads the weights onto one device and writes every file itself: one process, not one per host.
    distributed.require_single_process("python -m jav.evaluate")
    logging.set_verbosity(logging.ERROR)  # Orbax warns that it reads the run read-only, which is the point
    tasks = cli.comma_list(args.tasks)
    return evaluate(
        args.workdir,
        args.num,
        tasks=tasks,
        out=args.out,
        steps=args.steps,
        seed=args.seed,
        sample_seed=args.sample_seed,
        batch_size=args.batch,
        weights=args.weights,
        sampler=args.sampler,
        noise_level=args.noise_level,
        two_stage=args.two_stage,
        sync_model=args.sync_model,
        overrides=overrides,
        log=lambda m: print(m, flush=True),
        guidance=dict(text_video=args.cfg_video, text_audio=args.cfg_audio, modality=args.modality_guidance),
    )


if __name__ == "__main__":
    cli.run_main("jav.evaluate", main)
