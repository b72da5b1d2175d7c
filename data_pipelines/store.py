"""The encode store: encoded clips in a tensorstore zarr3 store, so encoding (the expensive stage)
is resumable and shards can be re-packed without re-encoding.

Layout under the store root:
    arrays/<key>/<name>   one zarr3 array per encoded array of a clip (video, audio, text_emb, text_mask)
    done/<key>.json       the done-marker: the record's other fields (caption, fps, ...), its bucket,
                          the encode settings' fingerprint and a SHA-256 of each array's bytes

The root may be local or on Google Cloud Storage (`gs://bucket/curated/store`): markers go
through `etils.epath`, arrays through tensorstore's `file` or `gcs` kvstore.

A clip counts as encoded only once its marker exists. The marker is written last and atomically
(write to a temporary name, then rename), so a run killed while encoding leaves at worst arrays
without a marker, which the next run overwrites. A marker whose fingerprint differs from the
current encode settings is stale and the clip is encoded again.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import tensorstore as ts
from etils import epath

ARRAY_NAMES = ("video", "audio", "text_emb", "text_mask")
_CODECS = [{"name": "bytes"}, {"name": "zstd", "configuration": {"level": 3}}]


def array_digest(x: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    x = np.ascontiguousarray(x)
    h = hashlib.sha256(f"{x.dtype.name}{list(x.shape)}".encode())
    h.update(x.tobytes())
    return h.hexdigest()


def kvstore(path: str) -> dict:
    """tensorstore's kvstore spec of a local or gs:// path."""
    if path.startswith("gs://"):
        bucket, _, rest = path.removeprefix("gs://").partition("/")
        return {"driver": "gcs", "bucket": bucket, "path": rest}
    return {"driver": "file", "path": path}


class EncodeStore:
    """Encoded clips by key under `root` (a local or gs:// path)."""

    def __init__(self, root: str):
        self.root = root
        (epath.Path(root) / "done").mkdir(parents=True, exist_ok=True)

    def _array_path(self, key: str, name: str) -> str:
        return str(epath.Path(self.root) / "arrays" / key / name)

    def _spec(self, key: str, name: str) -> dict:
        return {"driver": "zarr3", "kvstore": kvstore(self._array_path(key, name))}

    def _marker(self, key: str) -> epath.Path:
        return epath.Path(self.root) / "done" / f"{key}.json"

    def marker(self, key: str) -> dict | None:
        """The done-marker of `key`, or None when the clip is not (completely) encoded."""
        path = self._marker(key)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError:  # a marker cut short by a crash outside the atomic rename: encode again
            return None

    def is_done(self, key: str, fingerprint: str) -> bool:
        marker = self.marker(key)
        return marker is not None and marker.get("fingerprint") == fingerprint

    def done_keys(self) -> list[str]:
        return sorted(p.name[:-5] for p in (epath.Path(self.root) / "done").iterdir() if p.name.endswith(".json"))

    def put(self, key: str, arrays: dict[str, np.ndarray], fields: dict, fingerprint: str) -> dict:
        """Write a clip's arrays, then its marker (fields: JSON-ready record fields and bucket); returns the marker."""
        unknown = set(arrays) - set(ARRAY_NAMES)
        if unknown:
            raise ValueError(f"EncodeStore.put: unknown array names {sorted(unknown)}; use {ARRAY_NAMES}")
        digests = {}
        for name, x in arrays.items():
            x = np.ascontiguousarray(x)
            spec = {**self._spec(key, name), "metadata": {"codecs": _CODECS}}
            out = ts.open(
                spec,
                create=True,
                delete_existing=True,
                dtype=ts.dtype(x.dtype.name),
                shape=x.shape,
                chunk_layout=ts.ChunkLayout(chunk_shape=[max(1, d) for d in x.shape]),
            ).result()
            out.write(x).result()
            digests[name] = array_digest(x)
        marker = {**fields, "key": key, "fingerprint": fingerprint, "digests": digests}
        final = self._marker(key)
        tmp = final.with_name(final.name + ".tmp")
        tmp.write_text(json.dumps(marker, sort_keys=True))
        tmp.replace(final)
        return marker

    def get(self, key: str) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, marker) of an encoded clip; raises naming the key when it is not encoded or its bytes changed."""
        marker = self.marker(key)
        if marker is None:
            raise KeyError(f"clip {key} is not in the encode store {self.root}; run the pipeline to encode it")
        arrays = {}
        for name, digest in marker["digests"].items():
            x = ts.open(self._spec(key, name), open=True).result().read().result()
            if array_digest(x) != digest:
                raise ValueError(
                    f"{self._array_path(key, name)} does not match its done-marker "
                    f"(corrupt or overwritten); delete {self._marker(key)} and re-run to encode it again"
                )
            arrays[name] = x
        return arrays, marker
