"""The Grain loader over bounce-world shards written by `python -m jav.data.synthetic`:
batch contents, determinism, disjoint per-host slices, and exact resume from iterator state."""

import itertools

import numpy as np
import pytest

from jav.clip_tokens import frames_to_model
from jav.data import bounce, mel, synthetic
from jav.data.loader import make_loader
from jav.data.record import RecordError, decode_record
from jav.data.shards import open_shards
from jav.tokenizer import HashTokenizer

NUM, FIRST_SEED = 12, 100


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bounce_shards"))
    synthetic.main(["--out", out, "--num", str(NUM), "--seed", str(FIRST_SEED), "--records-per-shard", "5"])
    return out


@pytest.fixture(scope="module")
def seed_of_video(data_dir):
    """Model-space video bytes -> clip seed, to identify the clips in a batch."""
    _, source = open_shards(data_dir)
    recs = [decode_record(source[i]) for i in range(len(source))]
    return {frames_to_model(r["video"]).tobytes(): r["metadata"]["seed"] for r in recs}


def seeds(batch, seed_of_video):
    return [seed_of_video[v.tobytes()] for v in batch["video"]]


def take(it, n):
    return list(itertools.islice(it, n))


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_synthetic_cli_writes_bounce_clips(data_dir, capsys):
    manifest = synthetic.main(["--out", data_dir + "_cli", "--num", "2", "--seed", "7"])
    assert "2/2 clips" in capsys.readouterr().out
    assert manifest["num_records"] == 2 and len(manifest["shards"]) == 1
    _, source = open_shards(data_dir + "_cli")
    rec = decode_record(source[1])
    clip = bounce.generate_clip(8)
    np.testing.assert_array_equal(rec["video"], clip.frames)
    np.testing.assert_array_equal(rec["audio"], mel.waveform_to_logmel(clip.audio, mel.MelParams()))
    assert rec["caption"] == clip.caption and rec["metadata"]["seed"] == 8
    np.testing.assert_array_equal(rec["metadata"]["discs"][0]["centres"], clip.metadata["discs"][0]["centres"])
    assert (rec["fps"], rec["sample_rate"], rec["duration"]) == (8.0, 16000, 2.0)


def test_batches_hold_model_arrays(data_dir, seed_of_video):
    manifest, source = open_shards(data_dir)
    assert [s["num_records"] for s in manifest["shards"]] == [5, 5, 2]
    batch = next(make_loader(data_dir, batch_size=4, seed=0, tokenizer_len=12))
    assert batch["video"].shape == (4, 16, 32, 32, 3) and batch["video"].dtype == np.float32
    assert batch["audio"].shape == (4, 200, 64) and batch["audio"].dtype == np.float32
    assert batch["text_ids"].shape == (4, 12) and batch["text_ids"].dtype == np.int32
    assert batch["text_mask"].dtype == np.bool_
    for j, seed in enumerate(seeds(batch, seed_of_video)):
        rec = decode_record(source[seed - FIRST_SEED])
        np.testing.assert_array_equal(batch["audio"][j], rec["audio"])
        ids, mask = HashTokenizer(1024, 12).encode([rec["caption"]])
        np.testing.assert_array_equal(batch["text_ids"][j], ids[0])
        np.testing.assert_array_equal(batch["text_mask"][j], mask[0])


def test_deterministic_given_seed_and_reshuffled_each_epoch(data_dir, seed_of_video):
    a = take(make_loader(data_dir, batch_size=4, seed=3), 6)  # two epochs
    assert_batches_equal(a, take(make_loader(data_dir, batch_size=4, seed=3), 6))
    order = [s for b in a for s in seeds(b, seed_of_video)]
    epochs = order[:NUM], order[NUM:]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(FIRST_SEED, FIRST_SEED + NUM))
    assert epochs[0] != epochs[1]
    other = [s for b in take(make_loader(data_dir, batch_size=4, seed=4), 3) for s in seeds(b, seed_of_video)]
    assert other != epochs[0]


def test_host_slices_are_disjoint_and_cover_an_epoch(data_dir, seed_of_video):
    per_host = []
    for index in range(2):
        it = make_loader(data_dir, batch_size=3, seed=5, process_index=index, process_count=2)
        per_host.append([s for b in take(it, NUM // 6) for s in seeds(b, seed_of_video)])
    assert len(per_host[0]) == len(per_host[1]) == NUM // 2
    assert not set(per_host[0]) & set(per_host[1])
    assert sorted(per_host[0] + per_host[1]) == list(range(FIRST_SEED, FIRST_SEED + NUM))


def test_state_restore_reproduces_next_batches(data_dir):
    it = make_loader(data_dir, batch_size=5, seed=11)
    take(it, 3)
    state = it.get_state()
    expected = take(it, 2)  # crosses an epoch boundary: 12 clips, 5 per batch
    fresh = make_loader(data_dir, batch_size=5, seed=11)
    fresh.set_state(state)
    assert_batches_equal(take(fresh, 2), expected)


def test_multiprocess_prefetch_gives_the_same_batches(data_dir):
    expected = take(make_loader(data_dir, batch_size=4, seed=2), 2)
    it = make_loader(data_dir, batch_size=4, seed=2, num_workers=2)
    try:
        assert_batches_equal(take(it, 2), expected)
    finally:
        it.close()


def test_loader_refuses_an_unfinished_directory_before_any_batch(tmp_path):
    with pytest.raises(RecordError, match=r"manifest\.json does not exist"):
        make_loader(str(tmp_path), batch_size=2, seed=0)
