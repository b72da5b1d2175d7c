"""A run directory and its shards on Google Cloud Storage: a tiny run trained on
gs://test-bucket/data, resumed, loaded and sampled with --workdir gs://test-bucket/run
into gs://test-bucket/samples, on an emulated bucket that never reaches the network.

The bucket is tests/gcs_emulation.py's (conftest's `gcs_bucket` fixture).
"""

import json
import os

import pytest

from configs import test as test_config
from jav import media, sample
from jav.data import synthetic
from jav.runs import load_config, load_run
from jav.train.diffusion import train

WORKDIR = "gs://test-bucket/run"
DATA = "gs://test-bucket/data"


def config(shards, steps):
    cfg = test_config.get_config()
    cfg.data.dir = shards
    cfg.train.steps = steps
    cfg.train.log_every = 1
    cfg.train.keep_checkpoints = 1  # the resumed run's save prunes step 2 from the bucket
    return cfg


def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, path.read_text().splitlines())}


def test_train_resume_and_load_a_run_on_gcs(shards, gcs_bucket, tmp_path):
    local = tmp_path / "local"
    train(config(shards, 3), str(local), log=lambda _: None)

    # the same 8 clips written to the bucket (the `shards` fixture's command), read from there
    synthetic.main(["--out", DATA, "--num", "8", "--records-per-shard", "4"])
    assert sorted(p.name for p in (gcs_bucket / "test-bucket" / "data").iterdir()) == [
        "manifest.json",
        "records-00000.array_record",
        "records-00001.array_record",
    ]
    train(config(DATA, 2), WORKDIR, log=lambda _: None)
    run = gcs_bucket / "test-bucket" / "run"
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
    frames, *_ = media.read_mp4(gcs_bucket / "test-bucket" / "samples" / "000.mp4")
    assert frames.shape[0] == cfg.data.fps * cfg.data.duration
    assert json.loads((gcs_bucket / "test-bucket" / "samples" / "000.json").read_text())["checkpoint_step"] == 3
    # nothing took gs://test-bucket/run for the relative path gs:/test-bucket/run
    assert os.listdir(".") == []
