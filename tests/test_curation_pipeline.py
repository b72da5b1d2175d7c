"""The curation engine (data_pipelines.run / pipeline, DirectRunner in-process) on a tiny input:
end to end into shards the jav loader reads, nothing rewritten on a re-run, a corrupt file
quarantined without stopping the run, and a run killed while encoding resuming to byte-identical shards.

Most tests use trivial stages defined in this file, so the engine is tested on its own: inputs
are .npz archives named .mkv, each split in two clips ("probing" and "decoding" are np.load).
One runs the command line with the real stages on a 4-file corpus. Also: banded dedup against one
global call, area resizing and bucket choice, the store's integrity check, learned-encoder plumbing,
and the PNG encoder of the report.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import zlib

import numpy as np
import pytest

pytest.importorskip("apache_beam", reason="Apache Beam is an optional extra: pip install -r requirements-beam.txt")

from configs import curate  # noqa: E402
from data_pipelines import encode as encode_lib  # noqa: E402
from data_pipelines import run as run_lib  # noqa: E402
from data_pipelines.clip import Clip, Drop  # noqa: E402
from data_pipelines.pipeline import list_inputs  # noqa: E402
from jav.data.loader import make_dataset  # noqa: E402

FPS, SR = 8.0, 16000
BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def npz_split(clip, **_):
    """'Probe' a file and split it into two 2 s clips (no media yet), or drop it as corrupt."""
    try:
        with np.load(clip.source) as z:
            frames, height, width = z["video"].shape[:3]
    except Exception as e:
        return [Drop(clip.without_media(), "npz_split", "corrupt", f"{type(e).__name__}: {e}")]
    half = frames // 2
    return [
        Clip(
            source=clip.source,
            start=s / FPS,
            end=e / FPS,
            fps=FPS,
            sample_rate=SR,
            width=width,
            height=height,
            has_video=True,
            has_audio=True,
            caption=f"{os.path.basename(clip.source)} part {i}",
        )
        for i, (s, e) in enumerate([(0, half), (half, frames)])
    ]


def load(clip, **_):
    """'Decode' the clip's time range."""
    with np.load(clip.source) as z:
        s, e = round(clip.start * FPS), round(clip.end * FPS)
        video, audio = z["video"][s:e], z["audio"][round(clip.start * SR) : round(clip.end * SR)]
    return [dataclasses.replace(clip, video=video, audio=audio, scores={**clip.scores, "level": float(video.mean())})]


def drop_silent(clip, **_):
    if np.abs(clip.audio).max() < 1e-3:
        return [Drop(clip, "drop_silent", "silent_audio", "peak below 1e-3")]
    return [clip]


STAGES = {"npz_split": npz_split, "load": load, "drop_silent": drop_silent}


def _config():
    cfg = curate.get_config("bounce")
    cfg.stages = "npz_split,load,drop_silent"
    cfg.stage_params = {}
    cfg.dedup.enabled = False
    cfg.pack.records_per_shard = 2
    return cfg


def _run(inp, out):
    return run_lib.run(_config(), str(inp), str(out), BEAM_ARGS, STAGES)


def _digests(out) -> dict:
    shards = os.path.join(out, "shards")
    return {
        os.path.relpath(os.path.join(r, n), shards): hashlib.sha256(open(os.path.join(r, n), "rb").read()).hexdigest()
        for r, _, names in os.walk(shards)
        for n in names
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """4 files (3 with sound, 1 silent; 32 frames of 32x40..48x48 at 8 fps) and a corrupt one."""
    inp = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    for i in range(4):
        video = rng.integers(0, 255, (32, 32 + 8 * i, 48, 3), np.uint8)
        audio = (rng.standard_normal((64000, 1)) * (0.0 if i == 3 else 0.1)).astype(np.float32)
        with open(inp / f"f{i}.mkv", "wb") as f:
            np.savez(f, video=video, audio=audio)
    (inp / "broken.mkv").write_bytes(b"not a media file")
    return inp


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("curated")
    return out, _run(corpus, out)


def test_end_to_end_writes_shards_the_loader_reads(first_run):
    out, summary = first_run
    assert summary["kept"] == 6 and summary["kept_by_bucket"] == {"v16x32x32_a200": 6}
    assert summary["dropped_by_reason"] == {"corrupt": 1, "silent_audio": 2}
    manifest = [json.loads(line) for line in open(out / "manifest.jsonl")]
    assert [m["key"] for m in manifest] == sorted(m["key"] for m in manifest)
    assert {m["bucket"] for m in manifest} == {"v16x32x32_a200"} and all(m["caption"] for m in manifest)
    drops = [json.loads(line) for line in open(out / "drops.jsonl")]
    assert sorted(d["reason"] for d in drops) == ["corrupt", "silent_audio", "silent_audio"]
    ds = make_dataset(str(out / "shards" / "v16x32x32_a200"), batch_size=3, seed=0)
    batch = ds[0]
    assert batch["video"].shape == (3, 16, 32, 32, 3) and batch["audio"].shape == (3, 200, 64)
    assert np.isfinite(batch["audio"]).all() and batch["video"].min() >= -1 and batch["video"].max() <= 1
    assert (out / "report.md").read_text().count(".png") >= 2
    assert (out / "report" / "kept_duration_s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corrupt_file_is_quarantined_with_its_reason(first_run):
    out, _ = first_run
    (entry,) = os.listdir(out / "quarantine")
    body = json.loads((out / "quarantine" / entry).read_text())
    assert body["source"].endswith("broken.mkv") and body["reason"] == "corrupt" and body["detail"]


def test_rerun_writes_nothing_new(corpus, first_run):
    out, _ = first_run
    before = _digests(out)
    again = _run(corpus, out)
    assert again["changed"] == [] and again["kept"] == 6
    # every source came from the stage cache: no stage and no encoding ran
    assert again["step_metrics"]["cached"]["clips"] == 5
    assert "npz_split" not in again["step_metrics"] and "load" not in again["step_metrics"]
    assert _digests(out) == before


def test_curation_into_a_bucket_writes_the_local_runs_files(corpus, first_run, gcs_bucket):
    """--out gs://...: the encode store, shards, manifests, quarantine and report go to the bucket
    (tests/gcs_emulation.py), byte for byte what the local run wrote; a rerun changes nothing."""
    out, _ = first_run
    summary = _run(corpus, "gs://test-bucket/curated")
    remote = gcs_bucket / "test-bucket" / "curated"
    assert summary["kept"] == 6 and summary["kept_by_bucket"] == {"v16x32x32_a200": 6}
    assert _digests(remote) and _digests(remote) == _digests(out)
    for name in ("manifest.jsonl", "drops.jsonl", "report.json", "report.md", "report/kept_duration_s.png"):
        assert (remote / name).read_bytes() == (out / name).read_bytes(), name
    assert os.listdir(remote / "quarantine") == os.listdir(out / "quarantine")
    assert list((remote / "store" / "done").iterdir()) and (remote / "store" / "arrays").is_dir()  # the encode store
    assert _run(corpus, "gs://test-bucket/curated")["changed"] == []


def test_killed_encode_resumes_to_identical_shards(corpus, first_run, tmp_path, monkeypatch):
    out, _ = first_run
    real, calls = encode_lib.encode_clip, []

    def dies_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise RuntimeError("simulated kill during encoding")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(encode_lib, "encode_clip", dies_after_two)
    with pytest.raises(Exception, match="simulated kill"):
        _run(corpus, tmp_path)
    assert len(os.listdir(tmp_path / "store" / "done")) == 2 and not (tmp_path / "shards").exists()
    monkeypatch.setattr(encode_lib, "encode_clip", real)
    resumed = _run(corpus, tmp_path)
    assert resumed["kept"] == 6
    assert _digests(tmp_path) == _digests(out)
    # Lose three encoded clips: the next run takes every source's stage results from the cache, decodes
    # just those clips again with the "load" stage, and the shards stay byte-identical.
    done = tmp_path / "store" / "done"
    for name in sorted(os.listdir(done))[:3]:
        os.remove(done / name)
    again = _run(corpus, tmp_path)
    assert again["step_metrics"]["cached"]["clips"] == 5 and "npz_split" not in again["step_metrics"]
    assert len(os.listdir(done)) == 6 and again["changed"] == []
    assert _digests(tmp_path) == _digests(out)


def test_banded_dedup_equals_one_global_near_duplicates_call():
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from data_pipelines import pipeline
    from data_pipelines.stages.dedup import clip_quality, near_duplicates

    rng = np.random.default_rng(1)
    base = [int(rng.integers(0, 2**63)) for _ in range(6)]
    clips = []
    for i in range(40):  # clusters around 6 hashes, 0-4 bits flipped: chains and near misses
        h = base[i % 6]
        for bit in rng.choice(64, int(rng.integers(0, 5)), replace=False):
            h ^= 1 << int(bit)
        clips.append(Clip(source=f"s{i}", start=0.0, end=1.0, width=32 + i % 3, height=32, scores={"phash": f"{h:016x}"}))
    cfg = _config()
    cfg.dedup.max_hamming = 3
    expected = near_duplicates([(c.key, c.scores["phash"], clip_quality(c)) for c in clips], 3)
    assert 0 < len(expected) < len(clips)
    with beam.Pipeline(options=run_lib.beam_options(cfg, BEAM_ARGS)) as p:
        kept, drops = pipeline._dedup(p | beam.Create(clips), cfg)
        assert_that(kept | beam.Map(lambda c: c.key), equal_to([c.key for c in clips if c.key not in expected]), label="kept")
        assert_that(drops | beam.Map(lambda d: (d["key"], d["reason"])), equal_to([(k, "near_duplicate") for k in expected]), label="dropped")


def test_resize_crop_is_an_area_average_and_buckets_are_chosen_by_fit():
    rng = np.random.default_rng(2)
    video = rng.integers(0, 255, (3, 64, 96, 3), np.uint8)
    # 64x96 -> 32x32: halve, then keep the centre 32 of 48 columns; each pixel is a 2x2 block mean
    block = video.reshape(3, 32, 2, 48, 2, 3).astype(np.float64).mean(axis=(2, 4))[:, :, 8:40]
    assert np.abs(encode_lib.resize_crop(video, 32, 32).astype(np.float64) - block).max() <= 0.5
    cfg = _config()
    cfg.encode.buckets = "16x32x32,8x32x32,8x64x64"
    buckets = encode_lib.parse_buckets(cfg)
    clip = Clip(source="x", start=0.0, end=1.5, video=np.zeros((12, 48, 48, 3), np.uint8))
    assert encode_lib.choose_bucket(clip, buckets).name == "v8x32x32_a100"  # 16 frames do not fit; no upscaling
    clip.end = 2.0
    assert encode_lib.choose_bucket(clip, buckets).name == "v16x32x32_a200"
    clip.end = 0.5
    assert encode_lib.choose_bucket(clip, buckets) is None
    cfg.encode.buckets = "16x32"
    with pytest.raises(ValueError, match="FRAMESxHEIGHTxWIDTH"):
        encode_lib.parse_buckets(cfg)


def test_store_refuses_an_array_that_no_longer_matches_its_marker(tmp_path):
    from data_pipelines.store import EncodeStore

    store = EncodeStore(str(tmp_path))
    video = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    store.put("k", {"video": video, "audio": np.ones((4, 8), np.float32)}, {"caption": "c"}, "fp1")
    arrays, marker = store.get("k")
    assert (arrays["video"] == video).all() and marker["caption"] == "c"
    assert store.is_done("k", "fp1") and not store.is_done("k", "fp2")  # other encode settings: encode again
    store.put("k2", {"video": video[:1], "audio": np.ones((4, 8), np.float32)}, {}, "fp1")
    os.remove(tmp_path / "done" / "k2.json")  # arrays written, then killed before the marker
    assert store.done_keys() == ["k"] and store.marker("k2") is None
    shutil.rmtree(tmp_path / "arrays" / "k" / "video")
    shutil.copytree(tmp_path / "arrays" / "k2" / "video", tmp_path / "arrays" / "k" / "video")
    with pytest.raises(ValueError, match="does not match its done-marker"):
        store.get("k")


def test_png_encoder_writes_the_pixels():
    from data_pipelines.report import histogram_image, png_bytes

    image = histogram_image(np.array([0, 3, 1]))
    data = png_bytes(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    rows = np.frombuffer(zlib.decompress(data[idat + 4 : idat + 4 + length]), np.uint8)
    rows = rows.reshape(image.shape[0], 1 + image.shape[1] * 3)
    assert (rows[:, 0] == 0).all() and (rows[:, 1:].reshape(image.shape) == image).all()


def test_learned_encoders_replace_pixels_mel_and_add_text_embeddings():
    from jav.data.record import decode_record, encode_record

    class HalveCodec:  # stands in for a latent codec: normalised latents of half the size in time
        video_dir, audio_dir = "vae/video", "vae/audio"

        def encode(self, video, logmel):
            return video[:, ::2] * 0.5, logmel[:, ::2] * 0.5

    class Text:
        def encode(self, texts):
            return np.ones((len(texts), 3, 4), np.float32), np.array([[True, True, False]] * len(texts))

    cfg = _config()
    cfg.encode.latent, cfg.encode.text_encoder = "codec/latent.json", "builtin:x"
    encoders = encode_lib.Encoders(cfg)
    encoders._loaded = {"latent": HalveCodec(), "text": Text()}
    rng = np.random.default_rng(3)
    clip = Clip(
        source="x",
        start=0.0,
        end=2.0,
        fps=FPS,
        sample_rate=SR,
        caption="a red disc",
        video=rng.integers(0, 255, (16, 32, 32, 3), np.uint8),
        audio=rng.standard_normal((32000, 1)) * 0.1,
    )
    arrays, fields = encode_lib.encode_clip(clip, encode_lib.parse_buckets(cfg)[0], cfg, encoders)
    assert arrays["video"].shape == (8, 32, 32, 3) and arrays["video"].dtype == np.float32
    assert arrays["audio"].shape == (100, 64) and arrays["text_emb"].shape == (3, 4)
    assert fields["metadata"]["video_repr"] == {"kind": "video_vae_latent", "run": "vae/video"}
    assert fields["metadata"]["audio_repr"]["of"]["kind"] == "logmel"
    rec = decode_record(encode_record(**arrays, **{k: v for k, v in fields.items() if k != "bucket"}))
    assert rec["text_mask"].tolist() == [True, True, False] and rec["caption"] == "a red disc"
    with pytest.raises(FileNotFoundError, match="jav.data.latent_stats"):
        encode_lib.fingerprint(cfg)  # the codec file counts by its contents: a missing one is named


def _curate_command(inp, out) -> dict:
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "curate.py")
    argv = ["data_pipelines.run", "--config", f"{config}:bounce", "--input", str(inp), "--out", str(out), "--config.pack.records_per_shard=4"]
    return run_lib.main(argv + ["--runner", "DirectRunner", *BEAM_ARGS])


def _clip_digests(out, summary) -> list[tuple[str, str]]:
    """Sorted (video, audio) digests of every kept clip, read back through the loader."""
    rows = []
    for bucket, n in summary["kept_by_bucket"].items():
        batch = make_dataset(str(out / "shards" / bucket), batch_size=n, seed=0)[0]
        rows += [(hashlib.sha256(v.tobytes()).hexdigest(), hashlib.sha256(a.tobytes()).hexdigest()) for v, a in zip(batch["video"], batch["audio"])]
    return sorted(rows)


def test_command_line_with_the_real_stages_on_a_tiny_corpus(tmp_path, gcs_bucket):
    """The real stages on 4 files, local; then the same files in a bucket (--input gs://...,
    read through epath without a copy) give the same clips, drops and shards."""
    from data_pipelines.corpus import write_corpus

    write_corpus(tmp_path / "raw", kinds=["clean", "zero_byte", "silent", "duplicate"], seed=5)
    out = tmp_path / "out"
    summary = _curate_command(tmp_path / "raw", out)
    reasons = summary["dropped_by_reason"]
    assert reasons.get("corrupt") == 1 and reasons.get("silent_audio", 0) >= 1 and reasons.get("near_duplicate", 0) >= 1
    (quarantined,) = os.listdir(out / "quarantine")
    assert quarantined.startswith("clip_0001.mkv")  # the zero-byte file
    kept = [json.loads(line) for line in open(out / "manifest.jsonl")]
    assert kept and {os.path.basename(e["source"]) for e in kept} <= {"clip_0000.mkv", "clip_0003.mkv"}
    for bucket, n in summary["kept_by_bucket"].items():
        batch = make_dataset(str(out / "shards" / bucket), batch_size=n, seed=0)[0]
        assert batch["video"].shape[0] == n and np.isfinite(batch["audio"]).all()

    shutil.copytree(tmp_path / "raw", gcs_bucket / "media" / "raw")
    remote = _curate_command("gs://media/raw", tmp_path / "from_bucket")
    assert remote["dropped_by_reason"] == reasons and remote["kept_by_bucket"] == summary["kept_by_bucket"]
    assert _clip_digests(tmp_path / "from_bucket", remote) == _clip_digests(out, summary)
    kept = [json.loads(line) for line in open(tmp_path / "from_bucket" / "manifest.jsonl")]
    assert kept and all(e["source"].startswith("gs://media/raw/") for e in kept)
    assert list_inputs("gs://media/raw/clip_000[03].mkv") == ["gs://media/raw/clip_0000.mkv", "gs://media/raw/clip_0003.mkv"]
    with pytest.raises(ValueError, match="wildcards only in the last part"):
        list_inputs("gs://media/*/clip_0000.mkv")
