"""The same training losses on 1 device and on 8 simulated CPU devices, and a
checkpoint from one mesh resumed on another, all through the trainer.

The reference runs here on one device; tests/multidevice_train.py runs in a
subprocess with 8 devices (the count is fixed when JAX starts): 2 steps on
fsdp=8, then resumed from that checkpoint on fsdp=4 x tensor=2 for 2 more.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from configs import test as test_config
from jav.data import bounce, shards, synthetic

ROOT = pathlib.Path(__file__).resolve().parent.parent
DURATION = 1.0  # 8 frames: compile time is what this test pays for
ONE_DEVICE = dict(fsdp=1, tensor=1)
FSDP8 = dict(fsdp=8, tensor=1)
FSDP4_TENSOR2 = dict(fsdp=4, tensor=2)


def write_data(out) -> str:
    world = bounce.BounceParams(duration=DURATION)
    shards.write_shards((synthetic.clip_record(seed, world) for seed in range(16)), str(out), 8)
    return str(out)


def config(data_dir, steps, shape):
    cfg = test_config.get_config()
    cfg.model.video.width, cfg.model.audio.width, cfg.model.text.dim, cfg.model.text.width = 32, 16, 16, 16
    cfg.data.duration, cfg.data.dir = DURATION, str(data_dir)
    cfg.train.batch_size, cfg.train.steps, cfg.train.log_every, cfg.train.checkpoint_every = 8, steps, 1, 2
    cfg.mesh.shape.update(shape)
    return cfg


def losses(workdir) -> dict:
    return {r["step"]: r["loss"] for r in map(json.loads, (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines())}


def test_losses_match_across_meshes_and_a_checkpoint_moves_between_them(tmp_path):
    from jav.train.diffusion import train

    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), JAX_DEFAULT_MATMUL_PRECISION="highest",
               XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "multidevice_train.py"), str(tmp_path / "multi")], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    train(config(write_data(tmp_path / "data"), 4, ONE_DEVICE), str(tmp_path / "one"), log=lambda _: None)  # meanwhile
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert any("resumed" in m and "step 2" in m for m in out["messages"]), out["messages"]
    base, multi = losses(tmp_path / "one"), {int(k): v for k, v in out["losses"].items()}
    assert sorted(base) == sorted(multi) == [1, 2, 3, 4] and np.isfinite(list(base.values())).all()
    # steps 1-2 ran on fsdp=8, steps 3-4 on fsdp=4 x tensor=2 from the fsdp=8 checkpoint
    np.testing.assert_allclose([multi[s] for s in range(1, 5)], [base[s] for s in range(1, 5)], rtol=1e-5)
    # the parameters really were split: over both axes, and over fsdp alone
    assert any("tensor" in s and "fsdp" in s for s in out["specs"]["fsdp=4 tensor=2"])
    assert any("fsdp" in s for s in out["specs"]["fsdp=8"])
