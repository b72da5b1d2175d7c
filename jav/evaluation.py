"""Scoring a model in memory on the bounce world: held-out captions sampled per task
(T2VA, I2VA, V2A, A2V), each clip scored by the world's metrics (docs/bounce_world.md)
beside the real clips and unrelated sound, the clips and summaries written as
`jav.evaluate` writes them. The command-line tool and the trainer's evaluation
during training (jav/train/diffusion.py) both run `evaluate_model`.
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np

from jav import samplers
from jav.clip_tokens import TokenLayout, clip_to_arrays, frames_to_model, mel_params, pixel_fps
from jav.data import mel
from jav.data.bounce import BounceParams, generate_clip
from jav.data.bounce_metrics import aggregate, clip_metrics
from jav.latents import codec_from_config
from jav.sampling import clip_decoder, sample_clips, write_sample

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
    return codec_from_config(cfg).encode(np.stack([v for v, _ in arrays]), np.stack([a for _, a in arrays]))


def task_conditions(cfg, task: str, video: np.ndarray, audio: np.ndarray) -> dict:
    """Model-space real clips -> `sample_clips(conditions=...)` for a task."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {TASKS}")
    if task == "i2va":
        return {"first_frame": video[:, : TokenLayout.from_config(cfg).video_patch[0]]}
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
    reads (whole video frames, positive: the sound late). Only as good as that model (the 8,000-step
    configs/sync_reward.py model on held-out 2 s clips: AUC 0.988 against a 250 ms shift, 0.975
    against another clip's sound; benchmarks/RESULTS.md, "Reward tuning"). A model with event heads
    also gives `learned_event_agreement`, the soft event F1 of its per-frame readings (`event_agreement`)."""
    from jav.models.sync_reward import event_agreement, predicted_offset, reward

    video = frames_to_model(frames)[None]
    logmel = mel.waveform_to_logmel(np.asarray(wave, np.float32), mel_params(cfg))[None]
    out = dict(learned_sync=float(np.exp(reward(scorer, video, logmel)[0])), learned_offset_frames=float(predicted_offset(scorer, video, logmel)[0]))
    if scorer.events is not None:
        out["learned_event_agreement"] = float(event_agreement(scorer, video, logmel)[0])
    return out


def _line(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())


def check_tasks(tasks) -> None:
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"--tasks {task!r} is not one of {', '.join(TASKS)}")


def evaluate_model(
    model,
    cfg,
    step: int,
    num: int,
    *,
    tasks,
    out,
    workdir=None,
    steps: int | None = None,
    seed: int = HELD_OUT_SEED,
    sample_seed: int = 0,
    batch_size: int = 8,
    weights: str = "ema",
    guidance: dict | None = None,
    sampler: str | None = None,
    noise_level: float | None = None,
    two_stage: bool = False,
    scorer=None,
    show_steps: bool = True,
    log=print,
) -> dict:
    """`evaluate` for a model in memory (the trainer's, during training) -> {task: summary}, written under `out`.
    `scorer`: a sync reward model (jav.models.sync_reward) whose reading joins each clip's metrics. Steps,
    sampler and noise level left None come from cfg.sample."""
    check_tasks(tasks)
    out = pathlib.Path(out)
    steps = steps or cfg.sample.steps
    sampler = sampler or cfg.sample.sampler
    noise_level = cfg.sample.noise_level if noise_level is None else noise_level
    world = world_params(cfg)
    clips = [generate_clip(seed + i, world) for i in range(num)]
    captions = [c.caption for c in clips]
    guidance = samplers.guidance_from(cfg, **(guidance or {}))
    log(
        f"{'loaded ' + str(workdir) + ' ' if workdir else ''}step {step} ({weights}); {num} held-out clips (seeds {seed}..{seed + num - 1}), "
        f"{steps} steps, tasks {', '.join(tasks)}"
    )
    video, audio = real_arrays(cfg, clips)
    to_clips = clip_decoder(cfg)

    def score(frames, wave, caption):
        m = clip_metrics(frames, wave, caption, world)
        return dict(m, **learned_sync(scorer, frames, wave, cfg)) if scorer is not None else m

    references = [score(*ref, clip.caption) for clip, ref in zip(clips, to_clips(video, audio))]
    # each real video with the next clip's real soundtrack: sound that ignores the picture
    unrelated = [score(clip.frames, clips[(i + 1) % num].audio, clip.caption) for i, clip in enumerate(clips)]
    scales = guidance.record()
    staged = {task: two_stage and task in ("t2va", "i2va") for task in tasks}
    # network passes per clip: a distilled student guides inside its one pass
    passes = 1 if model.guide is not None else samplers.passes_per_step(guidance)
    summaries = {}
    for task in tasks:
        start = time.time()
        log(f"[{task}] sampling")
        samples = sample_clips(
            model,
            cfg,
            captions,
            seed=sample_seed,
            steps=steps,
            batch_size=min(batch_size, num),
            guidance=guidance,
            conditions=task_conditions(cfg, task, video, audio),
            sampler=sampler,
            noise_level=noise_level,
            two_stage=staged[task],
            show_steps=show_steps,
            log=log,
        )
        task_out = out / task
        results = []
        nfe = steps * passes * (2 if staged[task] else 1)
        for i, (clip, sample) in enumerate(zip(clips, samples)):
            frames, wave = scored_clip(task, clip, sample)
            m = score(frames, wave, clip.caption)
            results.append(m)
            info = dict(
                task=task,
                prompt=clip.caption,
                workdir=str(workdir),
                checkpoint_step=step,
                weights=weights,
                seed=sample_seed + i,
                batch_size=min(batch_size, num),
                steps=steps,
                nfe=nfe,
                sampler=sampler,
                two_stage=staged[task],
                caption_seed=seed + i,
                guidance=scales,
                metrics=m,
            )
            write_sample(task_out, i, frames, wave, cfg, info)
            log(f"[{task}] {i:03d} {clip.caption!r}: {_line(m)}")
        summary = dict(
            task=task,
            workdir=str(workdir),
            checkpoint_step=step,
            weights=weights,
            num=num,
            caption_seed=seed,
            sample_seed=sample_seed,
            steps=steps,
            nfe=nfe,
            guidance=scales,
            sampler=sampler,
            two_stage=staged[task],
            noise_level=noise_level if sampler == "sde" else None,
            metrics=aggregate(results),
            reference_metrics=aggregate(references),
            unrelated_metrics=aggregate(unrelated),
            seconds=time.time() - start,
        )
        (task_out / "summary.json").write_text(json.dumps(summary, indent=2))
        summaries[task] = summary
    log(f"{'':>22}  " + "  ".join(f"{k:>10}" for k in ("colour", "pitch", "sync ms", "event F1")))
    rows = [(f"{t} samples", s["metrics"]) for t, s in summaries.items()]
    rows += [("real clips", aggregate(references)), ("unrelated sound", aggregate(unrelated))]
    for name, m in rows:
        log(f"{name + f' ({num})':>22}  " + "  ".join(f"{m[k]:>10.3f}" for k in ("colour_accuracy", "pitch_agreement", "sync_error_ms", "event_f1")))
    log(f"wrote {out}/TASK/NNN.mp4 and summary.json")
    return summaries
