"""Shape-bucketed loading (jav.data.buckets): same bucket on every host at every step, disjoint rows,
weights and curriculum respected, exact resume from get_state()."""

import numpy as np
import pytest

from jav.clip_tokens import model_to_frames
from jav.data import buckets
from jav.data.shards import write_shards

SHAPES = {"v2x4x4_a4": ((2, 4, 4, 3), (4, 8)), "v4x8x8_a8": ((4, 8, 8, 3), (8, 8))}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Two buckets; record r's pixels all equal r (ids 0-11 in the first, 100-107 in the second)."""
    root = tmp_path_factory.mktemp("buckets")
    for (name, (vshape, ashape)), ids in zip(SHAPES.items(), (range(12), range(100, 108))):
        recs = [
            {
                "video": np.full(vshape, i, np.uint8),
                "audio": np.zeros(ashape, np.float32),
                "caption": f"clip {i}",
                "fps": 8.0,
                "sample_rate": 16000,
                "duration": 1.0,
            }
            for i in ids
        ]
        write_shards(recs, str(root / name), records_per_shard=5)
    return str(root)


def _ids(batch) -> list[int]:
    frames = model_to_frames(batch["video"])  # [B, T, H, W, C] uint8: each row constant
    return [int(f.flat[0]) for f in frames]


def test_hosts_agree_on_bucket_and_take_disjoint_rows(root):
    weights = {"v2x4x4_a4": 1.0, "v4x8x8_a8": 1.0}
    hosts = [buckets.make_bucket_dataset(root, weights, batch_size=2, seed=3, process_index=p, process_count=2)[0] for p in (0, 1)]
    single = buckets.make_bucket_dataset(root, weights, batch_size=4, seed=3)[0]
    seen = set()
    for step in range(12):
        b0, b1, whole = hosts[0][step], hosts[1][step], single[step]
        assert b0["video"].shape == b1["video"].shape  # same bucket on both hosts
        ids0, ids1 = _ids(b0), _ids(b1)
        assert not set(ids0) & set(ids1)
        # together the hosts' rows are the global batch one host loading them all would see
        assert ids0 + ids1 == _ids(whole)
        seen.add(b0["video"].shape[1:])
    assert len(seen) == 2  # both buckets were drawn


def test_draw_counts_match_a_brute_force_recount_and_weights():
    curriculum = buckets.normalize_curriculum([(5000, {"a": 1.0}), (None, {"a": 1.0, "b": 3.0})], ["a", "b"])
    sched = buckets.BucketSchedule(2, curriculum, seed=7)
    steps = np.arange(12000)
    drawn = sched.draws(steps)
    assert (drawn[:5000] == 0).all()  # the first stage only weighs bucket a
    frac_b = (drawn[5000:] == 1).mean()
    assert abs(frac_b - 0.75) < 0.02
    for step in (0, 1, 4095, 4096, 4097, 9000, 11999):
        bucket, index = sched[step]
        assert bucket == drawn[step] and index == np.count_nonzero(drawn[:step] == bucket)
    other = buckets.BucketSchedule(2, curriculum, seed=8).draws(steps[5000:])
    assert (other != drawn[5000:]).any()  # the seed matters


def test_resume_from_state_gives_the_same_batches(root):
    weights = {"v2x4x4_a4": 2.0, "v4x8x8_a8": 1.0}
    it = buckets.make_bucket_loader(root, weights, batch_size=2, seed=0, read_threads=1, prefetch_batches=2)
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [_ids(next(it)) for _ in range(4)]
    fresh = buckets.make_bucket_loader(root, weights, batch_size=2, seed=0, read_threads=1, prefetch_batches=2)
    fresh.set_state(state)
    assert [_ids(next(fresh)) for _ in range(4)] == expected


def test_bad_curriculum_is_named(root):
    with pytest.raises(ValueError, match="not in the data root"):
        buckets.make_bucket_dataset(root, {"v9x9x9_a9": 1.0}, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="positive sum"):
        buckets.normalize_curriculum({"a": 0.0}, ["a"])
    with pytest.raises(ValueError, match="must increase"):
        buckets.normalize_curriculum([(10, {"a": 1}), (5, {"a": 1}), (None, {"a": 1})], ["a"])
    with pytest.raises(FileNotFoundError, match="no shard directory"):
        buckets.find_buckets(str(root) + "/v2x4x4_a4")
