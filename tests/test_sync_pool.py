"""Pooling sample directories' scores (benchmarks/sync_pool.py) and the per-onset distances behind a clip's sync error."""

import json

import numpy as np
import pytest

from benchmarks import sync_pool
from jav.data import bounce, bounce_metrics
from jav.data.bounce import BounceParams
from jav.media import write_mp4, write_wav

PARAMS = BounceParams()


def test_onset_distances_are_what_the_sync_error_is_the_median_of():
    for seed in range(4):
        clip = bounce.render(bounce.sample_scene(seed))
        late = np.roll(clip.audio, int(0.05 * PARAMS.sample_rate))  # 50 ms late: distances far from 0
        for audio in (clip.audio, late):
            distances = bounce_metrics.onset_distances(clip.frames, audio, PARAMS)
            sync = bounce_metrics.clip_metrics(clip.frames, audio, clip.caption, PARAMS)["sync_error_ms"]
            assert len(distances) and np.isclose(1000 * np.median(distances), sync), (seed, distances, sync)


def test_pool_gives_the_mean_its_interval_and_the_median_over_clips():
    sync = [10.0, 20.0, 30.0, 400.0, float("nan")]
    records = [dict.fromkeys(sync_pool.METRICS, 1.0) | {"sync_error_ms": s} for s in sync]
    out = sync_pool.pool(records, resamples=2000)
    assert out["clips"] == 5 and out["sync_clips_without_value"] == 1
    assert out["sync_error_ms"] == pytest.approx(115.0) and out["sync_median_over_clips"] == pytest.approx(25.0)
    lo, hi = out["sync_mean_ci95"]
    assert 10.0 <= lo < 115.0 < hi <= 400.0


def test_command_pools_directories_and_their_onsets(tmp_path, capsys):
    dirs = []
    for d, seeds in (("a", (0, 1)), ("b", (2,))):
        out = tmp_path / d
        out.mkdir()
        for i, seed in enumerate(seeds):
            clip = bounce.render(bounce.sample_scene(seed))
            write_mp4(out / f"{i:03d}.mp4", clip.frames, PARAMS.fps, clip.audio, PARAMS.sample_rate)
            write_wav(out / f"{i:03d}.wav", clip.audio, PARAMS.sample_rate)
            metrics = bounce_metrics.clip_metrics(clip.frames, clip.audio, clip.caption, PARAMS)
            (out / f"{i:03d}.json").write_text(json.dumps({"task": "t2va", "metrics": metrics}))
        (out / "summary.json").write_text("{}")  # not a clip
        dirs.append(str(out))
    result = sync_pool.main(["--samples", ",".join(dirs), "--onsets", "--json", str(tmp_path / "pool.jsonl")])
    assert result["clips"] == 3 and result["colour_accuracy"] == 1.0
    assert result["onsets"] >= 3 and result["sync_median_over_onsets"] < 5.0 and result["onsets_within_half_frame"] > 0.9
    assert json.loads((tmp_path / "pool.jsonl").read_text())["clips"] == 3
    assert "3 clips" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sync_pool.main(["--samples", str(tmp_path / "missing")])


def test_paired_differences_match_clips_by_caption_and_noise_seed():
    def clip(caption_seed, seed, sync, f1):
        return {"caption_seed": caption_seed, "seed": seed, "metrics": {"sync_error_ms": sync, "event_f1": f1}}

    mine = [clip(1, 0, 50.0, 0.8), clip(2, 0, 70.0, 0.6), clip(3, 0, float("nan"), 0.5), clip(9, 0, 10.0, 1.0)]
    # listed in another order, one clip drawn with other noise: only (1, 0), (2, 0) and (3, 0) pair
    theirs = [clip(2, 0, 90.0, 0.5), clip(1, 0, 60.0, 0.7), clip(3, 0, 40.0, 0.4), clip(9, 1, 0.0, 0.0)]
    out = sync_pool.paired(mine, theirs, resamples=500)
    assert out["paired_clips"] == 3
    assert out["sync_error_ms_diff"] == pytest.approx(-15.0) and out["event_f1_diff"] == pytest.approx(0.1)
    lo, hi = out["sync_error_ms_diff_ci95"]
    assert -20.0 <= lo <= -15.0 <= hi <= -10.0
    with pytest.raises(ValueError, match="no clip of the same caption seed"):
        sync_pool.paired(mine, [clip(5, 0, 1.0, 1.0)])
