"""Packing: encoded clips from the encode store -> ArrayRecord shards, one directory per shape bucket.

OUTPUT/shards/<bucket>/ holds the shards and manifest.json of `jav.data.shards.write_shards`
(readable by `jav.data.loader` and `jav.data.buckets`), records in sorted key order so that the
same set of encoded clips always gives byte-identical shards, plus pack.json: the fingerprint of
what was packed (keys and array digests). A bucket whose fingerprint is unchanged is not
rewritten, so a second run over the same input writes nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

from data_pipelines.store import EncodeStore
from jav.data.shards import MANIFEST, write_shards
from jav.latent_file import write_latent_json

PACK_FILE = "pack.json"


def pack_fingerprint(markers: list[dict], records_per_shard: int) -> str:
    h = hashlib.sha256(f"records_per_shard={records_per_shard}".encode())
    for m in sorted(markers, key=lambda m: m["key"]):
        h.update(json.dumps([m["key"], m["digests"], m["caption"], m["metadata"]], sort_keys=True).encode())
    return h.hexdigest()


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def pack_bucket(store_root: str, shards_root: str, bucket: str, keys: list[str], records_per_shard: int,
                latent: dict | None = None) -> dict:
    """Write (or keep) shards_root/bucket from the encoded clips `keys`; returns
    {bucket, num_records, written: bool, fingerprint}. `latent`: the latent codec the clips were
    encoded with (a latent.json's contents), written beside the shards with the bucket's latent
    shapes, so a model trained on them decodes its samples through it."""
    store = EncodeStore(store_root)
    keys = sorted(set(keys))
    markers = [store.marker(k) for k in keys]
    missing = [k for k, m in zip(keys, markers) if m is None]
    if missing:
        raise KeyError(f"pack: clips {missing[:5]} of bucket {bucket} are not in the encode store {store_root}")
    fingerprint = pack_fingerprint(markers, records_per_shard)
    out_dir = os.path.join(shards_root, bucket)
    done = _read_json(os.path.join(out_dir, PACK_FILE))
    if done and done.get("fingerprint") == fingerprint and os.path.isfile(os.path.join(out_dir, MANIFEST)):
        return {"bucket": bucket, "num_records": len(keys), "written": False, "fingerprint": fingerprint}

    def records():
        for key in keys:
            arrays, marker = store.get(key)
            yield {**arrays, "caption": marker["caption"], "fps": marker["fps"], "sample_rate": marker["sample_rate"],
                   "duration": marker["duration"], "metadata": marker["metadata"]}

    # Write beside the old directory and swap: a reader never sees a half-written bucket.
    tmp = os.path.join(shards_root, f".{bucket}.tmp")  # hidden: loaders skip it if a crash leaves it
    shutil.rmtree(tmp, ignore_errors=True)
    write_shards(records(), tmp, records_per_shard)
    if latent is not None:
        arrays, _ = store.get(keys[0])
        write_latent_json(tmp, dict(latent, video_latent_shape=list(arrays["video"].shape),
                                    audio_latent_shape=list(arrays["audio"].shape), bucket=bucket))
    with open(os.path.join(tmp, PACK_FILE), "w") as f:
        json.dump({"fingerprint": fingerprint, "keys": keys}, f, indent=1)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return {"bucket": bucket, "num_records": len(keys), "written": True, "fingerprint": fingerprint}


def remove_stale_buckets(shards_root: str, keep: set[str]) -> list[str]:
    """Delete bucket directories this packer wrote earlier that the current run no longer fills."""
    removed = []
    if not os.path.isdir(shards_root):
        return removed
    for name in sorted(os.listdir(shards_root)):
        path = os.path.join(shards_root, name)
        if name not in keep and os.path.isfile(os.path.join(path, PACK_FILE)):
            shutil.rmtree(path)
            removed.append(name)
    return removed
