"""The same training losses on 1 device and on 8 simulated CPU devices, with
parameters placed by the logical-axis rules (fsdp=4 x tensor=2, and fsdp=8).

Runs tests/multidevice_losses.py in a subprocess, because the device count is
fixed when JAX starts.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_losses_match_across_meshes():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "multidevice_losses.py")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    base = np.asarray(runs["1 device"]["losses"])
    assert len(base) == 3 and np.isfinite(base).all()
    for name in ("fsdp=4 tensor=2", "fsdp=8"):
        np.testing.assert_allclose(runs[name]["losses"], base, rtol=1e-5, err_msg=name)
    # the parameters really were split: over both axes, and over fsdp alone
    assert any("tensor" in s and "fsdp" in s for s in runs["fsdp=4 tensor=2"]["specs"])
    assert any("fsdp" in s for s in runs["fsdp=8"]["specs"])
