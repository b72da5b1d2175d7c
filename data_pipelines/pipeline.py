"""The curation pipeline as an Apache Beam pipeline: the same code on the DirectRunner, Dataflow,
Flink or Spark (see `data_pipelines.run` for the commands).

    input files (sorted) -> Clip(source) -> [cached result of an earlier run, or stage 1 -> ... -> stage N]
                                                                         (Drops -> side output)
      -> near-duplicate removal (clips grouped by pHash band, `stages.dedup.near_duplicates`)
      -> encode into the tensorstore store (skipped for clips already done) -> group by bucket
      -> pack ArrayRecord shards per bucket -> manifest.jsonl, drops.jsonl, quarantine/, report

A source whose stage results an earlier run recorded (store/sources/, keyed by the file's size and
mtime and the stage settings) skips the stages; its clips go straight to dedup and encoding, where
clips already in the store are skipped too, so a re-run does almost no work.

Stages never stop the run: a stage that raises is caught here and its clip becomes a Drop
("stage_error"); corrupt inputs are quarantined with their reason. Encoding errors other than
bad clip contents (ValueError) do stop the run, and the next run resumes from the store.
Everything written at the end is written only if its bytes changed, so a second run over the
same input leaves every output file untouched. The manifest, drops and report are gathered in
one worker: fine for millions of clips' small entries, not for billions.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import time

import apache_beam as beam
from etils import epath

from data_pipelines import encode as encode_lib
from data_pipelines import media
from data_pipelines import pack as pack_lib
from data_pipelines import report as report_lib
from data_pipelines.clip import Clip, Drop
from data_pipelines.store import EncodeStore

DROPS = "drops"
CACHED = "cached"
QUARANTINE_REASONS = ("corrupt", "stage_error")
MEDIA_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".wav", ".flac", ".mp3", ".m4a", ".ogg")


def list_inputs(pattern: str) -> list[str]:
    """A directory (media files directly inside or below it, by suffix) or a glob -> sorted paths;
    local or in a bucket (gs://...: a folder, or a glob without `**`, which would list the bucket)."""
    if media.is_remote(pattern):
        found = _remote_inputs(pattern)
    elif os.path.isdir(pattern):
        found = [os.path.join(root, name) for root, _, names in os.walk(pattern) for name in names if name.lower().endswith(MEDIA_SUFFIXES)]
    else:
        found = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
    if not found:
        raise FileNotFoundError(
            f"--input {pattern!r} matches no media files (suffixes {', '.join(MEDIA_SUFFIXES)}); "
            "give a directory of media files or a glob such as 'raw/**/*.mp4'"
        )
    return sorted(p if media.is_remote(p) else os.path.abspath(p) for p in found)


def _wildcards(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _remote_inputs(pattern: str) -> list[str]:
    """A bucket folder's media files (walked) or the objects a glob's last part matches."""
    if not _wildcards(pattern):
        root = epath.Path(pattern)
        return [os.fspath(d / n) for d, _, names in root.walk() for n in names if n.lower().endswith(MEDIA_SUFFIXES)] if root.is_dir() else []
    folder, _, names = pattern.rpartition("/")
    if _wildcards(folder):
        raise ValueError(f"--input {pattern!r}: in a bucket, wildcards only in the last part (listing below them would list the bucket); name the folder")
    return [os.fspath(p) for p in epath.Path(folder).glob(names) if p.is_file()]


def stage_list(cfg) -> list[tuple[str, dict]]:
    """cfg.stages "probe,shots,..." with cfg.stage_params.<name> -> [(name, params)]."""
    names = [s.strip() for s in str(cfg.stages).split(",") if s.strip()]
    params = cfg.stage_params.to_dict() if hasattr(cfg.stage_params, "to_dict") else dict(cfg.stage_params)
    from data_pipelines.stages import STAGES

    unknown = set(params) - set(names) - set(STAGES)  # settings of a known stage left out of the order are fine
    if unknown:
        raise ValueError(
            f"stage_params has settings for {sorted(unknown)}, which are neither in stages="
            f"{cfg.stages!r} nor known stages ({sorted(STAGES)}); fix the name or remove the settings"
        )
    return [(n, dict(params.get(n, {}))) for n in names]


def drop_entry(drop: Drop) -> dict:
    return encode_lib.jsonable(drop.manifest_entry())


def stage_fingerprint(cfg, stage_fns: dict | None = None) -> str:
    """Digest of the stage settings and the stages' code: cached stage results of other code are not reused."""
    h = hashlib.sha256(json.dumps(stage_list(cfg), sort_keys=True, default=str).encode())
    here = os.path.dirname(os.path.abspath(__file__))
    code = sorted(glob.glob(os.path.join(here, "stages", "*.py"))) + [os.path.join(here, n) for n in ("media.py", "clip.py")]
    for path in code:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                h.update(f.read())
    for name, fn in sorted((stage_fns or {}).items()):
        h.update(name.encode() + getattr(getattr(fn, "__code__", None), "co_code", b""))
    return h.hexdigest()[:16]


def _cache_path(cache_root: str, source: str) -> epath.Path:
    return epath.Path(cache_root) / (hashlib.sha1(source.encode()).hexdigest() + ".json")


def _source_id(source: str, fingerprint: str) -> list | None:
    """What a cached stage result is valid for: the file's size and mtime (a bucket object's
    too) and the stage settings; None (no caching) where the file cannot be stat'ed."""
    try:
        size, mtime = media.file_stat(source)
    except OSError:
        return None
    return [size, mtime, fingerprint]


def clip_from_entry(entry: dict) -> Clip:
    names = {f.name for f in dataclasses.fields(Clip)}
    return Clip(**{k: v for k, v in entry.items() if k in names})


class CachedFn(beam.DoFn):
    """Clip(source) -> its cached stage results (clips on CACHED, drops on DROPS), or itself to run the stages."""

    def __init__(self, cache_root: str, fingerprint: str):
        self.cache_root, self.fingerprint = cache_root, fingerprint

    def process(self, clip: Clip):
        ident = _source_id(clip.source, self.fingerprint)
        cached = None
        path = _cache_path(self.cache_root, clip.source)
        if ident is not None and path.exists():
            try:
                cached = json.loads(path.read_text())
            except ValueError:
                cached = None
        if cached is None or cached.get("id") != ident:
            yield clip
            return
        _count("cached", time.perf_counter())
        for entry in cached["clips"]:
            yield beam.pvalue.TaggedOutput(CACHED, clip_from_entry(entry))
        for entry in cached["drops"]:
            yield beam.pvalue.TaggedOutput(DROPS, entry)


def write_stage_cache(item, cache_root: str, fingerprint: str) -> None:
    """(source, [("clip" | "drop", entry)]) -> store/sources/<hash>.json, atomically."""
    source, rows = item
    ident = _source_id(source, fingerprint)
    if ident is None or any(kind == "drop" and e["reason"] == "stage_error" for kind, e in rows):
        return  # a stage that raised may succeed next time: run the stages again
    rows = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))
    body = {"id": ident, "source": source, "clips": [e for kind, e in rows if kind == "clip"], "drops": [e for kind, e in rows if kind == "drop"]}
    epath.Path(cache_root).mkdir(parents=True, exist_ok=True)
    report_lib.write_if_changed(_cache_path(cache_root, source), json.dumps(body, sort_keys=True))


def _count(step: str, start: float) -> None:
    """Beam metrics per step: clips in and microseconds spent (benchmarks/curation.py reads them)."""
    beam.metrics.Metrics.counter("curation", f"{step}/clips").inc()
    beam.metrics.Metrics.counter("curation", f"{step}/us").inc(int((time.perf_counter() - start) * 1e6))


class StageFn(beam.DoFn):
    """One stage: a clip in, clips out on the main output and drop entries on DROPS."""

    def __init__(self, name: str, params: dict, fn=None):
        self.name, self.params, self._given = name, params, fn

    def setup(self):
        if self._given is not None:
            self.fn = self._given
        else:
            from data_pipelines.stages import get_stage

            self.fn = get_stage(self.name)

    def process(self, clip: Clip):
        start = time.perf_counter()
        try:
            out = self.fn(clip, **self.params)
        except Exception as e:  # stages should not raise; one that does must not stop the run
            out = [Drop(clip.without_media(), stage=self.name, reason="stage_error", detail=f"{type(e).__name__}: {str(e)[:300]}")]
        _count(self.name, start)
        for item in out:
            if isinstance(item, Drop):
                yield beam.pvalue.TaggedOutput(DROPS, drop_entry(item))
            else:
                yield item


class EncodeFn(beam.DoFn):
    """A clip -> its manifest entry (with its bucket) once it is in the encode store, or a drop entry."""

    def __init__(self, cfg, store_root: str, load_fn=None):
        self.cfg, self.store_root, self._given_load = cfg, store_root, load_fn

    def setup(self):
        if self._given_load is not None:
            self.load = self._given_load
        else:
            from data_pipelines.stages import get_stage

            self.load = get_stage("load")
        self.load_params = dict(stage_list(self.cfg)).get("load", {})
        self.store = EncodeStore(self.store_root)
        self.buckets = encode_lib.parse_buckets(self.cfg)
        self.fingerprint = encode_lib.fingerprint(self.cfg)
        self.encoders = encode_lib.Encoders(self.cfg)

    def process(self, clip: Clip):
        start = time.perf_counter()
        yield from self._encode(clip)
        _count("encode", start)

    def _encode(self, clip: Clip):
        # the encode settings and everything the stages said about the clip (time range, re-alignment,
        # caption, scores): a clip that the stages now describe differently is encoded again
        described = json.dumps(encode_lib.jsonable(clip.without_media().manifest_entry()), sort_keys=True)
        fingerprint = hashlib.sha256((self.fingerprint + described).encode()).hexdigest()[:16]
        marker = self.store.marker(clip.key)
        if marker is not None and marker.get("fingerprint") == fingerprint:
            bucket = marker["bucket"]  # encoded by an earlier run: skip the expensive part
        else:
            drop = None
            if clip.video is None:  # a clip from the stage cache: decode it again
                loaded = self.load(clip, **self.load_params)
                if len(loaded) != 1 or isinstance(loaded[0], Drop):
                    for item in loaded:
                        if isinstance(item, Drop):
                            yield beam.pvalue.TaggedOutput(DROPS, drop_entry(item))
                    return
                # only the media: the description stays the one the stages gave (and the fingerprint covers)
                clip = dataclasses.replace(clip, video=loaded[0].video, audio=loaded[0].audio, sample_rate=loaded[0].sample_rate)
            bucket = encode_lib.choose_bucket(clip, self.buckets) if clip.video is not None else None
            if clip.video is None or clip.audio is None:
                drop = Drop(clip.without_media(), "encode", "no_media", "the clip reached encoding without decoded video and audio; put 'load' in the stages")
            elif bucket is None:
                drop = Drop(
                    clip.without_media(),
                    "encode",
                    "shorter_than_buckets",
                    f"{clip.duration:.3f} s is shorter than every bucket of encode.buckets={self.cfg.encode.buckets!r} at {self.cfg.encode.fps} fps",
                )
            else:
                try:
                    arrays, fields = encode_lib.encode_clip(clip, bucket, self.cfg, self.encoders)
                except ValueError as e:  # bad clip contents; other errors stop the run, which resumes
                    drop = Drop(clip.without_media(), "encode", "encode_error", f"{type(e).__name__}: {e}")
                else:
                    self.store.put(clip.key, arrays, fields, fingerprint)
                    bucket = bucket.name
            if drop is not None:
                yield beam.pvalue.TaggedOutput(DROPS, drop_entry(drop))
                return
        kept = clip.without_media()
        kept.bucket = bucket
        yield encode_lib.jsonable(kept.manifest_entry())


def _band_keys(clip: Clip, bands: int):
    """(band id, (key, phash, quality)) for each pHash band: near duplicates share at least one band."""
    phash = (clip.scores or {}).get("phash")
    if phash is None:
        return []
    bits = bin(int(phash, 16))[2:].zfill(64)
    width = -(-64 // bands)
    from data_pipelines.stages.dedup import clip_quality

    quality = clip_quality(clip)
    return [(f"{b}:{bits[b * width : (b + 1) * width]}", (clip.key, phash, quality)) for b in range(bands)]


def _dedup(clips, cfg):
    """Clips minus near duplicates, and the drop entries of those removed.

    Clips are grouped by pHash band; a group yields its clips that have a neighbour within
    max_hamming bits. Only those candidates meet in one final group for `near_duplicates`: a clip
    without a neighbour is always kept and never decides for another, so the result equals one
    `near_duplicates` call over all clips while the final group holds only the duplicate clusters.
    """
    from data_pipelines.stages.dedup import hamming, near_duplicates

    max_hamming = int(cfg.dedup.max_hamming)
    bands = max_hamming + 1  # pigeonhole: hashes within max_hamming bits agree exactly on some band

    def candidates(group):
        _, entries = group
        entries = sorted(set(entries))
        for i, a in enumerate(entries):
            if any(hamming(a[1], b[1]) <= max_hamming for j, b in enumerate(entries) if j != i):
                yield a

    def duplicates(group):
        _, entries = group
        return sorted(near_duplicates(sorted(set(entries)), max_hamming))

    dropped = (
        clips
        | "DedupBands" >> beam.FlatMap(_band_keys, bands)
        | "DedupGroup" >> beam.GroupByKey()
        | "DedupCandidates" >> beam.FlatMap(candidates)
        | "DedupOneGroup" >> beam.Map(lambda entry: (None, entry))
        | "DedupGather" >> beam.GroupByKey()
        | "DedupPick" >> beam.FlatMap(duplicates)
        | "DedupMark" >> beam.Map(lambda key: (key, True))
    )
    by_key = clips | "DedupKey" >> beam.Map(lambda c: (c.key, c))

    def split(joined):
        _, (found, marks) = joined
        for clip in found:
            if marks:
                yield beam.pvalue.TaggedOutput(
                    DROPS, drop_entry(Drop(clip.without_media(), "dedup", "near_duplicate", f"pHash within {max_hamming} bits of a clip of higher quality"))
                )
            else:
                yield clip

    out = (
        {"clip": by_key, "dup": dropped}
        | "DedupJoin" >> beam.CoGroupByKey()
        | "DedupSplit" >> beam.FlatMap(lambda j: split((j[0], (j[1]["clip"], j[1]["dup"])))).with_outputs(DROPS, main="clips")
    )
    return out.clips, out[DROPS]


def finalize(_, output: str, kept: list[dict], drops: list[dict], packed: list[dict], stale: list[str]) -> dict:
    """manifest.jsonl, drops.jsonl, quarantine/ and the report; every file written only when it changed."""
    kept = sorted(kept, key=lambda e: e["key"])
    drops = sorted(drops, key=lambda d: (d["source"], d["start"], d["stage"], d["key"], d["reason"]))
    lines = lambda rows: "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)  # noqa: E731
    out = epath.Path(output)
    written = [report_lib.write_if_changed(out / "manifest.jsonl", lines(kept)), report_lib.write_if_changed(out / "drops.jsonl", lines(drops))]
    quarantine = out / "quarantine"
    quarantine.mkdir(parents=True, exist_ok=True)
    current = set()
    for d in drops:
        if d["reason"] in QUARANTINE_REASONS:
            name = f"{os.path.basename(d['source'])}.{hashlib.sha1(d['source'].encode()).hexdigest()[:8]}.json"
            body = json.dumps({k: d[k] for k in ("source", "stage", "reason", "detail")}, indent=1, sort_keys=True)
            written.append(report_lib.write_if_changed(quarantine / name, body))
            current.add(name)
    for path in quarantine.iterdir():
        if path.name not in current:  # inputs since fixed or removed
            path.unlink()
            written.append(True)
    summary = report_lib.write_report(output, kept, drops, packed)
    summary["files_written"] += sum(written) + sum(p["written"] for p in packed) + len(stale)
    summary["stale_buckets_removed"] = stale
    return summary


def build(p: beam.Pipeline, cfg, inputs: list[str], output: str, stage_fns: dict | None = None):
    """Add the curation pipeline to `p`; returns the PCollection holding the run's summary dict.

    stage_fns maps stage names to functions to use instead of the registry (tests); encoding decodes
    clips from the stage cache with the "load" stage.
    """
    stage_fns = stage_fns or {}
    store_root, shards_root = str(epath.Path(output) / "store"), str(epath.Path(output) / "shards")
    encode_lib.parse_buckets(cfg)  # bad bucket specs fail here, before any work
    cache_root, fingerprint = str(epath.Path(store_root) / "sources"), stage_fingerprint(cfg, stage_fns)
    looked_up = (
        p
        | "ListInputs" >> beam.Create(inputs)
        | "ToClip" >> beam.Map(lambda path: Clip(source=path))
        | "StageCache" >> beam.ParDo(CachedFn(cache_root, fingerprint)).with_outputs(CACHED, DROPS, main="fresh")
    )
    clips, stage_drops = looked_up.fresh, []
    for i, (name, params) in enumerate(stage_list(cfg)):
        out = clips | f"S{i:02d}_{name}" >> beam.ParDo(StageFn(name, params, stage_fns.get(name))).with_outputs(DROPS, main="clips")
        clips = out.clips
        stage_drops.append(out[DROPS])
    # record each source's stage results once all of them are in, so a re-run can skip its stages
    fresh_rows = (
        clips | "CacheClipRows" >> beam.Map(lambda c: (c.source, ("clip", encode_lib.jsonable(c.without_media().manifest_entry())))),
        tuple(stage_drops) | "FreshDrops" >> beam.Flatten() | "CacheDropRows" >> beam.Map(lambda d: (d["source"], ("drop", d))),
    ) | "CacheRows" >> beam.Flatten()
    _ = fresh_rows | "BySource" >> beam.GroupByKey() | "WriteStageCache" >> beam.Map(write_stage_cache, cache_root, fingerprint)
    clips = (clips, looked_up[CACHED]) | "WithCached" >> beam.Flatten()
    drops = stage_drops + [looked_up[DROPS]]
    if cfg.dedup.enabled:
        clips, dedup_drops = _dedup(clips, cfg)
        drops.append(dedup_drops)
    # spread the clips over the workers before the expensive step
    enc = clips | "Reshuffle" >> beam.Reshuffle() | "Encode" >> beam.ParDo(EncodeFn(cfg, store_root, stage_fns.get("load"))).with_outputs(DROPS, main="kept")
    drops.append(enc[DROPS])
    records_per_shard = int(cfg.pack.records_per_shard)
    latent = encode_lib.read_latent_codec(cfg.encode.latent) if cfg.encode.latent else None
    packed = (
        enc.kept
        | "BucketKey" >> beam.Map(lambda e: (e["bucket"], e["key"]))
        | "ByBucket" >> beam.GroupByKey()
        | "Pack" >> beam.MapTuple(lambda bucket, keys: pack_lib.pack_bucket(store_root, shards_root, bucket, list(keys), records_per_shard, latent))
    )
    kept_all = enc.kept | "KeptList" >> beam.combiners.ToList()
    drops_all = tuple(drops) | "AllDrops" >> beam.Flatten() | "DropList" >> beam.combiners.ToList()
    packed_all = packed | "PackedList" >> beam.combiners.ToList()
    stale = packed_all | "Stale" >> beam.Map(lambda ps: pack_lib.remove_stale_buckets(shards_root, {q["bucket"] for q in ps}))
    si = beam.pvalue.AsSingleton
    return p | "Once" >> beam.Create([None]) | "Finalize" >> beam.Map(finalize, output, si(kept_all), si(drops_all), si(packed_all), si(stale))
