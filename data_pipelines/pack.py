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

from etils import epath

from data_pipelines.store import EncodeStore
from jav.data.shards import MANIFEST, write_shards
from jav.latent_file import write_latent_json

PACK_FILE = "pack.json"


def pack_fingerprint(markers: list[dict], records_per_shard: int) -> str:
    h = hashlib.sha256(f"records_per_shard={records_per_shard}".encode())
    for m in sorted(markers, key=lambda m: m["key"]):
        h.update(json.dumps([m["key"], m["digests"], m["caption"], m["metadata"]], sort_keys=True).encode())
    return h.hexdigest()


def _read_json(path: epath.Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        return None


def pack_bucket(store_root: str, shards_root: str, bucket: str, keys: list[str], records_per_shard: int, latent: dict | None = None) -> dict:
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
    out_dir = epath.Path(shards_root) / bucket
    done = _read_json(out_dir / PACK_FILE)
    if done and done.get("fingerprint") == fingerprint and (out_dir / MANIFEST).exists():
        return {"bucket": bucket, "num_records": len(keys), "written": False, "fingerprint": fingerprint}

    def records():
        for key in keys:
            arrays, marker = store.get(key)
            yield {
                **arrays,
                "caption": marker["caption"],
                "fps": marker["fps"],
                "sample_rate": marker["sample_rate"],
                "duration": marker["duration"],
                "metadata": marker["metadata"],
            }

    # Write beside the old directory and swap: a reader never sees a half-written bucket.
    tmp = epath.Path(shards_root) / f".{bucket}.tmp"  # hidden: loaders skip it if a crash leaves it
    if tmp.exists():
        tmp.rmtree()
    write_shards(records(), str(tmp), records_per_shard)
    if latent is not None:
        arrays, _ = store.get(keys[0])
        write_latent_json(tmp, dict(latent, video_latent_shape=list(arrays["video"].shape), audio_latent_shape=list(arrays["audio"].shape), bucket=bucket))
    (tmp / PACK_FILE).write_text(json.dumps({"fingerprint": fingerprint, "keys": keys}, indent=1))
    if out_dir.exists():
        out_dir.rmtree()
    tmp.rename(out_dir)
    return {"bucket": bucket, "num_records": len(keys), "written": True, "fingerprint": fingerprint}


def remove_stale_buckets(shards_root: str, keep: set[str]) -> list[str]:
    """Delete bucket directories this packer wrote earlier that the current run no longer fills."""
    removed = []
    root = epath.Path(shards_root)
    if not root.is_dir():
        return removed
    for path in sorted(root.iterdir()):
        if path.name not in keep and (path / PACK_FILE).exists():
            path.rmtree()
            removed.append(path.name)
    return removed
