"""Shape-bucketed batches: each step draws one shape bucket (frames x height x width, audio length)
and takes that bucket's next batch, so that every host of a run feeds the same shapes at the same step.

A data root holds one shard directory per bucket (`data_pipelines` writes OUTPUT/shards/<bucket>/).
The bucket of step s is drawn from the config weights by a hash of (seed, step): every host computes
the same draw without communicating. Within the bucket the batch is that bucket's n-th batch, n being
how often the bucket was drawn before step s, read from `jav.data.loader.make_dataset` (its global
shuffle and its per-host slice), so the hosts' rows are disjoint and together form the global batch.
Curriculum stages change the weights with the step (e.g. low resolution first):
[(until_step, {bucket: weight}), ..., (None, {...})].

The whole schedule is a random-access Grain MapDataset indexed by step, so the iterator's
get_state() / set_state() resume with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations


import sys
import threading
from typing import Sequence

import grain
import numpy as np
from etils import epath

from jav.data.loader import make_dataset
from jav.data.shards import MANIFEST

_CHUNK = 4096  # steps whose draws are computed together (vectorised) and cached as prefix counts
_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def uniform_draws(seed: int, steps: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) float per step from a splitmix64 hash of (seed, step): stateless and identical on every host."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed & (2**64 - 1)) * _GOLDEN + np.asarray(steps, np.uint64) * _M2 + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def find_buckets(root: str) -> list[str]:
    """Sorted names of the finished shard directories (with a manifest) directly under root; hidden
    ones (a packer's unfinished ".NAME.tmp") are skipped."""
    path = epath.Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"bucket root {root} does not exist; point it at a curation run's OUTPUT/shards")
    names = sorted(p.name for p in path.iterdir() if not p.name.startswith(".") and (p / MANIFEST).exists())
    if not names:
        raise FileNotFoundError(f"{root} holds no shard directory with a {MANIFEST}; point it at a curation run's OUTPUT/shards (python -m data_pipelines.run)")
    return names


def normalize_curriculum(curriculum, buckets: Sequence[str]) -> list[tuple[int | None, np.ndarray]]:
    """[(until_step, {bucket: weight})] -> [(until_step, probabilities over buckets)], checked.

    A stage applies to steps below its until_step; the last stage's until_step must be None (forever).
    Buckets a stage does not name get weight 0.
    """
    if isinstance(curriculum, dict):
        curriculum = [(None, curriculum)]
    if not curriculum:
        raise ValueError("bucket curriculum is empty; give [(None, {bucket: weight, ...})]")
    out, last = [], -1
    for i, (until, weights) in enumerate(curriculum):
        unknown = set(weights) - set(buckets)
        if unknown:
            raise ValueError(
                f"curriculum stage {i} weighs buckets {sorted(unknown)} that are not in the data root (found {list(buckets)}); fix the bucket names"
            )
        w = np.array([float(weights.get(b, 0.0)) for b in buckets])
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"curriculum stage {i} weights {dict(weights)} must be >= 0 with a positive sum")
        if (until is None) != (i == len(curriculum) - 1):
            raise ValueError(f"curriculum stage {i}: only the last stage has until_step=None (and it must); got until_step={until}")
        if until is not None:
            if int(until) <= last:
                raise ValueError(f"curriculum until_step values must increase; stage {i} has {until} after {last}")
            last = int(until)
        out.append((None if until is None else int(until), w / w.sum()))
    return out


class BucketSchedule(grain.MapDataset):
    """Step -> (bucket index, that bucket's batch index): the draws and their prefix counts."""

    def __init__(self, num_buckets: int, curriculum: list[tuple[int | None, np.ndarray]], seed: int):
        super().__init__()
        self.num_buckets, self.curriculum, self.seed = num_buckets, curriculum, seed
        self._ends = np.array([u for u, _ in curriculum[:-1]], np.int64)
        self._cums = [np.cumsum(p) for _, p in curriculum]
        self._prefix = [np.zeros(num_buckets, np.int64)]  # draws of each bucket before chunk k
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sys.maxsize

    def draws(self, steps: np.ndarray) -> np.ndarray:
        """The bucket index of each step."""
        steps = np.asarray(steps, np.int64)
        u = uniform_draws(self.seed, steps)
        stage = np.searchsorted(self._ends, steps, side="right")
        out = np.empty(len(steps), np.int64)
        for k, cum in enumerate(self._cums):
            sel = stage == k
            out[sel] = np.minimum(np.searchsorted(cum, u[sel], side="right"), self.num_buckets - 1)
        return out

    def _chunk_prefix(self, chunk: int) -> np.ndarray:
        with self._lock:
            while len(self._prefix) <= chunk:
                k = len(self._prefix) - 1
                drawn = self.draws(np.arange(k * _CHUNK, (k + 1) * _CHUNK))
                self._prefix.append(self._prefix[-1] + np.bincount(drawn, minlength=self.num_buckets))
            return self._prefix[chunk]

    def __getitem__(self, step):
        if isinstance(step, slice):
            return self.slice(step)
        chunk = step // _CHUNK
        drawn = self.draws(np.arange(chunk * _CHUNK, step + 1))
        bucket = int(drawn[-1])
        return bucket, int(self._chunk_prefix(chunk)[bucket] + np.count_nonzero(drawn[:-1] == bucket))


class _BucketBatches(grain.MapDataset):
    """Step -> the batch of the step's bucket."""

    def __init__(self, schedule: BucketSchedule, datasets: list[grain.MapDataset]):
        super().__init__(schedule)
        self.schedule, self.datasets = schedule, datasets

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, step):
        if isinstance(step, slice):
            return self.slice(step)
        bucket, index = self.schedule[step]
        return self.datasets[bucket][index]


def make_bucket_dataset(root: str, curriculum, *, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1, **dataset_kwargs):
    """(MapDataset of this host's batches by step, bucket names, schedule). Bucket i shuffles with seed + i;
    dataset_kwargs (tokenizer_vocab, tokenizer_len, text_input, text_dim) go to `make_dataset`."""
    names = find_buckets(root)
    schedule = BucketSchedule(len(names), normalize_curriculum(curriculum, names), seed)
    datasets = [
        make_dataset(
            str(epath.Path(root) / n), batch_size=batch_size, seed=seed + i, process_index=process_index, process_count=process_count, **dataset_kwargs
        )
        for i, n in enumerate(names)
    ]
    return _BucketBatches(schedule, datasets), names, schedule


def make_bucket_loader(
    root: str,
    curriculum,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    read_threads: int = 4,
    prefetch_batches: int = 8,
    **dataset_kwargs,
) -> grain.DatasetIterator:
    """An endless iterator of this host's batches, each from one bucket (the arrays that
    `jav.data.loader.make_loader` gives), with get_state() / set_state().

    curriculum: {bucket: weight} or [(until_step, {bucket: weight}), ..., (None, {...})].
    """
    ds, _, _ = make_bucket_dataset(
        root, curriculum, batch_size=batch_size, seed=seed, process_index=process_index, process_count=process_count, **dataset_kwargs
    )
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches)))
