"""Runs a few train steps of a tiny model on a given mesh and prints the losses as
JSON. Used by tests/test_multidevice.py in a subprocess with 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8).

    python tests/multidevice_losses.py   # prints {mesh: {losses, specs}} for each mesh below
"""
import json

import jax

jax.config.update("jax_default_matmul_precision", "highest")

import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from configs import test as test_config  # noqa: E402
from jav import sharding  # noqa: E402
from jav.clip_tokens import TokenLayout  # noqa: E402
from jav.models import AVDiT, init_model  # noqa: E402
from jav.models.text_encoder import HashTokenizer  # noqa: E402
from jav.train.step import optimizer, train_step  # noqa: E402
from jav.train.trainer import _global_batch, validate  # noqa: E402


def main(shape: dict, num_devices: int, steps: int = 3) -> list[float]:
    cfg = test_config.get_config()
    cfg.model.video.width, cfg.model.audio.width, cfg.model.text.dim, cfg.model.text.width = 32, 16, 16, 16
    cfg.train.batch_size = 8
    cfg.data.duration = 1.0  # 8 frames: compile time is what this test pays for
    cfg.data.dir = "unused"
    mesh = sharding.make_mesh(shape, jax.devices()[:num_devices])
    rules = tuple(tuple(r) for r in cfg.mesh.rules)
    validate(cfg, mesh)
    layout = TokenLayout.from_config(cfg)
    graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: AVDiT(cfg.model, rngs=nnx.Rngs(0))))
    params = nnx.state(init_model(cfg.model, jax.random.key(0), out_shardings=sharding.param_shardings(abstract_state, mesh, rules)))
    rng = np.random.default_rng(0)
    ids, mask = HashTokenizer(cfg.model.text.vocab_size, cfg.model.text.max_len).encode(["a red ball bouncing on a dark background"] * 8)
    host = dict(video=rng.uniform(-1, 1, (8,) + layout.video_shape).astype(np.float32),
                audio=rng.uniform(-1, 0, (8,) + layout.audio_shape).astype(np.float32), text_ids=ids, text_mask=mask)
    tx = optimizer(cfg)
    losses = []
    with jax.set_mesh(mesh), sharding.logical_rules(rules):
        opt_state = jax.jit(tx.init)(params)
        batch = _global_batch(host, mesh, rules)
        for step in range(steps):
            params, opt_state, _, m = train_step(graphdef, params, opt_state, None, batch, jax.random.key(step), tx=tx, layout=layout,
                                                 flow_cfg=ml_collections.FrozenConfigDict(cfg.flow))
            losses.append(float(m["loss"]))
        placed = {str(jax.tree.leaves(params)[i].sharding.spec) for i in range(len(jax.tree.leaves(params)))}
    return losses, sorted(placed)


MESHES = {
    "1 device": ({"fsdp": 1}, 1),
    "fsdp=4 tensor=2": ({"fsdp": 4, "tensor": 2}, 8),
    "fsdp=8": ({"fsdp": -1}, 8),
}

if __name__ == "__main__":
    out = {}
    for name, (shape, n) in MESHES.items():
        losses, specs = main(shape, n)
        out[name] = dict(losses=losses, specs=specs)
    print(json.dumps(out))
