"""A raw test corpus from the bounce world, with planted faults and the truth to check a
curation run against (data_pipelines.truth).

    python -m data_pipelines.corpus --out /tmp/jav_corpus --num 200 --seed 0 [--workers 2]
    # -> 200 .mkv files (H.264 + FLAC, 44 MB), a sidecar .txt per file, truth.json; "wrote 200 files ...
    #    faults: {'clean': 100, 'duplicate': 10, ...}" after 17-35 s on the shared 2-core CPU (14 s of CPU,
    #    two thirds of it rendering the bounce world); the same seed gives the same bytes

Each file joins one to four bounce shots with hard cuts (consecutive shots differ in
background), at a canvas of 32, 48 or 64 px (some 32 px ones upscaled x2), 8, 12 or 24
fps, audio at 8, 16, 44.1 or 48 kHz, mono or stereo. Half the files are clean; the rest
carry one planted fault each (FAULTS; a duplicate is an earlier clean file re-encoded at a
lower quality, crf 28 for 16). Cut times are frame-exact (frame k starts at k / fps).
`--formats demo --lossless` writes the control corpus instead: every file at the demo's 32 px,
8 fps, 16 kHz mono, its video lossless RGB H.264, so that its curated clips hold the very
pixels (and, but for 16-bit rounding, the audio) of directly generated ones.
Matroska with FLAC is used because FLAC has no encoder priming delay: the decoded audio
starts exactly at the first frame, so a clean file has no audio-video offset to explain.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import pathlib
import time

import numpy as np

from data_pipelines import media
from jav.data import bounce

FAULTS = ("zero_byte", "truncated", "no_audio", "no_video", "silent", "frozen", "single_frame", "offset_plus", "offset_minus", "duplicate")
OFFSET = 0.3  # seconds the audio of an offset file runs late (offset_plus) or early (offset_minus)
CANVASES, FPS, RATES = (32, 48, 64), (8, 12, 24), (8000, 16000, 44100, 48000)
# "mixed": the varied formats above; "demo": every file in the demo's own format (32 px,
# 8 fps, 16 kHz mono), the control that separates curation from resampling
FORMATS = ("mixed", "demo")


def fault_schedule(num: int, seed: int) -> list[str]:
    """One entry per file: "clean" for half the files, the faults in turn for the rest, shuffled."""
    kinds = ["clean" if i % 2 == 0 else FAULTS[(i // 2) % len(FAULTS)] for i in range(num)]
    order = np.random.default_rng([seed, 7]).permutation(num)
    kinds = [kinds[i] for i in order]
    # a duplicate copies an earlier clean file: make sure the first file is clean
    if kinds and kinds[0] == "duplicate":
        j = kinds.index("clean")
        kinds[0], kinds[j] = kinds[j], kinds[0]
    return kinds


def file_spec(index: int, seed: int, fault: str, formats: str = "mixed") -> dict:
    """Format and shots of one file: {canvas, upscale, fps, sample_rate, channels, shots: [(seed, frames)]}."""
    rng = np.random.default_rng([seed, index])
    canvas, fps = int(rng.choice(CANVASES)), int(rng.choice(FPS))
    spec = {
        "canvas": canvas,
        "upscale": 2 if canvas == 32 and rng.random() < 0.3 else 1,
        "fps": fps,
        "sample_rate": int(rng.choice(RATES)),
        "channels": int(rng.choice([1, 2])),
    }
    if formats == "demo":
        spec = {"canvas": 32, "upscale": 1, "fps": 8, "sample_rate": 16000, "channels": 1}
        fps = 8
    num_shots = 1 if fault in ("frozen", "single_frame") else int(rng.integers(1, 5))
    low = 2.5 if fault.startswith("offset") else 0.8  # offset files: long enough shots to hold contacts
    frames = [max(1, int(round(rng.uniform(low, 3.5) * fps))) for _ in range(num_shots)]
    if fault == "single_frame":
        frames = [1]
    shots, previous, candidate = [], None, (seed * 1_000_003 + index * 101) % 2**31
    for n in frames:  # consecutive shots differ in background, so every cut is a hard one
        while bounce.sample_scene(candidate).background == previous:
            candidate += 1
        previous = bounce.sample_scene(candidate).background
        shots.append((candidate, n))
        candidate += 1
    spec["shots"] = shots
    return spec


def render(spec: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """-> frames [T, H, W, 3] uint8, audio [S, C] float32, caption per shot."""
    fps, rate = spec["fps"], spec["sample_rate"]
    frames, audio, captions = [], [], []
    for shot_seed, n in spec["shots"]:
        params = bounce.BounceParams(canvas=spec["canvas"], fps=fps, duration=n / fps, sample_rate=rate)
        clip = bounce.generate_clip(shot_seed, params)
        frames.append(clip.frames)
        audio.append(clip.audio)
        captions.append(clip.caption)
    video = np.concatenate(frames)
    if spec["upscale"] > 1:
        video = video.repeat(spec["upscale"], axis=1).repeat(spec["upscale"], axis=2)
    wave = np.concatenate(audio)[:, None]
    if spec["channels"] == 2:
        wave = np.concatenate([wave, 0.7 * wave], axis=1)  # panned left
    return video, wave.astype(np.float32), captions


def _noise(n: int, channels: int, rng) -> np.ndarray:
    return (10 ** (-50 / 20) * rng.standard_normal((n, channels))).astype(np.float32)


def plant(fault: str, video: np.ndarray, wave: np.ndarray, rate: int, rng) -> tuple:
    """Apply a fault to the media -> (video or None, wave or None, audio offset in seconds)."""
    if fault == "no_audio":
        return video, None, 0.0
    if fault == "no_video":
        return None, wave, 0.0
    if fault == "silent":
        return video, np.zeros_like(wave), 0.0
    if fault == "frozen":
        return np.repeat(video[:1], len(video), axis=0), wave, 0.0
    if fault in ("offset_plus", "offset_minus"):
        shift = int(round(OFFSET * rate))
        pad = _noise(shift, wave.shape[1], rng)
        if fault == "offset_plus":  # audio late: the sound of a bounce comes OFFSET after it
            return video, np.concatenate([pad, wave[:-shift]]), OFFSET
        return video, np.concatenate([wave[shift:], pad]), -OFFSET
    return video, wave, 0.0


def _write_file(out: pathlib.Path, seed: int, index: int, fault: str, clean_before: list[int], formats: str = "mixed", lossless: bool = False) -> dict:
    """Write file `index` (and its sidecar) -> its truth entry."""
    name = f"clip_{index:04d}.mkv"
    rng = np.random.default_rng([seed, index, 1])
    original = None
    if fault == "duplicate":
        original = clean_before[int(rng.integers(len(clean_before)))]
        spec = file_spec(original, seed, "clean", formats)
    else:
        spec = file_spec(index, seed, fault, formats)
    fps, rate = spec["fps"], spec["sample_rate"]
    video, wave, captions = render(spec)
    video, wave, offset = plant(fault, video, wave, rate, rng)
    path = out / name
    if fault == "zero_byte":
        path.write_bytes(b"")
    else:
        # a duplicate is a lower-quality copy, lossy even in a lossless corpus
        media.write_av(path, video, fps, wave, rate, crf=28 if fault == "duplicate" else 16, lossless=lossless and fault != "duplicate")
        if fault == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * rng.uniform(0.3, 0.7))])
    bounds = np.cumsum([0] + [n for _, n in spec["shots"]])
    shots = [
        {"start": float(a / fps), "end": float(b / fps), "caption": c, "seed": int(s)}
        for (s, _), a, b, c in zip(spec["shots"], bounds[:-1], bounds[1:], captions)
    ]
    path.with_suffix(".txt").write_text("".join(f"{s['start']:.6f} {s['end']:.6f}\t{s['caption']}\n" for s in shots))
    return {
        "fault": fault,
        "cuts": [float(b / fps) for b in bounds[1:-1]],
        "offset": offset,
        "duplicate_of": None if original is None else f"clip_{original:04d}.mkv",
        "fps": fps,
        "canvas": spec["canvas"] * spec["upscale"],
        "sample_rate": rate,
        "channels": spec["channels"],
        "duration": float(bounds[-1] / fps),
        "shots": shots,
        "spec": spec,
    }


def write_corpus(out, num: int = 200, seed: int = 0, kinds: list[str] | None = None, workers: int = 1, formats: str = "mixed", lossless: bool = False) -> dict:
    """Write `num` files, sidecars and truth.json into `out`; returns the truth. `kinds`
    (one of "clean" or FAULTS per file) replaces the shuffled schedule, e.g. for tests.
    `workers` > 1 writes files in parallel processes (the same bytes as one worker).
    `formats` is "mixed" (varied canvas, fps, sample rate, channels) or "demo" (all in the
    demo's format); `lossless` writes the video as lossless RGB H.264 (libx264rgb, qp 0)."""
    if formats not in FORMATS:
        raise ValueError(f"formats={formats!r}: use one of {FORMATS}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if kinds is not None:
        unknown = sorted(set(kinds) - {"clean", *FAULTS})
        if unknown:
            raise ValueError(f"unknown corpus kinds {unknown}; use 'clean' or one of {FAULTS}")
        if "duplicate" in kinds and "clean" not in kinds[: kinds.index("duplicate")]:
            raise ValueError("a 'duplicate' copies an earlier clean file: put a 'clean' before it in kinds")
        num = len(kinds)
    else:
        kinds = fault_schedule(num, seed)
    tasks = [(out, seed, i, fault, [j for j in range(i) if kinds[j] == "clean"], formats, lossless) for i, fault in enumerate(kinds)]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            entries = pool.starmap(_write_file, tasks, chunksize=4)
    else:
        entries = [_write_file(*task) for task in tasks]
    files = {f"clip_{i:04d}.mkv": entry for i, entry in enumerate(entries)}
    truth = {"version": 1, "seed": seed, "num": num, "offset_seconds": OFFSET, "formats": formats, "lossless": lossless, "files": files}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write the bounce-world raw corpus with planted faults.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--num", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument(
        "--formats", choices=FORMATS, default="mixed", help="mixed: 32-64 px, 8-24 fps, 8-48 kHz, mono or stereo; demo: all 32 px, 8 fps, 16 kHz mono"
    )
    parser.add_argument("--lossless", action="store_true", help="lossless RGB video (libx264rgb, qp 0) instead of crf 16 4:2:0")
    args = parser.parse_args(argv)
    if args.num < 1:
        raise SystemExit(f"--num={args.num}: pass at least 1 file")
    t0 = time.time()
    truth = write_corpus(args.out, args.num, args.seed, workers=args.workers, formats=args.formats, lossless=args.lossless)
    counts = {}
    for f in truth["files"].values():
        counts[f["fault"]] = counts.get(f["fault"], 0) + 1
    print(f"wrote {args.num} files to {args.out} in {time.time() - t0:.1f} s; faults: {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
