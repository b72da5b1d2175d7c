"""The overfit check on one batch of two bounce-world clips (configs/test.py).

A shortened run of `python -m benchmarks.overfit` (which reports the world's
metrics after a longer run): the loss must fall by at least 90%, and each
sample must reproduce its own caption's clip better than the other clip.

It runs the benchmark's command in a subprocess with XLA's default (optimised)
CPU code generation: the one test that runs hundreds of steps of one program,
where the suite's unoptimised setting (tests/conftest.py) would double its time.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from jav.data.bounce import generate_clip
from jav.media import read_mp4
from xla_flags import default_codegen

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_one_batch_is_memorised(tmp_path):
    flags = default_codegen(os.environ.get("XLA_FLAGS", ""))
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", JAX_DEFAULT_MATMUL_PRECISION="highest", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.overfit",
            "--config",
            "configs/test.py",
            "--train-steps",
            "160",
            "--warmup-steps",
            "10",
            "--num",
            "2",
            "--sample-steps",
            "16",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["steps"] == 160 and s["loss_drop"] >= 0.9, s["loss_curve"]
    assert (tmp_path / "000.mp4").stat().st_size > 0

    clips = [generate_clip(i) for i in range(2)]
    for i, clip in enumerate(clips):
        frames, _, _, _ = read_mp4(tmp_path / f"{i:03d}.mp4")
        err = [np.mean((frames.astype(float) - c.frames) ** 2) for c in clips]
        assert err[i] < 0.7 * err[1 - i], err  # conditioned on its caption, not a blend
