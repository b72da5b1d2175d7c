"""Scoring a curation run against the corpus truth (data_pipelines.corpus): cut detection
recall and precision within one frame, planted-fault detection per kind, false drops of
clean files, sync error and caption agreement.

    python -m data_pipelines.truth --run OUTPUT --corpus CORPUS_DIR
    # reads OUTPUT/manifest.jsonl and OUTPUT/drops.jsonl, CORPUS_DIR/truth.json; prints the scores as JSON
    # targets: cut recall and precision >= 0.95; every zero_byte, truncated, no_audio, no_video, single_frame
    # file caught; >= 0.9 of silent, frozen and offset files
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections import Counter, defaultdict

# The drop reasons that count as catching each planted fault.
CAUGHT_BY = {
    "zero_byte": {"corrupt"},
    "truncated": {"corrupt"},
    "no_audio": {"no_audio_track"},
    "no_video": {"no_video_track"},
    "single_frame": {"single_frame"},
    "silent": {"silent_audio"},
    "frozen": {"frozen_video", "static_video"},
    "offset_plus": {"av_offset"},
    "offset_minus": {"av_offset"},
    "duplicate": {"near_duplicate"},
}
TARGETS = {
    "zero_byte": 1.0,
    "truncated": 1.0,
    "no_audio": 1.0,
    "no_video": 1.0,
    "single_frame": 1.0,
    "silent": 0.9,
    "frozen": 0.9,
    "offset_plus": 0.9,
    "offset_minus": 0.9,
    "duplicate": 0.9,
}
# Drops that are part of normal cutting, not a judgement on the file.
STRUCTURAL = {"too_short"}


def _read_jsonl(path: pathlib.Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; --run must be the output folder of a curation run")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def match_cuts(truth: list[float], found: list[float], tolerance: float) -> int:
    """Greedy one-to-one matching of sorted cut times within `tolerance` -> matched count."""
    found = sorted(found)
    used, hits = set(), 0
    for t in sorted(truth):
        best = min((abs(f - t), i) for i, f in enumerate(found) if i not in used) if len(used) < len(found) else None
        if best is not None and best[0] <= tolerance:
            used.add(best[1])
            hits += 1
    return hits


def _realigned(entry: dict, planted: float) -> bool:
    return abs(entry.get("audio_offset", 0.0) + planted) < 0.15


def evaluate(run_dir, corpus_dir) -> dict:
    run_dir, corpus_dir = pathlib.Path(run_dir), pathlib.Path(corpus_dir)
    truth_path = corpus_dir / "truth.json"
    if not truth_path.is_file():
        raise FileNotFoundError(f"{truth_path} not found; write the corpus with python -m data_pipelines.corpus --out {corpus_dir}")
    truth = json.loads(truth_path.read_text())["files"]
    kept_by, drops_by = defaultdict(list), defaultdict(list)
    for e in _read_jsonl(run_dir / "manifest.jsonl"):
        kept_by[pathlib.Path(e["source"]).name].append(e)
    for e in _read_jsonl(run_dir / "drops.jsonl"):
        drops_by[pathlib.Path(e["source"]).name].append(e)

    # cut detection, over the files that reached the shot stage
    tp = n_truth = n_found = 0
    cut_files = unreached = 0
    for name, t in truth.items():
        entries = kept_by[name] + drops_by[name]
        found = next((e["scores"]["source_cuts"] for e in entries if "source_cuts" in e.get("scores", {})), None)
        if found is None:
            unreached += bool(t["cuts"])
            continue
        cut_files += 1
        tp += match_cuts(t["cuts"], found, 1.0 / t["fps"] + 1e-6)
        n_truth += len(t["cuts"])
        n_found += len(found)
    cuts = {
        "files": cut_files,
        "truth_cuts": n_truth,
        "found_cuts": n_found,
        "matched": tp,
        "recall": tp / n_truth if n_truth else None,
        "precision": tp / n_found if n_found else None,
        "files_with_cuts_not_reaching_shots": unreached,
    }

    # planted faults, per file
    faults = {}
    originals = {t["duplicate_of"] for t in truth.values() if t["fault"] == "duplicate"}
    for kind, reasons in CAUGHT_BY.items():
        names = [n for n, t in truth.items() if t["fault"] == kind]
        caught, seen = 0, Counter()
        for name in names:
            drops, kept = drops_by[name], kept_by[name]
            seen.update(d["reason"] for d in drops)
            flagged = [d for d in drops if d["reason"] in reasons]
            unflagged_kept = kept
            if kind.startswith("offset"):
                planted = truth[name]["offset"]
                flagged += [k for k in kept if _realigned(k, planted)]
                unflagged_kept = [k for k in kept if not _realigned(k, planted)]
            if kind == "duplicate":
                pair = [truth[name]["duplicate_of"], name]
                flagged = [d for n in pair for d in drops_by[n] if d["reason"] in reasons]
                ranges = [{(round(k["start"], 3), round(k["end"], 3)) for k in kept_by[n]} for n in pair]
                unflagged_kept = sorted(ranges[0] & ranges[1])
            caught += bool(flagged) and not unflagged_kept
        faults[kind] = {
            "files": len(names),
            "caught": caught,
            "rate": caught / len(names) if names else None,
            "target": TARGETS[kind],
            "reasons_seen": dict(seen),
        }
        faults[kind]["meets_target"] = faults[kind]["rate"] is None or faults[kind]["rate"] >= TARGETS[kind]

    # clean files: anything dropped for a judgement is a false drop
    clean = [n for n, t in truth.items() if t["fault"] == "clean"]
    false_reasons = Counter()
    files_false = 0
    for name in clean:
        bad = [d for d in drops_by[name] if d["reason"] not in STRUCTURAL and not (d["reason"] == "near_duplicate" and name in originals)]
        false_reasons.update(d["reason"] for d in bad)
        files_false += bool(bad)
    clean_kept = [k for n in clean for k in kept_by[n]]
    clean_stats = {
        "files": len(clean),
        "files_with_false_drops": files_false,
        "false_drop_reasons": dict(false_reasons),
        "files_with_a_kept_clip": sum(bool(kept_by[n]) for n in clean),
        "kept_clips": len(clean_kept),
    }

    # sync error on kept clean clips, captions of every kept clip
    offsets = sorted(abs(k["scores"]["av_offset"]) for k in clean_kept if k.get("scores", {}).get("av_offset") is not None)
    sync = {
        "judged_clean_clips": len(offsets),
        "median_abs_offset_s": offsets[len(offsets) // 2] if offsets else None,
        "p95_abs_offset_s": offsets[int(0.95 * (len(offsets) - 1))] if offsets else None,
    }
    right = total = 0
    for name, t in truth.items():
        for k in kept_by[name]:
            mid = 0.5 * (k["start"] + k["end"])
            shot = next((s for s in t["shots"] if s["start"] <= mid < s["end"]), None)
            total += 1
            right += shot is not None and k.get("caption") == shot["caption"]
    missing = [n for n in truth if not kept_by[n] and not drops_by[n]]
    return {
        "cuts": cuts,
        "faults": faults,
        "clean": clean_stats,
        "sync": sync,
        "captions": {"kept_clips": total, "matching_truth": right, "rate": right / total if total else None},
        "files_missing_from_run": missing,
        "cuts_meet_target": bool(cuts["recall"] is not None and cuts["recall"] >= 0.95 and cuts["precision"] >= 0.95),
        "faults_meet_targets": all(f["meets_target"] for f in faults.values()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Score a curation run against the corpus truth.")
    parser.add_argument("--run", required=True, help="output folder of the run (manifest.jsonl, drops.jsonl)")
    parser.add_argument("--corpus", required=True, help="corpus folder (truth.json)")
    args = parser.parse_args(argv)
    print(json.dumps(evaluate(args.run, args.corpus), indent=1))


if __name__ == "__main__":
    main()
