"""The run report: counts kept and dropped (per reason and per stage), per bucket, and PNG histograms
of clip durations and every numeric score, from the manifest and drops entries of a run.

PNGs come from a small encoder of our own (zlib + CRC, RGB, no dependencies): bars on a grid,
with the bin edges and counts written next to each picture in report.md.
"""

from __future__ import annotations

import collections
import json
import math

import struct
import zlib

import numpy as np
from etils import epath


def png_bytes(image: np.ndarray) -> bytes:
    """[H, W, 3] uint8 -> PNG file bytes (8-bit RGB, no interlace)."""
    image = np.ascontiguousarray(image, np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"png_bytes: want an [H, W, 3] uint8 image, got shape {image.shape}")
    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def histogram_image(counts: np.ndarray, height: int = 120, bar: int = 12) -> np.ndarray:
    """A bar chart of counts as an RGB image: one bar per bin, grid lines at quarters of the maximum."""
    counts = np.asarray(counts, float)
    pad, w = 6, len(counts) * bar
    img = np.full((height + 2 * pad, w + 2 * pad, 3), 255, np.uint8)
    top = max(counts.max(), 1.0)
    for q in (0.25, 0.5, 0.75, 1.0):
        img[pad + height - int(round(q * height)), pad : pad + w] = (220, 220, 220)
    for i, c in enumerate(counts):
        h = int(round(c / top * height))
        if h:
            img[pad + height - h : pad + height, pad + i * bar + 1 : pad + (i + 1) * bar - 1] = (60, 110, 200)
    img[pad + height, pad - 2 : pad + w + 2] = (0, 0, 0)  # baseline
    return img


def _numeric(values) -> np.ndarray:
    out = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return np.asarray(out, float)


def summarize(kept: list[dict], drops: list[dict], packed: list[dict] | None = None) -> dict:
    """Counts (JSON-ready) from manifest entries, drop entries and pack results."""
    by_reason = collections.Counter(d["reason"] for d in drops)
    by_stage = collections.Counter(d["stage"] for d in drops)
    by_stage_reason = collections.Counter(f"{d['stage']}/{d['reason']}" for d in drops)
    return {
        "kept": len(kept),
        "dropped": len(drops),
        "dropped_by_reason": dict(sorted(by_reason.items())),
        "dropped_by_stage": dict(sorted(by_stage.items())),
        "dropped_by_stage_and_reason": dict(sorted(by_stage_reason.items())),
        "kept_by_bucket": dict(sorted(collections.Counter(e.get("bucket") or "none" for e in kept).items())),
        "sources": len({e["source"] for e in kept} | {d["source"] for d in drops}),
        "packed": sorted(packed or [], key=lambda p: p["bucket"]),
    }


def histograms(kept: list[dict], drops: list[dict], bins: int = 20) -> dict[str, dict]:
    """{name: {edges, counts}} for kept clips' durations and each numeric score over all clips."""
    series = {"kept_duration_s": _numeric(e.get("duration") for e in kept)}
    score_keys = sorted({k for e in kept + drops for k in (e.get("scores") or {})})
    for k in score_keys:
        series[f"score_{k}"] = _numeric((e.get("scores") or {}).get(k) for e in kept + drops)
    out = {}
    for name, values in series.items():
        if len(values):
            counts, edges = np.histogram(values, bins=bins)
            out[name] = {"edges": [round(float(x), 6) for x in edges], "counts": [int(c) for c in counts]}
    return out


def write_report(output: str, kept: list[dict], drops: list[dict], packed: list[dict] | None = None) -> dict:
    """Write OUTPUT/report.json, report.md and report/<histogram>.png; returns the summary."""
    summary = summarize(kept, drops, packed)
    hists = histograms(kept, drops)
    summary["histograms"] = hists
    # pack results say whether this run rewrote a bucket; they are not part of what the data is
    stable = {**summary, "packed": [{k: v for k, v in p.items() if k != "written"} for p in summary["packed"]]}
    out = epath.Path(output)
    written = [write_if_changed(out / "report.json", json.dumps(stable, indent=1, sort_keys=True))]
    lines = [
        "# Curation report",
        "",
        f"Sources: {summary['sources']}, clips kept: {summary['kept']}, dropped: {summary['dropped']}",
        "",
        "| kept per bucket | clips |",
        "|---|---|",
    ]
    lines += [f"| {b} | {n} |" for b, n in summary["kept_by_bucket"].items()]
    lines += ["", "| dropped: stage / reason | clips |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in summary["dropped_by_stage_and_reason"].items()]
    lines += ["", "## Histograms", ""]
    (out / "report").mkdir(parents=True, exist_ok=True)
    for name, h in hists.items():
        png = out / "report" / f"{name}.png"
        written.append(write_if_changed(png, png_bytes(histogram_image(np.asarray(h["counts"])))))
        lines += [
            f"### {name}",
            "",
            f"![{name}](report/{name}.png)",
            "",
            f"{len(h['counts'])} bins from {h['edges'][0]:g} to {h['edges'][-1]:g}; counts {h['counts']}",
            "",
        ]
    written.append(write_if_changed(out / "report.md", "\n".join(lines)))
    summary["files_written"] = sum(written)
    return summary


def write_if_changed(path, content: str | bytes) -> bool:
    """Write atomically (local or gs://) unless the file already holds exactly this; True when written."""
    data = content.encode() if isinstance(content, str) else content
    path = epath.Path(path)
    if path.exists() and path.read_bytes() == data:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True
