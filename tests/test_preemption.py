"""A run stopped by SIGTERM (preemption) and then killed by SIGKILL, each time
restarted on the same workdir, ends with the losses of an uninterrupted run.

The interrupted runs are `python -m jav.train` subprocesses; the signals land
wherever the run happens to be (between steps, during an async save).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from configs import test as test_config
from jav.train.checkpoint import Checkpointer
from jav.train.diffusion import train

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 16


def logged_losses(workdir: pathlib.Path) -> dict:
    """step -> loss; a step rerun after a crash keeps its last value."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line cut by SIGKILL
            continue
        out[r["step"]] = r["loss"]
    return out


def overrides(shards):
    return [f"--config.data.dir={shards}", f"--config.train.steps={STEPS}", "--config.train.log_every=1", "--config.train.checkpoint_every=4"]


def start(workdir, shards):
    cmd = [sys.executable, "-m", "jav.train", "--config", str(ROOT / "configs" / "test.py"), "--workdir", str(workdir)] + overrides(shards)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), JAX_DEFAULT_MATMUL_PRECISION="highest")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_step(proc, workdir, step, timeout=300):
    deadline = time.time() + timeout
    while max(logged_losses(workdir), default=0) < step:
        if proc.poll() is not None:
            pytest.fail(f"run exited with {proc.returncode} before step {step}:\n{proc.stdout.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no step {step} within {timeout}s")
        time.sleep(0.02)


def test_sigterm_saves_and_sigkill_resumes_with_the_same_losses(shards, tmp_path):
    workdir = tmp_path / "interrupted"
    # 1. SIGTERM mid-run: the run saves the step it is at and exits 0.
    proc = start(workdir, shards)
    wait_for_step(proc, workdir, 4)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output[-3000:]
    assert "SIGTERM: saved step" in output, output[-3000:]
    stopped = int(output.split("SIGTERM: saved step ")[1].split()[0])
    assert 4 <= stopped < STEPS - 6
    with Checkpointer(workdir) as ckpt:
        assert ckpt.latest_step() == stopped  # saved on the signal, whether or not on the every-4 interval

    # 2. Restart, then SIGKILL: no chance to save; the steps since the last checkpoint are lost.
    proc = start(workdir, shards)
    wait_for_step(proc, workdir, stopped + 5)
    proc.kill()
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL
    assert f"resumed from {workdir} at step {stopped}" in output
    killed_at = max(logged_losses(workdir))
    assert killed_at < STEPS, "the run finished before it was killed"

    # 3. Restart and finish (in this process: the same compiled step as the subprocesses).
    cfg = test_config.get_config()
    cfg.data.dir, cfg.train.steps, cfg.train.log_every, cfg.train.checkpoint_every = shards, STEPS, 1, 4
    messages = []
    train(cfg, str(workdir), log=messages.append)
    resumed = int(next(m for m in messages if m.startswith("resumed")).split(" at step ")[1])
    # from the last checkpoint the killed run finished writing (a save cut short by the kill is discarded)
    assert stopped <= resumed <= killed_at

    # The uninterrupted run.
    straight = tmp_path / "straight"
    train(cfg, str(straight), log=lambda _: None)
    a, b = logged_losses(straight), logged_losses(workdir)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6), (step, a[step], b[step])
