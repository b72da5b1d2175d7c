"""Context-parallel attention (ring and Ulysses) equals full attention, values
and gradients, on 8 simulated CPU devices; and a whole AVDiT forward on a mesh
with context=4 equals the single-device forward.

The device count is fixed when JAX starts, so tests/context_parallel_check.py
runs every check in one subprocess and prints JSON; this file asserts.
"""

import json
import os
import pathlib
import subprocess
import sys

from xla_flags import with_devices

ROOT = pathlib.Path(__file__).resolve().parent.parent
CASES = ["fsdp=2 context=4 ring", "fsdp=2 context=4 ulysses", "context=8 ring", "context=8 ulysses"]
ATTENTIONS = ["video_self", "a2v", "v2a", "joint_video", "joint_audio"]


def test_context_parallel_attention_and_model_match_one_device():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), JAX_DEFAULT_MATMUL_PRECISION="highest", XLA_FLAGS=with_devices(8))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "context_parallel_check.py")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    att = out["attention"]
    # the per-query-modality split of joint attention is the old dense [N, N] mask
    assert att["plain_vs_dense_joint"] < 1e-6
    # a2v rows of a sample without audio, and joint audio rows of a sample with
    # cross_modal off and no audio, are zeros; nothing is NaN
    assert att["zero_rows"] == 0.0 and att["finite"]
    for case in CASES:
        for name in ATTENTIONS:
            assert att[case][name] < 1e-5, (case, name, att[case])
        for name, diff in att[case]["grads"].items():
            assert diff < 1e-5, (case, name, att[case]["grads"])
        # the context-parallel path really ran: its collectives are in the program
        expected = "collective_permute" if case.endswith("ring") else "all_to_all"
        assert expected in att[case]["collectives"], (case, att[case]["collectives"])
    for case, collective in (("cross_attn ring", "collective_permute"), ("joint_attn ulysses", "all_to_all")):
        model = out["model"][case]
        assert model["video"] < 1e-5 and model["audio"] < 1e-5, (case, model)  # relative to the outputs' size
        assert collective in model["collectives"], (case, model)
