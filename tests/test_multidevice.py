"""A checkpoint written on one device resumes on 8 simulated CPU devices (fsdp=4 x
tensor=2) to the losses of the run that never moved, through the trainer.

The reference is the session fixture `mesh_reference` (tests/mesh_case.py, 4 steps
on one device); tests/multidevice_train.py runs in a subprocess with 8 devices (the
count is fixed when JAX starts) and resumes its step-2 checkpoint. fsdp=8 over two
processes is tests/test_multihost.py.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mesh_case import losses
from xla_flags import with_devices

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.xdist_group("mesh_reference")
def test_a_one_device_checkpoint_resumes_on_fsdp_and_tensor_with_the_same_losses(mesh_reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(mesh_reference["run"], run)
    shutil.rmtree(run / "checkpoints" / "4")  # resume from step 2
    metrics = run / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= 2))

    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), JAX_DEFAULT_MATMUL_PRECISION="highest", XLA_FLAGS=with_devices(8))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "multidevice_train.py"), str(run), mesh_reference["data"]],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any("resumed" in m and "step 2" in m for m in out["messages"]), out["messages"]
    assert any("8 cpu device(s)" in m and "'fsdp': 4" in m and "'tensor': 2" in m for m in out["messages"]), out["messages"]
    base, moved = mesh_reference["losses"], losses(run)
    assert sorted(base) == sorted(moved) == [1, 2, 3, 4] and np.isfinite(list(base.values())).all()
    # steps 3-4 ran on fsdp=4 x tensor=2 from the one-device checkpoint of step 2
    np.testing.assert_allclose([moved[s] for s in (3, 4)], [base[s] for s in (3, 4)], rtol=1e-5)
    assert moved[3] != base[2]
    # the parameters really were split: over both axes, and over fsdp alone
    assert any("tensor" in s and "fsdp" in s for s in out["specs"]["fsdp=4 tensor=2"])
    assert any("fsdp" in s for s in out["specs"]["fsdp=8"])
