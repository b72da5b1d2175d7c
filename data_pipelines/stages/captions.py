"""Captions: by default from a sidecar text file beside the source (`NAME.txt`) or the
container's title/comment metadata; a VLM plugs in as a `Captioner` registered by name.

Sidecar format: either free text (the caption of the whole file) or one line per shot,
`START END<TAB>caption` with times in seconds; a clip takes the line that overlaps it most.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from etils import epath

from data_pipelines.clip import Clip, Drop
from data_pipelines.media import open_container


class Captioner(Protocol):
    """Anything that captions a clip (e.g. a VLM over clip.video); None when it cannot."""

    def __call__(self, clip: Clip) -> str | None: ...


def parse_sidecar(text: str) -> list[tuple[float | None, float | None, str]]:
    """-> [(start, end, caption)]; (None, None, text) for free text."""
    lines = [line for line in text.splitlines() if line.strip()]
    timed = []
    for line in lines:
        head, sep, caption = line.partition("\t")
        parts = head.split()
        if not sep or len(parts) != 2:
            return [(None, None, " ".join(text.split()))]
        try:
            timed.append((float(parts[0]), float(parts[1]), caption.strip()))
        except ValueError:
            return [(None, None, " ".join(text.split()))]
    return timed


def sidecar_caption(clip: Clip, suffix: str = ".txt") -> str | None:
    path = epath.Path(clip.source).with_suffix(suffix)
    if not path.is_file():
        return None
    entries = parse_sidecar(path.read_bytes().decode("utf-8", errors="replace"))
    if not entries:
        return None
    if entries[0][0] is None:
        return entries[0][2] or None
    end = clip.end if clip.end is not None else (clip.source_duration or float("inf"))
    overlap = [(min(end, b) - max(clip.start, a), caption) for a, b, caption in entries]
    best = max(overlap, key=lambda o: o[0])
    return best[1] if best[0] > 0 else None


def metadata_caption(clip: Clip) -> str | None:
    with open_container(clip.source) as container:
        meta = {k.lower(): v for k, v in container.metadata.items()}
    return meta.get("comment") or meta.get("title") or meta.get("description") or None


CAPTIONERS: dict = {"sidecar": sidecar_caption, "metadata": metadata_caption}


def register_captioner(name: str, captioner: Captioner) -> None:
    """Make `captioner` usable as captions(..., sources=[name, ...])."""
    CAPTIONERS[name] = captioner


def captions(clip: Clip, sources=("sidecar", "metadata"), required: bool = False) -> list:
    """Set clip.caption from the first source that gives one (names in CAPTIONERS).
    With `required`, a clip no source captions is dropped ("no_caption")."""
    unknown = [s for s in sources if s not in CAPTIONERS]
    if unknown:
        raise KeyError(f"captions: unknown caption sources {unknown}; registered: {sorted(CAPTIONERS)}")
    for name in sources:
        try:
            text = CAPTIONERS[name](clip)
        except Exception:  # noqa: BLE001 -- a failing captioner falls through to the next
            text = None
        if text:
            return [dataclasses.replace(clip, caption=text, scores={**clip.scores, "caption_source": name})]
    if required:
        return [Drop(clip.without_media(), "captions", "no_caption", f"no caption from {list(sources)}")]
    return [clip]
