"""Per-device parameter and optimizer-state memory falls as 1/N with fsdp = N,
read from the compiler's memory analysis of the train step on 8 simulated CPU
devices (tests/memory_scaling_check.py, in a subprocess: the device count is
fixed when JAX starts). Compile only, no steps."""

import json
import os
import pathlib
import subprocess
import sys

from xla_flags import with_devices

ROOT = pathlib.Path(__file__).resolve().parent.parent
# backend optimisation and the fusion emitters change no buffer sizes here, and
# halve the compile time
FLAGS = with_devices(8)


def test_parameter_and_optimizer_memory_falls_as_one_over_fsdp():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), XLA_FLAGS=FLAGS)
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "memory_scaling_check.py")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {int(n): r for n, r in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    # what the compiler holds per device beyond the batch (the same clip per device at every N) and the key
    state = {n: r["argument_bytes"] - r["inputs"]["batch"] for n, r in runs.items()}
    for n, r in runs.items():
        expected = r["inputs"]["params"] + r["inputs"]["opt_state"]
        assert expected <= state[n] <= expected + 64, (n, state[n], expected)  # + the PRNG key
    # state(N) = sharded / N + replicated: fsdp = 1 and 2 give both parts, fsdp = 8 must follow
    assert sorted(runs) == [1, 2, 8]
    sharded = 2 * (state[1] - state[2])
    replicated = state[1] - sharded
    assert 0 <= replicated < 0.03 * state[1], (replicated, state[1])  # norm scales and Adam's step counters
    assert abs(state[8] - (sharded / 8 + replicated)) <= 64, state
    # the parameters really are updated in place: donated state comes back as the outputs
    assert all(r["alias_bytes"] >= state[n] - 64 for n, r in runs.items())
