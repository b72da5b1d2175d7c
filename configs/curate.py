"""Curation configs: raw audio-video files -> curated, encoded shards (data_pipelines).

    pip install -r requirements-beam.txt      # Apache Beam, an optional extra
    python -m data_pipelines.corpus --out runs/corpus --num 200 --seed 0
    python -m data_pipelines.run --config configs/curate.py:bounce --input runs/corpus --out runs/curated

On the 2-core CPU this writes runs/curated/shards/v16x32x32_a200/ (the demo's shape: 16 frames of
32x32 at 8 fps, 200 log-mel frames) and v8x32x32_a100/, manifest.jsonl, drops.jsonl, quarantine/
and report.md; a second run of the same command changes no file. Train the demo on it with
`python -m jav.train --config configs/bounce_demo.py --workdir runs/demo_curated
--config.data.dir=runs/curated/shards/v16x32x32_a200`. Throughput is in benchmarks/RESULTS.md.

Engines (same code; Beam pipeline options after the config flags):
    --runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2   (default)
    --runner DataflowRunner --project P --region R --temp_location gs://B/tmp \
        --requirements_file requirements-beam.txt --setup_file ./setup.py --out gs://B/curated
    --runner FlinkRunner --flink_master HOST:8081 --environment_type LOOPBACK
    --runner SparkRunner --spark_master_url spark://HOST:7077 --environment_type LOOPBACK
On a distributed runner --input / --out must be paths every worker sees: a bucket or a shared
file system. --out gs://B/curated: the encode store through tensorstore's gcs kvstore, the
shards, manifests and report through etils.epath; --input gs://B/raw (a folder, walked) or
gs://B/raw/*.mp4 (wildcards in the last part only): the stages read each object through
etils.epath as a file object (no local copy), and a re-run reuses a source's stage results
while its size and modification time are unchanged.

Args: "" (general footage: buckets at 24 fps up to 64x64) or "bounce" (the bounce-world corpus).
"""

import dataclasses

import ml_collections

from data_pipelines.stages import DEFAULT_STAGES
from jav.data import mel


def get_config(arg=None):
    arg = arg or ""
    if arg not in ("", "bounce"):
        raise ValueError(f"configs/curate.py: unknown arg {arg!r}; use configs/curate.py or configs/curate.py:bounce")
    cfg = ml_collections.ConfigDict()
    # Stage order and settings: the reference list of data_pipelines.stages, tuned on the bounce corpus
    # (one list, so the engine and the engine-free reference loop agree). Override one setting with
    # --config.stage_params.sync.max_offset=0.3, the order with --config.stages=probe,shots,...
    cfg.stages = ",".join(name for name, _ in DEFAULT_STAGES)
    cfg.stage_params = ml_collections.ConfigDict({name: dict(params) for name, params in DEFAULT_STAGES if params})
    cfg.dedup = ml_collections.ConfigDict({"enabled": True, "max_hamming": 3})
    cfg.encode = ml_collections.ConfigDict(
        {
            "fps": 24.0,
            "buckets": "96x64x64,48x64x64,24x64x64,48x32x32,24x32x32",  # FRAMESxHEIGHTxWIDTH at fps; longest that fits wins
            "mel": dataclasses.asdict(mel.MelParams()),
            # a latent codec (latent.json: two VAE runs and their statistics, python -m jav.data.latent_stats):
            # store normalised latents instead of pixels and log-mel, and pack the codec beside each bucket's
            # shards; bucket frames must be a length the video VAE takes (time stride 4: 1 + 4k, e.g. 17)
            "latent": "",
            "text_encoder": "",  # a text encoder spec (jav.frozen_text_encoder.load_text_encoder): store embeddings
        }
    )
    cfg.pack = ml_collections.ConfigDict({"records_per_shard": 256})
    # Beam's DirectRunner defaults; pipeline options on the command line win.
    cfg.engine = ml_collections.ConfigDict({"runner": "DirectRunner", "direct_running_mode": "multi_processing", "direct_num_workers": 2})
    if arg == "bounce":
        cfg.encode.fps = 8.0
        cfg.encode.buckets = "16x32x32,8x32x32"
        cfg.stage_params.cut.buckets = [1.0, 2.0]  # the encode buckets' durations
    return cfg
