"""Curation: raw audio-video files -> curated, captioned, encoded training shards.

`python -m data_pipelines.run --config configs/curate.py:bounce --input DIR --out OUT` runs the
Apache Beam pipeline (`data_pipelines.pipeline`): the stages of `data_pipelines.stages` in config
order, near-duplicate removal, encoding into a resumable tensorstore store (`store`, `encode`), and
packing into ArrayRecord shards per shape bucket (`pack`), with a manifest and a report (`report`).
Apache Beam is an optional extra: `pip install -r requirements-beam.txt`.
"""

import jav  # noqa: F401  (first: jav.platforms keeps JAX off libtpu on a host with no TPU chip, before a stage imports JAX)
