"""How well a sync reward model reads whole 2 s clips, real and generated.

    python -m benchmarks.sync_reading --workdir runs/reward/sync_events_8k --num 64 \
        --samples runs/reference/rec/eval64/t2va,runs/reference/rec/eval64/v2a

Real held-out clips of the bounce world (seeds from `--seed`, at the shape of the
diffusion run named by `--diffusion-run`, or the world's 2 s default) are scored with
0 .. 4 frames dropped at each end (the model reads `EDGE_FRAMES`): mean p(in sync) of
the aligned clips, AUC against the same clips 2 frames (250 ms at 8 fps) early and
late, AUC against another clip's sound, the share of offsets read as 0. Each
`--samples` folder (what `jav.evaluate --out` writes: NNN.json with the world's metrics
beside NNN.mp4 and NNN.wav) is read as `jav.evaluate --sync-model` reads it: mean
p(in sync), mean |offset|, and the rank correlation with the world's per-clip sync
error and event F1. Results are printed and, with `--json`, appended to a file.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from jav import cli
from jav.clip_tokens import mel_params, pixel_fps
from jav.data import bounce, bounce_stream
from jav.evaluation import learned_sync
from jav.media import read_mp4, read_wav
from jav.models import sync_reward as S
from jav.runs import load_autoencoder, load_config


def real_readings(scorer, world: bounce.BounceParams, mp, num: int, seed: int, edges=(0, 1, 2, 3, 4)) -> list[dict]:
    arrays = [bounce_stream.clip_arrays(seed + i, world, ("video", "logmel"), mp) for i in range(num)]
    video = jnp.asarray(np.stack([a["video"] for a in arrays]))
    logmel = jnp.asarray(np.stack([a["logmel"] for a in arrays]))
    per_frame = logmel.shape[1] / video.shape[1]
    shift = int(round(2 * per_frame))
    rows = []
    for edge in edges:

        def logits(sound, edge=edge):
            return scorer(*S.inner(video, sound, edge))  # edge 0: the whole clip

        def log_p(sound):
            return jax.nn.log_softmax(logits(sound))[:, scorer.cfg.max_shift]

        read = logits(logmel)
        aligned = jax.nn.log_softmax(read)[:, scorer.cfg.max_shift]
        shifted = jnp.concatenate([log_p(jnp.roll(logmel, k, axis=1)) for k in (-shift, shift)])
        other = log_p(jnp.roll(logmel, 1, axis=0))
        offsets = np.asarray(jnp.argmax(read[:, :-1], -1) - scorer.cfg.max_shift)
        rows.append(
            dict(
                edge_frames=edge,
                p_in_sync=float(jnp.exp(aligned).mean()),
                auc_250ms=float(S.auc(aligned, shifted)),
                auc_unrelated=float(S.auc(aligned, other)),
                offset_zero_share=float(np.mean(offsets == 0)),
            )
        )
    return rows


def sample_reading(scorer, folder: pathlib.Path) -> dict:
    rows = []
    for meta_path in sorted(folder.glob("[0-9]*.json")):
        meta = json.loads(meta_path.read_text())
        frames, _, _, _ = read_mp4(meta_path.with_suffix(".mp4"))
        wave, _ = read_wav(meta_path.with_suffix(".wav"))
        got = learned_sync(scorer, frames, wave, load_config(meta["workdir"]))
        m = meta["metrics"]
        rows.append((got["learned_sync"], abs(got["learned_offset_frames"]), m["sync_error_ms"], m["event_f1"], got.get("learned_event_agreement", np.nan)))
    if not rows:
        raise FileNotFoundError(f"{folder} holds no NNN.json clips; pass a folder `jav.evaluate --out` wrote (OUT/TASK)")
    r = np.asarray(rows, np.float64)
    ok = np.isfinite(r[:, 2])
    row = dict(
        samples=str(folder),
        clips=len(r),
        p_in_sync=float(r[:, 0].mean()),
        abs_offset_frames=float(r[:, 1].mean()),
        spearman_sync_error=float(spearmanr(r[ok, 0], r[ok, 2]).statistic),
        spearman_event_f1=float(spearmanr(r[:, 0], r[:, 3]).statistic),
    )
    if np.isfinite(r[:, 4]).all():  # the event heads' reading (reward.models.sync.reading="event_agreement")
        row.update(
            event_agreement=float(r[:, 4].mean()),
            event_agreement_spearman_sync_error=float(spearmanr(r[ok, 4], r[ok, 2]).statistic),
            event_agreement_spearman_event_f1=float(spearmanr(r[:, 4], r[:, 3]).statistic),
        )
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="the sync reward model's run directory (configs/sync_reward.py)")
    parser.add_argument("--num", type=int, default=64, help="real held-out clips scored")
    parser.add_argument("--seed", type=int, default=10**9 + 500, help="bounce seed of the first real clip (no training batch reaches 10^9 on)")
    parser.add_argument("--diffusion-run", default=None, help="a diffusion run whose clip shape and log-mel the real clips take (default: 2 s, 8 fps, 32 x 32)")
    parser.add_argument("--samples", default="", help="comma-separated folders of generated clips (jav.evaluate --out OUT: OUT/TASK)")
    parser.add_argument("--json", default=None, help="append the results as one JSON line to this file")
    args = parser.parse_args(argv)
    _, scorer = load_autoencoder(args.workdir)
    if args.diffusion_run:
        cfg = load_config(args.diffusion_run)
        world, mp = (
            bounce.BounceParams(canvas=cfg.data.canvas, fps=pixel_fps(cfg), duration=cfg.data.duration, sample_rate=cfg.data.sample_rate),
            mel_params(cfg),
        )
    else:
        world, mp = bounce.BounceParams(canvas=32, fps=8, duration=2.0, sample_rate=16000), None  # None: the stream's log-mel
    result = dict(workdir=args.workdir, real=real_readings(scorer, world, mp, args.num, args.seed))
    for row in result["real"]:
        print(
            f"real, {row['edge_frames']} frame(s) dropped at each end: p(in sync) {row['p_in_sync']:.3f}  AUC 250 ms {row['auc_250ms']:.3f}  "
            f"AUC other clip {row['auc_unrelated']:.3f}  offsets read 0: {row['offset_zero_share']:.2f}"
        )
    result["samples"] = [sample_reading(scorer, pathlib.Path(f)) for f in cli.comma_list(args.samples)]
    for row in result["samples"]:
        print(
            f"{row['samples']} ({row['clips']} clips): p(in sync) {row['p_in_sync']:.3f}  |offset| {row['abs_offset_frames']:.2f} frames  "
            f"Spearman with sync error {row['spearman_sync_error']:.3f}, with event F1 {row['spearman_event_f1']:.3f}"
            + (
                f"; event agreement {row['event_agreement']:.3f}, Spearman with sync error {row['event_agreement_spearman_sync_error']:.3f}, "
                f"with event F1 {row['event_agreement_spearman_event_f1']:.3f}"
                if "event_agreement" in row
                else ""
            )
        )
    if args.json:
        cli.append_json(args.json, result)
    return result


if __name__ == "__main__":
    cli.run_main("python -m benchmarks.sync_reading", main)
