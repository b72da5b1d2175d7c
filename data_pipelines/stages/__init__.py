"""Curation stages, composed by name: `STAGES[name](clip, **params) -> list[Clip | Drop]`.

A run is a list such as DEFAULT_STAGES below; `apply` runs one clip through it and
`run_local` (data_pipelines.stages.local) runs files through it in a plain loop, the
engine-free reference. Near-duplicate removal needs every clip at once: the "phash"
stage records a hash per clip and `near_duplicates` picks the clips to drop.
"""

from __future__ import annotations

import time

from data_pipelines.clip import Clip, Drop
from data_pipelines.stages import filters
from data_pipelines.stages.captions import captions
from data_pipelines.stages.cut import cut
from data_pipelines.stages.dedup import clip_quality, near_duplicates, phash
from data_pipelines.stages.load import load
from data_pipelines.stages.probe import probe
from data_pipelines.stages.shots import shots
from data_pipelines.stages.sync import sync

STAGES: dict = {
    "probe": probe,
    "shots": shots,
    "cut": cut,
    "load": load,
    "filter_duration": filters.filter_duration,
    "filter_resolution": filters.filter_resolution,
    "filter_fps": filters.filter_fps,
    "filter_audio_track": filters.filter_audio_track,
    "filter_frozen": filters.filter_frozen,
    "filter_motion": filters.filter_motion,
    "filter_black": filters.filter_black,
    "filter_blur": filters.filter_blur,
    "filter_silence": filters.filter_silence,
    "filter_loudness": filters.filter_loudness,
    "sync": sync,
    "phash": phash,
    "captions": captions,
}

# The reference order and parameters for the bounce-world corpus (data_pipelines.corpus).
DEFAULT_STAGES = [
    ("probe", {}),
    ("filter_audio_track", {"require": True}),
    ("filter_resolution", {"min_side": 32}),
    ("filter_fps", {"min_fps": 8, "max_fps": 120}),
    ("shots", {"threshold": 0.4}),
    # shots are judged whole (decoded once; sync sees more bounces than in a short clip);
    # cut slices the media and keeps the scores, verdicts and any re-alignment
    ("filter_duration", {"min_seconds": 1.0}),
    ("load", {}),
    ("filter_frozen", {"tolerance": 0.5, "max_fraction": 0.5}),
    ("filter_motion", {"min_motion": 0.002}),
    ("filter_black", {"max_luma": 16.0, "max_fraction": 0.5}),
    ("filter_blur", {"min_sharpness": 5.0}),
    ("filter_silence", {"min_dbfs": -60.0}),
    ("filter_loudness", {"max_rms_dbfs": -6.0, "max_clip_fraction": 0.001}),
    ("sync", {"max_offset": 0.5, "threshold": 0.15, "min_confidence": 0.5, "mode": "drop"}),
    ("cut", {"buckets": [1.0, 2.0, 4.0]}),
    ("phash", {}),
    ("captions", {"sources": ["sidecar", "metadata"]}),
]


def register(name: str):
    """Decorator adding a stage to STAGES under `name`."""

    def add(fn):
        STAGES[name] = fn
        return fn

    return add


def get_stage(name: str):
    if name not in STAGES:
        raise KeyError(f"unknown curation stage {name!r}; known stages: {sorted(STAGES)}")
    return STAGES[name]


def apply(clip: Clip, stages=DEFAULT_STAGES, timings: dict | None = None) -> tuple[list[Clip], list[Drop]]:
    """Run one clip through [(name, params), ...] -> (kept clips, drops). Unknown names fail
    before any work is done. `timings`, when given, accumulates {name: [seconds, clips in]}."""
    fns = [(name, get_stage(name), dict(params or {})) for name, params in stages]
    live, drops = [clip], []
    for name, fn, params in fns:
        nxt = []
        start = time.perf_counter()
        for c in live:
            for out in fn(c, **params):
                (drops if isinstance(out, Drop) else nxt).append(out)
        if timings is not None:
            spent = timings.setdefault(name, [0.0, 0])
            spent[0] += time.perf_counter() - start
            spent[1] += len(live)
        live = nxt
    return live, drops


__all__ = ["STAGES", "DEFAULT_STAGES", "Clip", "Drop", "apply", "clip_quality", "get_stage", "near_duplicates", "register"]
