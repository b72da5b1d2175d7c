"""The unit of work of the curation pipeline: a `Clip` (a time range of one
source file, with what the stages learned about it) or a `Drop` (a clip or file
that a stage removed, with the reason).

Every stage is a function `stage(clip: Clip, **params) -> list[Clip | Drop]`
(see `data_pipelines.stages`): one clip in, zero or more clips or drops out.
Splitting stages (shots, cutting) return several clips; filters return the clip
(with its score recorded in `clip.scores`) or a `Drop`. Stages never raise on
bad input: a file that cannot be read becomes a `Drop` with reason
"corrupt" and the run goes on (the engine quarantines it).

Decoded media travel with the clip (`video`, `audio`) once a stage has loaded
them; bounce-world and curated clips are small, and the engine drops the arrays
before anything is written except the encoded shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np


@dataclasses.dataclass
class Clip:
    source: str  # path (or URL) of the input file
    start: float = 0.0  # seconds into the source
    end: float | None = None  # seconds; None = to the end of the source
    # what probe found (source-level; cutting keeps them)
    container: str | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None  # frames in [start, end)
    sample_rate: int | None = None
    audio_channels: int | None = None
    has_video: bool = False
    has_audio: bool = False
    source_duration: float | None = None
    # decoded media of [start, end), when a stage has loaded them
    video: np.ndarray | None = None  # [T, H, W, 3] uint8
    audio: np.ndarray | None = None  # [S, C] float32 in [-1, 1], at sample_rate
    # what the stages learned
    scores: dict[str, Any] = dataclasses.field(default_factory=dict)
    caption: str | None = None
    bucket: str | None = None
    audio_offset: float = 0.0  # seconds the audio was shifted by to re-align it (sync stage)

    @property
    def duration(self) -> float:
        end = self.end if self.end is not None else (self.source_duration or 0.0)
        return max(0.0, end - self.start)

    @property
    def key(self) -> str:
        """A stable id: the source and the time range (milliseconds)."""
        end = "end" if self.end is None else f"{round(self.end * 1000)}"
        digest = hashlib.sha1(self.source.encode()).hexdigest()[:12]
        return f"{digest}-{round(self.start * 1000)}-{end}"

    def without_media(self) -> "Clip":
        return dataclasses.replace(self, video=None, audio=None, scores=dict(self.scores))

    def manifest_entry(self) -> dict:
        """JSON-ready description of the clip (no arrays)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("video", "audio")}
        out["key"] = self.key
        out["duration"] = self.duration
        return out


@dataclasses.dataclass
class Drop:
    clip: Clip  # the clip (or whole file) removed, without media
    stage: str  # the stage that dropped it, e.g. "filter_silence"
    reason: str  # a short machine-readable kind, e.g. "silent_audio", "corrupt", "no_audio_track"
    detail: str = ""  # a human sentence: what was measured against which threshold

    def manifest_entry(self) -> dict:
        return {"stage": self.stage, "reason": self.reason, "detail": self.detail, **self.clip.without_media().manifest_entry()}
