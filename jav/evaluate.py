"""Evaluation on the bounce world: sample held-out captions, score the samples.

    python -m jav.evaluate --workdir DIR --num N [--out DIR] [--steps S] [--seed 1000000]

Takes the captions of N bounce-world clips whose seeds start at `--seed`
(default 1,000,000: clips no training set made by `python -m jav.data.synthetic`
with fewer than a million clips contains), samples one clip per caption from
the run's latest checkpoint, and scores each with the world's metrics (colour
accuracy, pitch agreement, sync error, event F1; ../shared/SYNTHETIC_WORLD.md).
Writes OUT/NNN.mp4, NNN.wav, NNN.json (prompt, settings, metrics) and
OUT/summary.json (default OUT: WORKDIR/samples); prints one line per clip and
the means. The same metrics on the real clips of those seeds (through the
log-mel and Griffin-Lim path the model's audio takes) are printed beside them
as the ceiling; in latent space they also pass through the VAEs' round trip.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
from absl import logging

from jav import distributed
from jav.clip_tokens import arrays_to_clip, clip_to_arrays, mel_params, pixel_fps
from jav.data.bounce import BounceParams, generate_clip
from jav.data.bounce_metrics import aggregate, clip_metrics
from jav.sample import clip_decoder, guidance_from, load_run, sample_clips, write_sample

HELD_OUT_SEED = 1_000_000


def world_params(cfg) -> BounceParams:
    """The bounce world a run was trained on."""
    d = cfg.data
    return BounceParams(canvas=d.canvas, fps=pixel_fps(cfg), duration=d.duration, sample_rate=d.sample_rate)


def reference_clips(cfg, clips) -> list[tuple[np.ndarray, np.ndarray]]:
    """The real clips through the model's own output path, the ceiling of what sampling can score:
    log-mel and Griffin-Lim in pixel space; the VAEs' encode and decode as well in latent space."""
    mp = mel_params(cfg)
    arrays = [clip_to_arrays(c.frames, c.audio, mp) for c in clips]
    if cfg.data.get("world") != "latent":
        return [arrays_to_clip(v, a, mp) for v, a in arrays]
    from jav.latents import codec_from_config

    codec, stats = codec_from_config(cfg)
    zv, za = codec.encode(np.stack([v for v, _ in arrays]), np.stack([a for _, a in arrays]), stats)
    return clip_decoder(cfg)(zv, za)


def _line(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())


def evaluate(workdir, num: int, *, out=None, steps: int | None = None, seed: int = HELD_OUT_SEED, sample_seed: int = 0,
             batch_size: int = 8, weights: str = "ema", guidance: dict | None = None, log=print) -> dict:
    """Samples and scores `num` held-out captions -> summary dict (also written to OUT/summary.json)."""
    start = time.time()
    cfg, model, step = load_run(workdir, weights)
    steps = steps or cfg.sample.steps
    world = world_params(cfg)
    clips = [generate_clip(seed + i, world) for i in range(num)]
    captions = [c.caption for c in clips]
    guidance = guidance_from(cfg, **(guidance or {}))
    log(f"loaded {workdir} step {step} ({weights}); sampling {num} held-out captions (seeds {seed}..{seed + num - 1}), {steps} steps")
    samples = sample_clips(model, cfg, captions, seed=sample_seed, steps=steps, batch_size=min(batch_size, num), guidance=guidance, log=log)
    out = pathlib.Path(out) if out else pathlib.Path(workdir) / "samples"
    results, references = [], []
    for i, (clip, (frames, wave), reference) in enumerate(zip(clips, samples, reference_clips(cfg, clips))):
        m = clip_metrics(frames, wave, clip.caption, world)
        results.append(m)
        references.append(clip_metrics(*reference, clip.caption, world))
        info = dict(prompt=clip.caption, workdir=str(workdir), checkpoint_step=step, weights=weights, seed=sample_seed, steps=steps,
                    caption_seed=seed + i, guidance=dict(text_video=guidance.text_video, text_audio=guidance.text_audio, modality=guidance.modality),
                    metrics=m)
        write_sample(out, i, frames, wave, cfg, info)
        log(f"{i:03d} {clip.caption!r}: {_line(m)}")
    summary = dict(workdir=str(workdir), checkpoint_step=step, weights=weights, num=num, caption_seed=seed, steps=steps,
                   metrics=aggregate(results), reference_metrics=aggregate(references), seconds=time.time() - start)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"samples   ({num}): {_line(summary['metrics'])}")
    log(f"real clips ({num}): {_line(summary['reference_metrics'])}")
    log(f"wrote {out}/NNN.mp4 and summary.json in {summary['seconds']:.0f}s")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m jav.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="run directory written by `python -m jav.train`")
    parser.add_argument("--num", type=int, default=16, help="number of held-out captions")
    parser.add_argument("--out", default=None, help="where samples go (default WORKDIR/samples)")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: the config's sample.steps)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="bounce-world seed of the first held-out caption")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the sampler's noise")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--weights", default="ema", choices=("ema", "params"))
    parser.add_argument("--cfg-video", type=float, default=None, help="text guidance scale for video (default: the config's sample.text_video)")
    parser.add_argument("--cfg-audio", type=float, default=None, help="text guidance scale for audio (default: the config's sample.text_audio)")
    parser.add_argument("--modality-guidance", type=float, default=None, help="cross-modal guidance scale (default: the config's sample.modality)")
    args = parser.parse_args(argv)
    # It loads the weights onto one device and writes every file itself: one process, not one per host.
    distributed.require_single_process("python -m jav.evaluate")
    logging.set_verbosity(logging.ERROR)  # Orbax warns that it reads the run read-only, which is the point
    return evaluate(args.workdir, args.num, out=args.out, steps=args.steps, seed=args.seed, sample_seed=args.sample_seed,
                    batch_size=args.batch, weights=args.weights, log=lambda m: print(m, flush=True),
                    guidance=dict(text_video=args.cfg_video, text_audio=args.cfg_audio, modality=args.modality_guidance))


if __name__ == "__main__":
    main()
