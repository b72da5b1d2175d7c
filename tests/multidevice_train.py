"""Trains the tiny model of tests/test_multidevice.py on 8 simulated CPU devices:
2 steps on fsdp=8, then resumed from that checkpoint on fsdp=4 x tensor=2 for
steps 3 and 4. Prints the losses, the resume message and the parameter specs of
both meshes as JSON. Run by tests/test_multidevice.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (fixed when JAX starts).

    python tests/multidevice_train.py WORKDIR
"""
import json
import pathlib
import sys

import jax

jax.config.update("jax_default_matmul_precision", "highest")

from flax import nnx  # noqa: E402

from jav import sharding  # noqa: E402
from jav.models import AVDiT  # noqa: E402
from jav.train.diffusion import train  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_multidevice import FSDP4_TENSOR2, FSDP8, config, losses, write_data  # noqa: E402


def specs(cfg) -> list[str]:
    """The specs the trainer places the parameters with on cfg's mesh."""
    mesh = sharding.make_mesh(dict(cfg.mesh.shape))
    abstract = nnx.state(nnx.eval_shape(lambda: AVDiT(cfg.model, rngs=nnx.Rngs(0))))
    placed = sharding.param_shardings(abstract, mesh, tuple(tuple(r) for r in cfg.mesh.rules))
    return sorted({str(s.spec) for s in jax.tree.leaves(placed)})


if __name__ == "__main__":
    root = pathlib.Path(sys.argv[1])
    data = write_data(root / "data")
    messages = []
    first, moved = config(data, 2, FSDP8), config(data, 4, FSDP4_TENSOR2)
    train(first, str(root / "run"), log=lambda _: None)
    train(moved, str(root / "run"), log=messages.append)
    print(json.dumps(dict(losses=losses(root / "run"), messages=messages, specs={"fsdp=8": specs(first), "fsdp=4 tensor=2": specs(moved)})))
