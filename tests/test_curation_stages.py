"""Curation stages (data_pipelines.stages) on a tiny planted-fault corpus: probe drops, cut
detection, cutting into buckets, sync offsets, silence and frozen video, dedup, captions, and
no stage raising on a corrupt file."""

import dataclasses

import numpy as np
import pytest

from data_pipelines import corpus, media
from data_pipelines.clip import Clip, Drop
from data_pipelines.stages import STAGES, apply, get_stage
from data_pipelines.stages.captions import captions, parse_sidecar
from data_pipelines.stages.cut import cut
from data_pipelines.stages.dedup import hamming, near_duplicates, phash
from data_pipelines.stages.filters import filter_frozen, filter_loudness, filter_silence, loudness_lufs
from data_pipelines.stages.load import load
from data_pipelines.stages.probe import probe
from data_pipelines.stages.shots import detect_cuts, shots
from data_pipelines.stages.sync import sync
from jav.data import bounce

KINDS = ["clean", "duplicate", "zero_byte", "truncated", "no_video", "single_frame", "offset_plus", "offset_minus"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    info = corpus.write_corpus(root, seed=5, kinds=KINDS)
    garbage = root / "garbage.mkv"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    by_kind = {f["fault"]: (str(root / name), f) for name, f in info["files"].items()}
    by_kind["garbage"] = (str(garbage), None)
    return by_kind


def _only(outputs):
    assert len(outputs) == 1
    return outputs[0]


def _longest_shot(path):
    shot_clips = shots(_only(probe(Clip(source=path))))
    return max(shot_clips, key=lambda c: c.duration)


@pytest.mark.parametrize(
    "kind,reason",
    [("zero_byte", "corrupt"), ("truncated", "corrupt"), ("garbage", "corrupt"), ("no_video", "no_video_track"), ("single_frame", "single_frame")],
)
def test_probe_drops_unusable_files(files, kind, reason):
    out = _only(probe(Clip(source=files[kind][0])))
    assert isinstance(out, Drop) and out.reason == reason and out.stage == "probe", out


def test_probe_reads_the_format(files):
    path, f = files["clean"]
    c = _only(probe(Clip(source=path)))
    assert (c.fps, c.width, c.sample_rate, c.audio_channels) == (f["fps"], f["canvas"], f["sample_rate"], f["channels"])
    assert c.num_frames == round(f["duration"] * f["fps"]) and abs(c.source_duration - f["duration"]) < 1.5 / f["fps"]
    small = media.read_video(path, 0.0, 1.0, f["fps"], max_side=16)
    assert small.shape == (f["fps"], 16, 16, 3)


def test_no_stage_raises_on_a_corrupt_file(files):
    bad = Clip(
        source=files["garbage"][0],
        start=0.0,
        end=1.0,
        fps=8.0,
        width=32,
        height=32,
        num_frames=8,
        sample_rate=16000,
        audio_channels=1,
        has_video=True,
        has_audio=True,
        source_duration=1.0,
    )
    for name, fn in STAGES.items():
        outs = fn(bad)
        assert outs and all(isinstance(o, (Clip, Drop)) for o in outs), name
        if name in ("load", "shots", "filter_frozen", "filter_motion", "filter_silence", "sync", "phash"):
            assert isinstance(outs[0], Drop) and outs[0].reason == "corrupt", name
    with pytest.raises(KeyError, match="unknown curation stage 'nope'"):
        get_stage("nope")


def test_detect_cuts_on_joined_scenes():
    params = bounce.BounceParams(fps=12, duration=1.0)
    seeds = [s for s in range(40) if bounce.sample_scene(s).background != bounce.sample_scene(s + 1).background][:1]
    a, b = bounce.generate_clip(seeds[0], params).frames, bounce.generate_clip(seeds[0] + 1, params).frames
    frames = np.concatenate([a[:7], b[:5], a[:9]])
    assert detect_cuts(frames) == [7, 12]
    assert detect_cuts(a) == []


def test_shots_find_the_planted_cuts_and_split(files):
    path, f = files["clean"]
    clips = shots(_only(probe(Clip(source=path))))
    found = clips[0].scores["source_cuts"]
    assert len(found) == len(f["cuts"]) and np.allclose(found, f["cuts"], atol=1.0 / f["fps"] + 1e-9)
    assert [c.scores["shot_index"] for c in clips] == list(range(len(f["shots"])))
    assert clips[0].start == 0.0 and all(x.end == y.start for x, y in zip(clips[:-1], clips[1:]))


def test_cut_into_frame_exact_buckets():
    shot = Clip(source="x.mkv", start=1.0, end=1.0 + 43 / 12, fps=12.0)
    parts = cut(shot, buckets=[1, 2])
    assert [(round(p.start * 12), p.num_frames, p.scores["duration_bucket"]) for p in parts] == [(12, 24, 2.0), (36, 12, 1.0)]
    short = _only(cut(dataclasses.replace(shot, end=1.5), buckets=[1, 2]))
    assert isinstance(short, Drop) and short.reason == "too_short"


def test_cut_slices_loaded_media_like_a_fresh_decode(files):
    path, _ = files["clean"]
    shot = _only(load(_longest_shot(path)))
    for part in cut(shot, buckets=[1.0]):
        fresh = _only(load(dataclasses.replace(part, video=None, audio=None)))
        np.testing.assert_array_equal(part.video, fresh.video)
        np.testing.assert_allclose(part.audio, fresh.audio, atol=1e-6)


@pytest.mark.parametrize("kind", ["offset_plus", "offset_minus", "clean"])
def test_sync_estimates_the_planted_offset(files, kind):
    path, f = files[kind]
    shot = _longest_shot(path)
    scored = _only(sync(shot, mode="score"))
    assert scored.scores["av_offset"] is not None, scored.scores
    assert abs(scored.scores["av_offset"] - f["offset"]) < 0.06, scored.scores
    verdict = _only(sync(shot))
    assert isinstance(verdict, Drop) == (kind != "clean")
    if kind != "clean":
        assert verdict.reason == "av_offset"
        realigned = _only(sync(shot, mode="realign"))
        assert abs(realigned.audio_offset + f["offset"]) < 0.06
        assert abs(_only(sync(realigned, mode="score")).scores["av_offset"]) < 0.06


def test_silence_and_frozen_filters():
    clip = bounce.generate_clip(2, bounce.BounceParams(fps=8, duration=2.0))
    base = Clip(source="x.mkv", fps=8.0, has_video=True, has_audio=True, sample_rate=16000, video=clip.frames, audio=clip.audio[:, None])
    loud = _only(filter_silence(base))
    assert isinstance(loud, Clip) and -40 < loud.scores["rms_dbfs"] < -10
    quiet = _only(filter_silence(dataclasses.replace(base, audio=np.zeros_like(base.audio))))
    assert isinstance(quiet, Drop) and quiet.reason == "silent_audio" and quiet.clip.scores["rms_dbfs"] <= -100
    moving = _only(filter_frozen(base))
    assert isinstance(moving, Clip) and moving.scores["frozen_fraction"] == 0.0
    still = _only(filter_frozen(dataclasses.replace(base, video=np.repeat(clip.frames[:1], 16, axis=0))))
    assert isinstance(still, Drop) and still.reason == "frozen_video"


def test_loudness_scores_a_reference_sine():
    """BS.1770: a full-scale 997 Hz sine reads -3.01 LUFS; -20 dB of gain reads 20 LU lower."""
    for rate, tolerance in ((48000, 0.02), (16000, 0.06)):
        sine = np.sin(2 * np.pi * 997 * np.arange(rate) / rate)[:, None].astype(np.float32)
        assert abs(loudness_lufs(sine, rate) + 3.01) < tolerance
        assert abs(loudness_lufs(0.1 * sine, rate) + 23.01) < tolerance
    sine = np.sin(2 * np.pi * 997 * np.arange(48000) / 48000)[:, None].astype(np.float32)
    base = Clip(source="x.mkv", has_audio=True, sample_rate=48000, video=np.zeros((2, 4, 4, 3), np.uint8))
    clipped = _only(filter_loudness(dataclasses.replace(base, audio=np.clip(2 * sine, -1, 1))))
    assert isinstance(clipped, Drop) and clipped.reason == "clipping" and clipped.clip.scores["clip_fraction"] > 0.1
    kept = _only(filter_loudness(dataclasses.replace(base, audio=0.1 * sine)))
    assert isinstance(kept, Clip) and abs(kept.scores["loudness_lufs"] + 23.01) < 0.06


def test_dedup_finds_the_reencoded_duplicate(files):
    dup_path, _ = files["duplicate"]
    orig_path, f = files["clean"]
    assert files["duplicate"][1]["duplicate_of"].endswith(orig_path.rsplit("/", 1)[1])
    clip = _longest_shot(orig_path)
    h_orig = _only(phash(clip)).scores["phash"]
    h_dup = _only(phash(dataclasses.replace(clip, source=dup_path))).scores["phash"]
    h_other = _only(phash(_longest_shot(files["offset_plus"][0]))).scores["phash"]
    assert hamming(h_orig, h_dup) <= 4 < hamming(h_orig, h_other)
    entries = [("orig", h_orig, 2.0), ("dup", h_dup, 1.0), ("other", h_other, 1.0)]
    assert near_duplicates(entries) == {"dup"} == near_duplicates(entries[::-1])


def test_captions_from_the_sidecar(files):
    path, f = files["clean"]
    clips, drops = apply(Clip(source=path), [("probe", {}), ("shots", {}), ("captions", {})])
    assert not drops and [c.caption for c in clips] == [s["caption"] for s in f["shots"]]
    assert parse_sidecar("just one caption\n") == [(None, None, "just one caption")]
    with pytest.raises(KeyError, match="unknown caption sources"):
        captions(clips[0], sources=["vlm"])
