"""The overfit check on one batch of two bounce-world clips (configs/test.py).

A shortened run of `python -m benchmarks.overfit` (which reports the world's
metrics after a longer run): the loss must fall by at least 90%, and each
sample must reproduce its own caption's clip better than the other clip.
"""
import numpy as np

from benchmarks.overfit import run
from jav.data.bounce import generate_clip


def test_one_batch_is_memorised(tmp_path):
    s = run("configs/test.py", steps=200, num_clips=2, out=str(tmp_path), sample_steps=16, log=lambda _: None)
    assert s["loss_drop"] >= 0.9, s["loss_curve"]
    assert (tmp_path / "000.mp4").stat().st_size > 0 and (tmp_path / "summary.json").exists()

    from jav.media import read_mp4

    clips = [generate_clip(i) for i in range(2)]
    for i, clip in enumerate(clips):
        frames, _, _, _ = read_mp4(tmp_path / f"{i:03d}.mp4")
        err = [np.mean((frames.astype(float) - c.frames) ** 2) for c in clips]
        assert err[i] < 0.7 * err[1 - i], err  # conditioned on its caption, not a blend
