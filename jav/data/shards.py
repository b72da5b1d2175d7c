"""Record shards on disk: ArrayRecord files plus a manifest.json, and the checks that
run when a training job opens them.

A shard directory holds `records-00000.array_record`, ... and `manifest.json`
(format version, record count, each shard's file name and record count, and the
video/audio shape and dtype that every record in the directory shares: one shape
bucket per directory). The manifest is written last, atomically, so a directory
without one is an unfinished write.

A directory may be local or on Google Cloud Storage (`gs://bucket/data`): the
manifest and the checks go through `etils.epath`, the records through
ArrayRecord's own file layer, which takes the same gs:// path.
"""

from __future__ import annotations

import json
from typing import Iterable

import grain
import numpy as np
from etils import epath
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from jav.data.record import FORMAT_VERSION, RecordError, decode_record, encode_record

MANIFEST = "manifest.json"
_MANIFEST_KEYS = {"format_version", "num_records", "shards", "video_shape", "audio_shape"}
# group_size:1 keeps each record independently readable, which random access
# (a global shuffle) needs; zstd decodes fast and shrinks uint8 frames well.
_WRITER_OPTIONS = "group_size:1,zstd:3"


def shard_name(index: int) -> str:
    return f"records-{index:05d}.array_record"


def write_shards(records: Iterable[dict], out_dir: str, records_per_shard: int) -> dict:
    """Write record dicts (keyword arguments of `encode_record`) to shards in out_dir; returns the manifest."""
    if records_per_shard < 1:
        raise ValueError(f"records_per_shard={records_per_shard} must be at least 1")
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards, shapes, writer, count = [], None, None, 0
    for rec in records:
        video, audio = np.asarray(rec["video"]), np.asarray(rec["audio"])
        rec_shapes = {"video_shape": list(video.shape), "video_dtype": video.dtype.name, "audio_shape": list(audio.shape), "audio_dtype": audio.dtype.name}
        if shapes is None:
            shapes = rec_shapes
        elif rec_shapes != shapes:
            raise RecordError(
                f"record {count} ({rec.get('caption', '')!r}) has {rec_shapes}, but this shard "
                f"directory holds {shapes}; write each shape bucket to its own directory"
            )
        if writer is None:
            shards.append({"file": shard_name(len(shards)), "num_records": 0})
            writer = ArrayRecordWriter(str(out / shards[-1]["file"]), _WRITER_OPTIONS)
        writer.write(encode_record(**rec))
        shards[-1]["num_records"] += 1
        count += 1
        if shards[-1]["num_records"] == records_per_shard:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()
    if shapes is None:
        raise ValueError(f"write_shards: no records to write to {out_dir}")
    manifest = {"format_version": FORMAT_VERSION, "num_records": count, "shards": shards, **shapes}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out / MANIFEST)
    return manifest


class ShardSource:
    """A grain random-access source over a shard directory's raw record bytes.

    `locate(i)` names record i as "path[index in file]" for error messages.
    """

    def __init__(self, data_dir: str, manifest: dict):
        self.paths = [str(epath.Path(data_dir) / s["file"]) for s in manifest["shards"]]
        self.starts = np.cumsum([0] + [s["num_records"] for s in manifest["shards"]])
        self._source = grain.sources.ArrayRecordDataSource(self.paths)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int) -> bytes:
        return self._source[index]

    def locate(self, index: int) -> str:
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return f"{self.paths[shard]}[{index - int(self.starts[shard])}]"


def _read_manifest(data_dir: str) -> dict:
    path = epath.Path(data_dir) / MANIFEST
    if not path.exists() or path.is_dir():
        raise RecordError(
            f"{path} does not exist: {data_dir} is not a finished shard directory; "
            "(re)write it with jav.data.shards.write_shards or python -m jav.data.synthetic"
        )
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise RecordError(f"{path} is not valid JSON ({e}); rewrite the shard directory") from e
    missing = _MANIFEST_KEYS - set(manifest) if isinstance(manifest, dict) else _MANIFEST_KEYS
    if missing:
        raise RecordError(f"{path} lacks {sorted(missing)}; rewrite the shard directory")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise RecordError(
            f"{path}: format version {manifest.get('format_version')}, but this jav reads version {FORMAT_VERSION}; rewrite the shards with this version of jav"
        )
    return manifest


def _check_shard(path: str, expected: int, manifest: dict) -> None:
    """Open one shard, check its record count, and decode its first and last record."""
    if not epath.Path(path).exists():
        raise RecordError(f"shard {path} is listed in the manifest but missing; restore it or rewrite the shard directory")
    try:
        reader = ArrayRecordReader(path)
        try:
            found = reader.num_records()
            ends = reader.read([0, found - 1]) if found == expected and found else []
        finally:
            reader.close()
    except RuntimeError as e:
        raise RecordError(f"shard {path} is corrupt or truncated ({type(e).__name__}: {str(e)[:200]}); restore it or rewrite the shard directory") from e
    if found != expected:
        raise RecordError(
            f"shard {path} has {found} readable records, the manifest says {expected} (corrupt or truncated); restore it or rewrite the shard directory"
        )
    for index, data in zip((0, found - 1), ends):
        decode_record(data, expect_video_shape=manifest["video_shape"], expect_audio_shape=manifest["audio_shape"], source=f"{path}[{index}]")


def open_shards(data_dir: str) -> tuple[dict, ShardSource]:
    """Check a shard directory and return (manifest, source of raw record bytes).

    Every problem (no manifest, wrong version, a missing, truncated or corrupt
    shard, a record of the wrong shape at a shard's ends) is raised here as a
    RecordError naming the file, before any training step runs.
    """
    manifest = _read_manifest(data_dir)
    for shard in manifest["shards"]:
        _check_shard(str(epath.Path(data_dir) / shard["file"]), shard["num_records"], manifest)
    total = sum(s["num_records"] for s in manifest["shards"])
    if total != manifest["num_records"]:
        raise RecordError(
            f"{epath.Path(data_dir) / MANIFEST}: shards hold {total} records, the manifest says {manifest['num_records']}; rewrite the shard directory"
        )
    return manifest, ShardSource(data_dir, manifest)
