"""Records and shards: bit-exact round trips, and one clear RecordError per kind of damage."""

import json
import os
import struct

import numpy as np
import pytest

from jav.data import record, shards
from jav.data.record import RecordError, decode_record, encode_record


def make_record(i=0, video_dtype=np.uint8, with_text=True, video_shape=(4, 8, 8, 3)):
    rng = np.random.default_rng(i)
    video = rng.integers(0, 256, video_shape).astype(np.uint8) if video_dtype == np.uint8 else rng.standard_normal(video_shape).astype(video_dtype)
    rec = {
        "video": video,
        "audio": rng.standard_normal((10, 6)).astype(np.float32),
        "caption": f"a red ball bouncing on a dark background {i}",
        "fps": 8.0,
        "sample_rate": 16000,
        "duration": 0.5,
        "metadata": {"seed": i, "discs": [{"colour": "red", "centres": [[1.5, 2.25]]}]},
    }
    if with_text:
        rec["text_emb"] = rng.standard_normal((5, 7)).astype(np.float32)
        rec["text_mask"] = np.arange(5) < 3
    return rec


def assert_same(rec, out):
    for k in ("video", "audio", "text_emb", "text_mask"):
        if rec.get(k) is None:
            assert out[k] is None
        else:
            assert out[k].dtype == rec[k].dtype and out[k].shape == rec[k].shape
            assert out[k].tobytes() == rec[k].tobytes()  # bit exact, NaN payloads included
    for k in ("caption", "fps", "sample_rate", "duration", "metadata"):
        assert out[k] == rec[k]
    assert out["version"] == record.FORMAT_VERSION


@pytest.mark.parametrize("video_dtype,with_text", [(np.uint8, True), (np.float32, False), (np.float16, True)])
def test_round_trip_is_bit_exact_and_deterministic(video_dtype, with_text):
    rec = make_record(3, video_dtype, with_text)
    data = encode_record(**rec)
    assert encode_record(**rec) == data
    assert_same(rec, decode_record(data, expect_video_shape=(4, 8, 8, 3), expect_audio_shape=(10, 6)))


def test_bfloat16_latents_round_trip():
    import ml_dtypes

    rec = make_record(1, np.float32, False)
    rec["video"] = rec["video"].astype(ml_dtypes.bfloat16)
    assert_same(rec, decode_record(encode_record(**rec)))


def test_wrong_version_names_source_and_fix():
    data = bytearray(encode_record(**make_record()))
    struct.pack_into("<I", data, 4, 2)
    with pytest.raises(RecordError, match=r"shard-7\.array_record\[3\]: record format version 2.*reads version 1.*rewrite"):
        decode_record(bytes(data), source="shard-7.array_record[3]")


@pytest.mark.parametrize("cut", [5, 40, -1])
def test_truncated_bytes(cut):
    data = encode_record(**make_record())
    with pytest.raises(RecordError, match=r"^f\.ar\[0\]: .*(truncated|corrupt).*rewrite"):
        decode_record(data[:cut], source="f.ar[0]")


def test_flipped_payload_bit_fails_checksum():
    data = bytearray(encode_record(**make_record()))
    data[-3] ^= 0x10
    with pytest.raises(RecordError, match=r"f\.ar\[9\]: .*CRC32.*corrupt"):
        decode_record(bytes(data), source="f.ar[9]")


def test_wrong_shape():
    data = encode_record(**make_record())
    with pytest.raises(RecordError, match=r"f\.ar\[2\]: video shape \(4, 8, 8, 3\), expected \(4, 16, 16, 3\)"):
        decode_record(data, expect_video_shape=(4, 16, 16, 3), source="f.ar[2]")
    with pytest.raises(RecordError, match=r"f\.ar\[2\]: audio shape \(10, 6\), expected \(10, 64\)"):
        decode_record(data, expect_audio_shape=(10, 64), source="f.ar[2]")


def test_encode_rejects_bad_inputs():
    rec = make_record()
    with pytest.raises(RecordError, match="metadata is not JSON-serialisable"):
        encode_record(**{**rec, "metadata": {"centres": np.zeros(2)}})
    with pytest.raises(RecordError, match="audio must be a 2-d array of dtype float32"):
        encode_record(**{**rec, "audio": rec["audio"].astype(np.float64)})
    with pytest.raises(RecordError, match="text_emb and text_mask together"):
        encode_record(**{**rec, "text_mask": None})


@pytest.fixture
def shard_dir(tmp_path):
    recs = [make_record(i) for i in range(7)]
    manifest = shards.write_shards(iter(recs), str(tmp_path), records_per_shard=3)
    return str(tmp_path), manifest, recs


def test_shards_and_manifest_round_trip(shard_dir):
    path, manifest, recs = shard_dir
    assert manifest == json.load(open(os.path.join(path, "manifest.json")))
    assert manifest["num_records"] == 7 and manifest["format_version"] == record.FORMAT_VERSION
    assert [s["num_records"] for s in manifest["shards"]] == [3, 3, 1]
    assert manifest["video_shape"] == [4, 8, 8, 3] and manifest["audio_shape"] == [10, 6]
    opened, source = shards.open_shards(path)
    assert opened == manifest and len(source) == 7
    for i, rec in enumerate(recs):
        assert_same(rec, decode_record(source[i]))
    assert source.locate(4) == os.path.join(path, "records-00001.array_record") + "[1]"


def test_missing_shard_is_named(shard_dir):
    path, manifest, _ = shard_dir
    os.remove(os.path.join(path, "records-00001.array_record"))
    with pytest.raises(RecordError, match=r"shard .*records-00001\.array_record is listed in the manifest but missing"):
        shards.open_shards(path)


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_corrupt_shard_is_named(shard_dir, damage):
    path, manifest, _ = shard_dir
    target = os.path.join(path, "records-00002.array_record")
    data = open(target, "rb").read()
    with open(target, "wb") as f:
        f.write(os.urandom(len(data)) if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(RecordError, match=r"shard .*records-00002\.array_record .*(corrupt|truncated)"):
        shards.open_shards(path)


def test_missing_manifest_and_mixed_shapes(tmp_path):
    with pytest.raises(RecordError, match=r"manifest\.json does not exist"):
        shards.open_shards(str(tmp_path))
    recs = [make_record(0), make_record(1, video_shape=(4, 16, 16, 3))]
    with pytest.raises(RecordError, match="record 1 .* own directory"):
        shards.write_shards(recs, str(tmp_path / "mixed"), records_per_shard=4)
