"""Trains tests/mesh_case.py's model on fsdp=8 for STEPS steps as one of several
processes started by launch/local_multiprocess.sh (joined through jav.distributed),
then, in every process, reads the last checkpoint back onto the mesh. Run by
tests/test_multihost.py.

    python tests/multihost_train.py WORKDIR DATA_DIR

Writes WORKDIR/process_<i>.json: the process index and count, the lines it
logged, the data shard its loader was made with, the clip seeds of every batch
it loaded and the loader's final state, the sum of each restored parameter
shard it holds (with the shard's index), and the step at which all stopped
after the last one sent itself SIGTERM.
"""

import json
import os
import pathlib
import signal
import sys
import time

from jav import distributed

joined = distributed.initialize()  # before anything below touches a device

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from jav.train import loop  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from mesh_case import FSDP8, STEPS, config, restore_on_mesh, shard_sums, train_recording  # noqa: E402


def stop_step_after_sigterm(first_step: int) -> int:
    """Steps on from `first_step` until the loop's preemption check says stop;
    the last process sends itself SIGTERM at its third step."""
    preempt = loop.Preemption()
    try:
        for step in range(first_step, first_step + 600):
            if step == first_step + 2 and jax.process_index() == jax.process_count() - 1:
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            if preempt.stop_at(step):
                return step
        raise TimeoutError("no process stopped within 600 steps of the SIGTERM")
    finally:
        preempt.restore()


if __name__ == "__main__":
    workdir, data_dir = pathlib.Path(sys.argv[1]), sys.argv[2]
    messages = [joined]
    cfg = config(data_dir, STEPS, FSDP8, checkpoint_every=STEPS)  # one save, at the end: the one read back below
    loader = train_recording(cfg, workdir / "run", log=messages.append)
    out = dict(
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        messages=messages,
        shard=loader.shard,
        batches=loader.batches,
        loader_state=loader.get_state(),
        restored=shard_sums(restore_on_mesh(cfg, workdir / "run")),
        stopped_at=stop_step_after_sigterm(STEPS + 1),
    )
    (workdir / f"process_{jax.process_index()}.json").write_text(json.dumps(out))
