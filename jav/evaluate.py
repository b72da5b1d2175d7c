"""Evaluation on the bounce world: sample held-out clips for each task, score the samples.

    python -m jav.evaluate --workdir DIR --num N [--task t2va,i2va,v2a,a2v] [--out DIR] [--steps S] [--seed 1000000]

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
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
from absl import logging

from jav import distributed, samplers
from jav.clip_tokens import TokenLayout, clip_to_arrays, frames_to_model, mel_params, pixel_fps
from jav.data import mel
from jav.data.bounce import BounceParams, generate_clip
from jav.data.bounce_metrics import aggregate, clip_metrics
from jav.generate import SAMPLERS
from jav.latents import codec_from_config
from jav.runs import load_autoencoder, load_run
from jav.sample import clip_decoder, sample_clips, write_sample

TASKS = ("t2va", "i2va", "v2a", "a2v")
HELD_OUT_SEED = 1_000_000


def world_params(cfg) -> BounceParams:
    """The bounce world a run was trained on."""
    d = cfg.data
    return BounceParams(canvas=d.canvas, fps=pixel_fps(cfg), duration=d.duration, sample_rate=d.sample_rate)


def real_arrays(cfg, clips) -> tuple[np.ndarray, np.ndarray]:
    """The real clips in the model's space -> video [N, ...], audio [N, ...]: pixels in [-1, 1]
    and log-mel, encoded by the shards' VAEs and normalised in latent space."""
    mp = mel_params(cfg)
    arrays = [clip_to_arrays(c.frames, c.audio, mp) for c in clips]
    video, audio = np.stack([v for v, _ in arrays]), np.stack([a for _, a in arrays])
    if cfg.data.get("world") != "latent":
        return video, audio[:, :TokenLayout.from_config(cfg).audio_shape[0]]
    codec, stats = codec_from_config(cfg)
    return codec.encode(video, audio, stats)


def task_conditions(cfg, task: str, video: np.ndarray, audio: np.ndarray) -> dict:
    """Model-space real clips -> `sample_clips(conditions=...)` for a task."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {TASKS}")
    if task == "i2va":
        return {"first_frame": video[:, :TokenLayout.from_config(cfg).video_patch[0]]}
    return {"v2a": {"video": video}, "a2v": {"audio": audio}}.get(task, {})


def scored_clip(task: str, clip, sample: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What a viewer of a task's output sees and hears: the given modality as it was given."""
    frames, wave = sample
    if task == "v2a":
        return clip.frames, wave
    if task == "a2v":
        return frames, clip.audio
    return frames, wave


def learned_sync(scorer, frames: np.ndarray, wave: np.ndarray, cfg) -> dict:
    """The sync reward model's reading of one clip (jav/models/sync_reward.py): `learned_sync`, its
    probability that the sound is in sync with the picture, and `learned_offset_frames`, the offset it
    reads (whole video frames, positive: the sound late). Only as good as that model: on held-out
    clips it tells another clip's sound from the clip's own (AUC 0.86) far better than a 250 ms shift
    (AUC 0.56; benchmarks/RESULTS.md, "Reward tuning"), so it ranks colour and pitch mismatches before timing."""
    from jav.models.sync_reward import predicted_offset, reward

    video = frames_to_model(frames)[None]
    logmel = mel.waveform_to_logmel(np.asarray(wave, np.float32), mel_params(cfg))[None]
    return dict(learned_sync=float(np.exp(reward(scorer, video, logmel)[0])),
                learned_offset_frames=float(predicted_offset(scorer, video, logmel)[0]))


def _line(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())


def evaluate(workdir, num: int, *, tasks=("t2va",), out=None, steps: int | None = None, seed: int = HELD_OUT_SEED,
             sample_seed: int = 0, batch_size: int = 8, weights: str = "ema", guidance: dict | None = None, sampler: str = "ode",
             noise_level: float = 0.7, two_stage: bool = False, sync_model: str | None = None, log=print) -> dict:
    """Samples and scores `num` held-out clips for each task -> {task: summary} (also written to OUT/TASK/summary.json).
    `two_stage`: T2VA and I2VA sample the video, then its soundtrack given it (jav.generate.generate).
    `sync_model`: a sync reward model's run directory, whose reading (`learned_sync`) joins the metrics."""
    check_tasks(tasks)
    cfg, model, step = load_run(workdir, weights)
    out = pathlib.Path(out) if out else pathlib.Path(workdir) / "samples"
    scorer = load_autoencoder(sync_model)[1] if sync_model else None
    return evaluate_model(model, cfg, step, num, tasks=tasks, out=out, workdir=workdir, steps=steps, seed=seed, sample_seed=sample_seed,
                          batch_size=batch_size, weights=weights, guidance=guidance, sampler=sampler, noise_level=noise_level,
                          two_stage=two_stage, scorer=scorer, log=log)


def check_tasks(tasks) -> None:
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"--task {task!r} is not one of {', '.join(TASKS)}")


def evaluate_model(model, cfg, step: int, num: int, *, tasks, out, workdir=None, steps: int | None = None, seed: int = HELD_OUT_SEED,
                   sample_seed: int = 0, batch_size: int = 8, weights: str = "ema", guidance: dict | None = None, sampler: str = "ode",
                   noise_level: float = 0.7, two_stage: bool = False, scorer=None, show_steps: bool = True, log=print) -> dict:
    """`evaluate` for a model in memory (the trainer's, during training) -> {task: summary}, written under `out`.
    `scorer`: a sync reward model (jav.models.sync_reward) whose reading joins each clip's metrics."""
    check_tasks(tasks)
    out = pathlib.Path(out)
    steps = steps or cfg.sample.steps
    world = world_params(cfg)
    clips = [generate_clip(seed + i, world) for i in range(num)]
    captions = [c.caption for c in clips]
    guidance = samplers.guidance_from(cfg, **(guidance or {}))
    log(f"{'loaded ' + str(workdir) + ' ' if workdir else ''}step {step} ({weights}); {num} held-out clips (seeds {seed}..{seed + num - 1}), "
        f"{steps} steps, tasks {', '.join(tasks)}")
    video, audio = real_arrays(cfg, clips)
    to_clips = clip_decoder(cfg)

    def score(frames, wave, caption):
        m = clip_metrics(frames, wave, caption, world)
        return dict(m, **learned_sync(scorer, frames, wave, cfg)) if scorer is not None else m

    references = [score(*ref, clip.caption) for clip, ref in zip(clips, to_clips(video, audio))]
    # each real video with the next clip's real soundtrack: sound that ignores the picture
    unrelated = [score(clip.frames, clips[(i + 1) % num].audio, clip.caption) for i, clip in enumerate(clips)]
    scales = dict(text_video=guidance.text_video, text_audio=guidance.text_audio, modality=guidance.modality)
    staged = {task: two_stage and task in ("t2va", "i2va") for task in tasks}
    # network passes per clip: a distilled student guides inside its one pass
    passes = 1 if model.guide is not None else samplers.passes_per_step(guidance)
    summaries = {}
    for task in tasks:
        start = time.time()
        log(f"[{task}] sampling")
        samples = sample_clips(model, cfg, captions, seed=sample_seed, steps=steps, batch_size=min(batch_size, num), guidance=guidance,
                               conditions=task_conditions(cfg, task, video, audio), sampler=sampler, noise_level=noise_level,
                               two_stage=staged[task], show_steps=show_steps, log=log)
        task_out = out / task
        results = []
        nfe = steps * passes * (2 if staged[task] else 1)
        for i, (clip, sample) in enumerate(zip(clips, samples)):
            frames, wave = scored_clip(task, clip, sample)
            m = score(frames, wave, clip.caption)
            results.append(m)
            info = dict(task=task, prompt=clip.caption, workdir=str(workdir), checkpoint_step=step, weights=weights, seed=sample_seed + i,
                        batch_size=min(batch_size, num), steps=steps, nfe=nfe, sampler=sampler, two_stage=staged[task], caption_seed=seed + i,
                        guidance=scales, metrics=m)
            write_sample(task_out, i, frames, wave, cfg, info)
            log(f"[{task}] {i:03d} {clip.caption!r}: {_line(m)}")
        summary = dict(task=task, workdir=str(workdir), checkpoint_step=step, weights=weights, num=num, caption_seed=seed,
                       sample_seed=sample_seed, steps=steps, nfe=nfe, guidance=scales, sampler=sampler, two_stage=staged[task],
                       noise_level=noise_level if sampler == "sde" else None,
                       metrics=aggregate(results), reference_metrics=aggregate(references),
                       unrelated_metrics=aggregate(unrelated), seconds=time.time() - start)
        (task_out / "summary.json").write_text(json.dumps(summary, indent=2))
        summaries[task] = summary
    log(f"{'':>22}  " + "  ".join(f"{k:>10}" for k in ("colour", "pitch", "sync ms", "event F1")))
    rows = [(f"{t} samples", s["metrics"]) for t, s in summaries.items()]
    rows += [("real clips", aggregate(references)), ("unrelated sound", aggregate(unrelated))]
    for name, m in rows:
        log(f"{name + f' ({num})':>22}  " + "  ".join(f"{m[k]:>10.3f}" for k in ("colour_accuracy", "pitch_agreement", "sync_error_ms", "event_f1")))
    log(f"wrote {out}/TASK/NNN.mp4 and summary.json")
    return summaries


def main(argv: list[str] | None = None) -> dict:
    """-> {task: summary}."""
    parser = argparse.ArgumentParser(prog="python -m jav.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="run directory written by `python -m jav.train`")
    parser.add_argument("--num", type=int, default=16, help="number of held-out clips")
    parser.add_argument("--task", default="t2va", help=f"comma-separated tasks among {','.join(TASKS)} (default t2va)")
    parser.add_argument("--out", default=None, help="where samples go (default WORKDIR/samples)")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: the config's sample.steps)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="bounce-world seed of the first held-out caption")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the sampler's noise")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--weights", default="ema", choices=("ema", "params"))
    parser.add_argument("--sampler", default="ode", choices=SAMPLERS, help="the probability-flow ODE or the flow SDE (jav.sample --sampler)")
    parser.add_argument("--noise-level", type=float, default=0.7, help="the SDE's noise level a (--sampler sde)")
    parser.add_argument("--cfg-video", type=float, default=None, help="text guidance scale for video (default: the config's sample.text_video)")
    parser.add_argument("--cfg-audio", type=float, default=None, help="text guidance scale for audio (default: the config's sample.text_audio)")
    parser.add_argument("--modality-guidance", type=float, default=None, help="cross-modal guidance scale (default: the config's sample.modality)")
    parser.add_argument("--two-stage", action="store_true", help="T2VA and I2VA in two stages: the video, then its soundtrack "
                        "sampled again with that video given (V2A); twice the passes")
    parser.add_argument("--sync-model", default=None, help="run directory of a sync reward model (configs/sync_reward.py): "
                        "adds its reading, learned_sync and learned_offset_frames, to every clip's metrics")
    args = parser.parse_args(argv)
    # It loads the weights onto one device and writes every file itself: one process, not one per host.
    distributed.require_single_process("python -m jav.evaluate")
    logging.set_verbosity(logging.ERROR)  # Orbax warns that it reads the run read-only, which is the point
    tasks = tuple(t.strip() for t in args.task.split(",") if t.strip())
    return evaluate(args.workdir, args.num, tasks=tasks, out=args.out, steps=args.steps, seed=args.seed, sample_seed=args.sample_seed,
                    batch_size=args.batch, weights=args.weights, sampler=args.sampler, noise_level=args.noise_level, two_stage=args.two_stage,
                    sync_model=args.sync_model, log=lambda m: print(m, flush=True),
                    guidance=dict(text_video=args.cfg_video, text_audio=args.cfg_audio, modality=args.modality_guidance))


if __name__ == "__main__":
    main()
