"""A run directory and its shards on Google Cloud Storage: a tiny run trained on
gs://test-bucket/data, resumed, loaded and sampled with --workdir gs://test-bucket/run
into gs://test-bucket/samples, on an emulated bucket that never reaches the network.

The bucket is a local folder at two layers: `etils.epath.testing.mock_epath` sends
epath's file operations on gs:// paths there (config.json, metrics, TensorBoard
events, and Orbax's directories, JSON items, metadata and commit markers; left
to itself it would hand gs://b/r to the os module, which reads it as the relative
path gs:/b/r, where the old bug wrote too, so every operation is mapped), and
Orbax's TensorStore spec for a gs:// path is swapped for TensorStore's `file`
driver on the same folder (the arrays, which Orbax writes through TensorStore's
own GCS driver and not through epath). Orbax also asks the bucket whether it has a
hierarchical namespace (through google-cloud-storage): here it has none. ArrayRecord
(the shards' records) opens gs:// paths in its own C++ file layer; its reader,
writer and Grain's source over it are handed the bucket's folder instead.
"""
import json
import os

import grain
import pytest
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
from etils.epath import testing as epath_testing
from orbax.checkpoint._src.path import gcs_utils  # where Orbax turns gs:// paths into GCS calls

from configs import test as test_config
from jav.data import shards as shards_module
from jav import media, sample
from jav.data import synthetic
from jav.runs import load_config, load_run
from jav.train.diffusion import train

WORKDIR = "gs://test-bucket/run"
DATA = "gs://test-bucket/data"


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """The folder that holds the emulated gs:// buckets, with the working directory
    moved to an empty folder that a gs:// path taken for a local one would land in."""
    root = tmp_path / "gcs"
    root.mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    def local(path):
        path = os.fspath(path)
        return str(root / path.removeprefix("gs://")) if path.startswith("gs://") else path

    def remote(path):
        path = os.fspath(path)
        return "gs://" + path.removeprefix(f"{root}/") if path.startswith(f"{root}/") else path

    def one(original, path, *args, **kwargs):
        return original(local(path), *args, **kwargs)

    def two(original, path, dst, **kwargs):
        return original(local(path), local(dst), **kwargs)

    mocks = {name: one for name in ("open", "exists", "isdir", "listdir", "makedirs", "mkdir", "remove", "rmtree", "stat")}
    mocks.update(rename=two, replace=two, copy=two,
                 glob=lambda original, pattern: [remote(p) for p in original(local(pattern))],
                 walk=lambda original, top, **kw: ((remote(d), dirs, files) for d, dirs, files in original(local(top), **kw)))
    monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", lambda path: {"driver": "file", "path": local(path)})
    # ArrayRecord reads and writes gs:// through its own C++ file layer, which epath's mock does not reach
    monkeypatch.setattr(shards_module, "ArrayRecordWriter", lambda path, *a: ArrayRecordWriter(local(path), *a))
    monkeypatch.setattr(shards_module, "ArrayRecordReader", lambda path, *a: ArrayRecordReader(local(path), *a))
    source = grain.sources.ArrayRecordDataSource
    monkeypatch.setattr(grain.sources, "ArrayRecordDataSource", lambda paths: source([local(p) for p in paths]))
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    with epath_testing.mock_epath(**mocks):
        yield root


def config(shards, steps):
    cfg = test_config.get_config()
    cfg.data.dir = shards
    cfg.train.steps = steps
    cfg.train.log_every = 1
    cfg.train.keep_checkpoints = 1  # the resumed run's save prunes step 2 from the bucket
    return cfg


def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, path.read_text().splitlines())}


def test_train_resume_and_load_a_run_on_gcs(shards, bucket, tmp_path):
    local = tmp_path / "local"
    train(config(shards, 3), str(local), log=lambda _: None)

    # the same 8 clips written to the bucket (the `shards` fixture's command), read from there
    synthetic.main(["--out", DATA, "--num", "8", "--records-per-shard", "4"])
    assert sorted(p.name for p in (bucket / "test-bucket" / "data").iterdir()) == [
        "manifest.json", "records-00000.array_record", "records-00001.array_record"]
    train(config(DATA, 2), WORKDIR, log=lambda _: None)
    run = bucket / "test-bucket" / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2"]
    messages = []
    train(config(DATA, 3), WORKDIR, log=messages.append)
    assert f"resumed from {WORKDIR} at step 2" in messages

    # the run's files are in the bucket, the same as a local run's
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["3"]
    remote_cfg, local_cfg = json.loads((run / "config.json").read_text()), json.loads((local / "config.json").read_text())
    assert remote_cfg["data"].pop("dir") == DATA and local_cfg["data"].pop("dir") == shards
    assert remote_cfg == local_cfg  # the same run but for where its data lies
    assert json.loads((run / "last_metrics.json").read_text())["step"] == 3
    events = sorted((run / "tensorboard").iterdir())
    assert len(events) == 2 and all(p.name.startswith("events.out.tfevents.") for p in events)  # one file per start
    assert all(b"loss" in p.read_bytes() for p in events)  # each start flushed its steps' scalars through epath
    # the resumed step continues the run: steps 1..3 as a straight local run logged them
    remote, straight = losses(run / "metrics.jsonl"), losses(local / "metrics.jsonl")
    assert sorted(remote) == [1, 2, 3]
    for step in straight:
        assert remote[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6), (step, remote, straight)

    assert load_config(WORKDIR).train.steps == 3
    cfg, model, step = load_run(WORKDIR)
    assert step == 3 and cfg.model.depth == 2
    # sampled from the bucket's run into the bucket
    paths = sample.main(["--workdir", WORKDIR, "--out", "gs://test-bucket/samples", "--steps", "2", "--prompt", "a red ball bouncing on a navy background"])
    assert [str(p) for p in paths] == ["gs://test-bucket/samples/000.mp4"]
    frames, *_ = media.read_mp4(bucket / "test-bucket" / "samples" / "000.mp4")
    assert frames.shape[0] == cfg.data.fps * cfg.data.duration
    assert json.loads((bucket / "test-bucket" / "samples" / "000.json").read_text())["checkpoint_step"] == 3
    # nothing took gs://test-bucket/run for the relative path gs:/test-bucket/run
    assert os.listdir(".") == []
