"""Pool the bounce-world scores of sample directories (what `jav.evaluate` writes:
TASK/NNN.json beside NNN.mp4 and NNN.wav), with the spread that tells two runs apart:

    python -m benchmarks.sync_pool --samples runs/reference/rec/eval64/a2v,runs/reference/rec/eval_a2v_b/a2v [--onsets]

It prints, over all clips of the directories together:
- each metric's mean over clips (jav's aggregate, as `jav.evaluate` prints it);
- the sync error's bootstrapped 95% interval of that mean (clips resampled with
  replacement, `--resamples` times) and its median over clips: the per-clip sync
  error is itself a median over a clip's 2-8 onsets, and a few clips whose video
  makes far fewer contacts than the sound has bursts carry the mean;
- with `--onsets`, the median over onsets: every judged onset of every clip pooled
  (`jav.data.bounce_metrics.onset_distances`, from the clips re-read from their mp4
  and wav, so H.264 can move a clip's figure a little), the share of onsets within
  half a video frame of a contact, and the mean over onsets.

`--against DIRS` names another model's directories of the same captions and noise
(matched by each clip's caption seed and noise seed): it prints the paired
differences (these samples minus those) of the sync error and the event F1 with
bootstrapped 95% intervals, which are tighter than the two models' own intervals
because both see the same captions.

`--json FILE` appends the numbers as one line.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from jav import cli
from jav.data.bounce import BounceParams
from jav.data.bounce_metrics import onset_distances
from jav.media import read_mp4, read_wav

METRICS = ("colour_accuracy", "pitch_agreement", "sync_error_ms", "event_f1", "num_audio_onsets", "num_video_contacts")


def clip_files(directories: list[str]) -> list[pathlib.Path]:
    """The per-clip JSON files (NNN.json) of the sample directories, in order; an empty
    or missing directory is an error naming it."""
    files = []
    for d in directories:
        found = sorted(p for p in pathlib.Path(d).glob("*.json") if p.stem.isdigit())
        if not found:
            raise FileNotFoundError(f"{d}: no per-clip NNN.json; name a task directory that jav.evaluate wrote (e.g. OUT/a2v)")
        files += found
    return files


def pool(records: list[dict], resamples: int = 4000, seed: int = 0) -> dict:
    """Means over clips of METRICS, the sync error's bootstrapped 95% interval and median over clips."""
    out = {"clips": len(records)}
    for key in METRICS:
        values = np.asarray([r[key] for r in records], np.float64)
        out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    sync = np.asarray([r["sync_error_ms"] for r in records], np.float64)
    sync = sync[np.isfinite(sync)]
    out["sync_clips_without_value"] = len(records) - len(sync)
    if len(sync):
        rng = np.random.default_rng(seed)
        means = sync[rng.integers(0, len(sync), (resamples, len(sync)))].mean(axis=1)
        out["sync_mean_ci95"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
        out["sync_median_over_clips"] = float(np.median(sync))
    return out


def paired(records: list[dict], others: list[dict], resamples: int = 4000, seed: int = 0) -> dict:
    """Paired differences (records minus others) of the sync error and event F1 over the clips both
    have (same caption seed and noise seed; clips without a sync error on either side left out of it),
    each with a bootstrapped 95% interval of its mean."""

    def key(r):
        return (r["caption_seed"], r["seed"])

    theirs = {key(r): r["metrics"] for r in others}
    common = [(r["metrics"], theirs[key(r)]) for r in records if key(r) in theirs]
    if not common:
        raise ValueError("--against: no clip of the same caption seed and noise seed in both sets; score both on the same held-out captions")
    out = {"paired_clips": len(common)}
    rng = np.random.default_rng(seed)
    for metric in ("sync_error_ms", "event_f1"):
        d = np.asarray([a[metric] - b[metric] for a, b in common], np.float64)
        d = d[np.isfinite(d)]
        means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
        out[f"{metric}_diff"] = float(d.mean())
        out[f"{metric}_diff_ci95"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    return out


def pool_onsets(files: list[pathlib.Path], params: BounceParams) -> dict:
    """The judged onsets of every clip pooled: their median, mean and share within half a frame."""
    per_clip = []
    for f in files:
        frames = read_mp4(f.with_suffix(".mp4"))[0]
        wave = read_wav(f.with_suffix(".wav"))[0]
        per_clip.append(1000 * onset_distances(frames, wave, params))
    pooled = np.concatenate(per_clip) if per_clip else np.zeros(0)
    clip_medians = [float(np.median(d)) for d in per_clip if len(d)]
    if not len(pooled):
        return {"onsets": 0}
    half_frame = 500.0 / params.fps
    return {
        "onsets": int(len(pooled)),
        "sync_median_over_onsets": float(np.median(pooled)),
        "sync_mean_over_onsets": float(pooled.mean()),
        "onsets_within_half_frame": float(np.mean(pooled <= half_frame)),
        "sync_mean_over_clips_reread": float(np.mean(clip_medians)),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", required=True, help="comma-separated task directories of jav.evaluate (OUT/TASK)")
    parser.add_argument("--onsets", action="store_true", help="also pool every judged onset (re-reads each clip's mp4 and wav)")
    parser.add_argument("--resamples", type=int, default=4000, help="bootstrap resamples of the clips (default 4000)")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed")
    parser.add_argument("--against", default=None, help="comma-separated task directories of another model on the same captions: paired differences")
    parser.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    args = parser.parse_args(argv)
    directories = list(cli.comma_list(args.samples))
    try:
        files = clip_files(directories)
    except FileNotFoundError as e:
        parser.error(str(e))
    clips = [json.loads(f.read_text()) for f in files]
    records = [c["metrics"] for c in clips]
    result = {"samples": directories, **pool(records, args.resamples, args.seed)}
    if args.against:
        try:
            others = [json.loads(f.read_text()) for f in clip_files(list(cli.comma_list(args.against)))]
            result.update(paired(clips, others, args.resamples, args.seed))
        except (FileNotFoundError, ValueError) as e:
            parser.error(str(e))
    if args.onsets:
        result.update(pool_onsets(files, BounceParams()))
    lo, hi = result.get("sync_mean_ci95", (float("nan"),) * 2)
    print(
        f"{result['clips']} clips: colour {result['colour_accuracy']:.3f}, pitch {result['pitch_agreement']:.3f}, "
        f"event F1 {result['event_f1']:.3f}; sync error mean over clips {result['sync_error_ms']:.1f} ms (95% {lo:.1f}-{hi:.1f}), "
        f"median over clips {result.get('sync_median_over_clips', float('nan')):.1f} ms, {result['sync_clips_without_value']} clips without one"
    )
    if args.onsets and result["onsets"]:
        print(
            f"{result['onsets']} onsets: median {result['sync_median_over_onsets']:.1f} ms, mean {result['sync_mean_over_onsets']:.1f} ms, "
            f"{100 * result['onsets_within_half_frame']:.1f}% within half a frame; mean over clips re-read from the files "
            f"{result['sync_mean_over_clips_reread']:.1f} ms"
        )
    if args.against:
        s, f = result["sync_error_ms_diff_ci95"], result["event_f1_diff_ci95"]
        print(
            f"against {args.against} ({result['paired_clips']} clips in both): sync error {result['sync_error_ms_diff']:+.1f} ms "
            f"(95% {s[0]:+.1f} to {s[1]:+.1f}), event F1 {result['event_f1_diff']:+.3f} (95% {f[0]:+.3f} to {f[1]:+.3f})"
        )
    if args.json:
        cli.append_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
