"""Log-mel round trips of bounce-world clips: jav.audio (JAX, jitted, batched)
against jav.data.mel (NumPy + librosa), scored against the clips' true contacts.

    python -m benchmarks.audio_inversion              # 16 clips, seeds 0..15
    python -m benchmarks.audio_inversion --num 32 --draws 4

For every true contact (merged as bounce_metrics merges them) that the onset
detector hears in the original clip, the distance from it to the nearest onset
of the round trip, the share of those within 10 ms, invented onsets (none near
an original one, before the clip's last 10 ms), pitch agreement, and time per
clip (JAX: one batched call after compiling; librosa: one clip at a time).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jav.audio import griffin_lim, log_mel
from jav.data import bounce, bounce_metrics, mel


def score(clips, waves) -> dict:
    errors, invented, pitch = [], 0, []
    for clip, wave in zip(clips, waves):
        heard = bounce_metrics.audio_onsets(clip.audio)
        back = bounce_metrics.audio_onsets(wave)
        contacts = np.sort([t for d in clip.metadata["discs"] for t, _, _ in d["contacts"]])
        for t in bounce_metrics.merge_close(contacts, bounce_metrics.ONSET_MIN_GAP):
            if len(heard) and np.abs(heard - t).min() < 0.010:
                errors.append(np.abs(back - t).min() if len(back) else np.inf)
        end = len(wave) / 16000 - 0.010
        invented += sum(1 for t in back if (not len(heard) or np.abs(heard - t).min() >= 0.010) and t < end)
        pitch.append(bounce_metrics.clip_metrics(clip.frames, wave, clip.caption)["pitch_agreement"])
    errors = 1000 * np.asarray(errors)
    return {
        "contacts": len(errors),
        "median_ms": np.median(errors),
        "p90_ms": np.percentile(errors, 90),
        "max_ms": errors.max(),
        "within_10ms": np.mean(errors < 10),
        "invented": invented,
        "pitch_agreement": np.nanmean(pitch),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=16, help="held-out clips")
    parser.add_argument("--draws", type=int, default=2, help="random phase draws (keys / seeds) per path")
    args = parser.parse_args()
    clips = [bounce.generate_clip(seed) for seed in range(args.num)]
    waves = np.stack([c.audio for c in clips])

    rows = []
    logmel = log_mel.waveform_to_logmel(waves)  # [B, Ta, n_mels]
    for nnls_steps in (0, 10):
        start = time.perf_counter()
        griffin_lim.logmel_to_waveform(logmel, jax.random.key(0), nnls_steps=nnls_steps).block_until_ready()
        compile_s = time.perf_counter() - start
        for draw in range(args.draws):
            start = time.perf_counter()
            out = np.asarray(griffin_lim.logmel_to_waveform(logmel, jax.random.key(draw), nnls_steps=nnls_steps))
            per_clip = (time.perf_counter() - start) / len(clips)
            rows.append((f"jax nnls_steps={nnls_steps} key={draw}", per_clip, compile_s, score(clips, out)))
    for draw in range(args.draws):
        start = time.perf_counter()
        out = [mel.logmel_to_waveform(mel.waveform_to_logmel(c.audio), seed=draw) for c in clips]
        per_clip = (time.perf_counter() - start) / len(clips)
        rows.append((f"librosa seed={draw}", per_clip, 0.0, score(clips, out)))
    rows.append(("original clips", 0.0, 0.0, score(clips, waves)))

    print(f"{'path':28s} {'s/clip':>7s} {'compile':>7s} {'n':>3s} {'median':>7s} {'p90':>6s} {'max':>7s} {'<10ms':>6s} {'invent':>6s} {'pitch':>5s}")
    for name, per_clip, compile_s, s in rows:
        print(
            f"{name:28s} {per_clip:7.3f} {compile_s:7.1f} {s['contacts']:3d} {s['median_ms']:7.2f} {s['p90_ms']:6.2f} "
            f"{s['max_ms']:7.1f} {s['within_10ms']:6.3f} {s['invented']:6d} {s['pitch_agreement']:5.2f}"
        )


if __name__ == "__main__":
    main()
