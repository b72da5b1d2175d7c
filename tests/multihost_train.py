"""Trains the tiny model of tests/test_multidevice.py on fsdp=8 for STEPS steps,
in one process or as one of several started by launch/local_multiprocess.sh
(joined through jav.distributed), then, in every process, reads the last
checkpoint back onto the mesh. Run by tests/test_multihost.py.

    python tests/multihost_train.py WORKDIR DATA_DIR STEPS

Writes WORKDIR/process_<i>.json: the process index and count, the lines it
logged, the data shard its loader was made with, the clip seeds of every batch
it loaded and the loader's final state, the sum of each restored parameter
shard it holds (with the shard's index), and, with several processes, the step
at which all stopped after the last one sent itself SIGTERM.
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

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jav import sharding  # noqa: E402
from jav.clip_tokens import frames_to_model  # noqa: E402
from jav.data.record import decode_record  # noqa: E402
from jav.data.shards import open_shards  # noqa: E402
from jav.models import AVDiT  # noqa: E402
from jav.train import diffusion, loop  # noqa: E402
from jav.train.checkpoint import restore_params_from  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_multidevice import FSDP8, config  # noqa: E402


class RecordingLoader:
    """Stands in for the diffusion phase's `make_loader`: notes the shard it is asked for
    and the clips of each batch the real loader hands out."""

    def __init__(self, data_dir):
        _, source = open_shards(data_dir)
        self.seed_of = {}
        for i in range(len(source)):
            rec = decode_record(source[i])
            self.seed_of[frames_to_model(rec["video"]).tobytes()] = rec["metadata"]["seed"]
        self._make_loader = diffusion.make_loader
        self.shard, self.batches, self.it = None, [], None

    def __call__(self, *args, **kwargs):
        self.shard = [kwargs["process_index"], kwargs["process_count"]]
        self.it = self._make_loader(*args, **kwargs)
        return self

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.it)
        self.batches.append([self.seed_of[v.tobytes()] for v in batch["video"]])
        return batch

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)


def restored_shard_sums(cfg, run_dir) -> list:
    """[path, shard index as [start, stop] per dim, sum] of each parameter shard on this process, read back from run_dir."""
    mesh = sharding.make_mesh(dict(cfg.mesh.shape))
    abstract = nnx.state(nnx.eval_shape(lambda: AVDiT(cfg.model, rngs=nnx.Rngs(0))))
    placed = sharding.param_shardings(abstract, mesh, tuple(tuple(r) for r in cfg.mesh.rules))
    leaves, treedef = jax.tree.flatten(abstract)  # one leaf per Variable, in the order of `placed`'s shardings
    target = treedef.unflatten([jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s) for x, s in zip(leaves, jax.tree.leaves(placed))])
    params = restore_params_from(run_dir, use_ema=False, abstract_params=target)
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        for shard in leaf.addressable_shards:
            index = [[s.start or 0, leaf.shape[d] if s.stop is None else s.stop] for d, s in enumerate(shard.index)]
            out.append([jax.tree_util.keystr(path), index, float(np.asarray(shard.data, np.float64).sum())])
    return out


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
    workdir, data_dir, steps = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    diffusion.make_loader = loader = RecordingLoader(data_dir)
    messages = [joined]
    cfg = config(data_dir, steps, FSDP8)
    cfg.train.checkpoint_every = steps  # one save, at the end: the one read back below
    diffusion.train(cfg, str(workdir / "run"), log=messages.append)
    out = dict(process_index=jax.process_index(), process_count=jax.process_count(), messages=messages,
               shard=loader.shard, batches=loader.batches, loader_state=loader.get_state(),
               restored=restored_shard_sums(cfg, workdir / "run"))
    if jax.process_count() > 1:
        out["stopped_at"] = stop_step_after_sigterm(steps + 1)
    (workdir / f"process_{jax.process_index()}.json").write_text(json.dumps(out))
