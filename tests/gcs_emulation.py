"""An emulated Google Cloud Storage for tests: gs://BUCKET/... is a local folder, and
nothing reaches the network.

The bucket is that folder at every layer jav writes through: `etils.epath.testing.mock_epath`
sends epath's file operations on gs:// paths there (run files, TensorBoard events, Orbax's
directories, JSON items and commit markers, shard manifests, curation output; left to
itself epath would hand gs://b/r to the os module, which reads it as the relative path
gs:/b/r), and the layers with file systems of their own are pointed at the same folder:
Orbax's and the encode store's TensorStore specs (their `gcs` kvstore becomes a `file`
one), and ArrayRecord's reader, writer and Grain's source over it (the shards' records,
which ArrayRecord opens in its own C++ file layer). Orbax also asks the bucket whether it
has a hierarchical namespace (through google-cloud-storage): here it has none.
"""

from __future__ import annotations

import contextlib
import os

import grain
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
from etils.epath import testing as epath_testing
from orbax.checkpoint._src.path import gcs_utils  # where Orbax turns gs:// paths into GCS calls

from data_pipelines import store
from jav.data import shards


@contextlib.contextmanager
def emulated_gcs(root, monkeypatch):
    """Every gs:// path under `root` (a local folder) while the context is open."""
    root = os.fspath(root)

    def local(path):
        path = os.fspath(path)
        return os.path.join(root, path.removeprefix("gs://")) if path.startswith("gs://") else path

    def remote(path):
        path = os.fspath(path)
        return "gs://" + path.removeprefix(f"{root}/") if path.startswith(f"{root}/") else path

    def one(original, path, *args, **kwargs):
        return original(local(path), *args, **kwargs)

    def two(original, path, dst, **kwargs):
        return original(local(path), local(dst), **kwargs)

    mocks = {name: one for name in ("open", "exists", "isdir", "listdir", "makedirs", "mkdir", "remove", "rmtree", "stat")}
    mocks.update(
        rename=two,
        replace=two,
        copy=two,
        glob=lambda original, pattern: [remote(p) for p in original(local(pattern))],
        walk=lambda original, top, **kw: ((remote(d), dirs, files) for d, dirs, files in original(local(top), **kw)),
    )
    monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", lambda path: {"driver": "file", "path": local(path)})
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    kvstore = store.kvstore
    monkeypatch.setattr(store, "kvstore", lambda path: kvstore(local(path)))
    monkeypatch.setattr(shards, "ArrayRecordWriter", lambda path, *a: ArrayRecordWriter(local(path), *a))
    monkeypatch.setattr(shards, "ArrayRecordReader", lambda path, *a: ArrayRecordReader(local(path), *a))
    source = grain.sources.ArrayRecordDataSource
    monkeypatch.setattr(grain.sources, "ArrayRecordDataSource", lambda paths: source([local(p) for p in paths]))
    with epath_testing.mock_epath(**mocks):
        yield
