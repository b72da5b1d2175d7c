"""The tiny model, data and checks that the multi-device and multi-host tests share.

One reference run trains this model for STEPS steps on one device (the session
fixture `mesh_reference` in tests/conftest.py); tests/multidevice_train.py resumes
its step-2 checkpoint on fsdp=4 x tensor=2 and tests/multihost_train.py trains it
over two processes on fsdp=8, and both must reproduce its losses, batches and
parameters. Compiling a train step is what these tests pay for, so each mesh
compiles one.
"""

import json
import pathlib

import jax
import numpy as np

from configs import test as test_config
from jav import aot, sharding
from jav.clip_tokens import frames_to_model
from jav.data import bounce, shards, synthetic
from jav.data.record import decode_record
from jav.data.shards import open_shards
from jav.train import diffusion
from jav.train.checkpoint import restore_params_from

DURATION = 1.0  # 8 frames: compile time is what these tests pay for
STEPS = 4  # two epochs of 16 clips in batches of 8
ONE_DEVICE = dict(fsdp=1, tensor=1)
FSDP8 = dict(fsdp=8, tensor=1)
FSDP4_TENSOR2 = dict(fsdp=4, tensor=2)


def write_data(out) -> str:
    world = bounce.BounceParams(duration=DURATION)
    shards.write_shards((synthetic.clip_record(seed, world) for seed in range(16)), str(out), 8)
    return str(out)


def config(data_dir, steps, shape, checkpoint_every=2):
    cfg = test_config.get_config()
    cfg.model.video.width, cfg.model.audio.width, cfg.model.text.dim, cfg.model.text.width = 32, 16, 16, 16
    cfg.data.duration, cfg.data.dir = DURATION, str(data_dir)
    cfg.train.batch_size, cfg.train.steps, cfg.train.log_every, cfg.train.checkpoint_every = 8, steps, 1, checkpoint_every
    cfg.mesh.shape.update(shape)
    return cfg


def losses(workdir) -> dict:
    """step -> loss from WORKDIR/metrics.jsonl; a step logged twice (a resumed run) keeps its last value."""
    return {r["step"]: r["loss"] for r in map(json.loads, (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines())}


class RecordingLoader:
    """Stands in for the diffusion phase's `make_loader`: notes the shard it is asked for
    and the clip seeds of each batch the real loader hands out."""

    def __init__(self, data_dir, make_loader=diffusion.make_loader):
        _, source = open_shards(data_dir)
        self.seed_of = {}
        for i in range(len(source)):
            rec = decode_record(source[i])
            self.seed_of[frames_to_model(rec["video"]).tobytes()] = rec["metadata"]["seed"]
        self._make_loader = make_loader
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


def train_recording(cfg, workdir, log) -> RecordingLoader:
    """diffusion.train with the loader recorded."""
    loader = RecordingLoader(cfg.data.dir)
    saved, diffusion.make_loader = diffusion.make_loader, loader
    try:
        diffusion.train(cfg, str(workdir), log=log)
    finally:
        diffusion.make_loader = saved
    return loader


def placed_params(cfg):
    """The parameters as sharded ShapeDtypeStructs on cfg's mesh, placed as the trainer places them."""
    mesh = sharding.make_mesh(dict(cfg.mesh.shape))
    return aot.abstract_params(cfg, mesh, tuple(tuple(r) for r in cfg.mesh.rules))[1]


def restore_on_mesh(cfg, run_dir):
    """The last checkpoint's parameters of run_dir, placed on cfg's mesh as the trainer places them."""
    return restore_params_from(run_dir, use_ema=False, abstract_params=placed_params(cfg))


def param_specs(cfg) -> list[str]:
    """The specs the trainer places the parameters with on cfg's mesh."""
    return sorted({str(x.sharding.spec) for x in jax.tree.leaves(placed_params(cfg))})


def shard_sums(params) -> list:
    """[path, shard index as [start, stop] per dim, sum] of each parameter shard this process holds."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        for shard in leaf.addressable_shards:
            index = [[s.start or 0, leaf.shape[d] if s.stop is None else s.stop] for d, s in enumerate(shard.index)]
            out.append([jax.tree_util.keystr(path), index, float(np.asarray(shard.data, np.float64).sum())])
    return out


def full_arrays(params) -> dict:
    """path -> the whole parameter as float64 numpy (one process holding all of it)."""
    return {jax.tree_util.keystr(p): np.asarray(x, np.float64) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
