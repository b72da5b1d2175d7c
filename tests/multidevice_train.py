"""Resumes a one-device checkpoint of tests/mesh_case.py's model on fsdp=4 x tensor=2
over 8 simulated CPU devices and trains on to its last step. Prints the lines it
logged and the parameter specs of that mesh and of fsdp=8 as JSON. Run by
tests/test_multidevice.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (fixed when JAX starts).

    python tests/multidevice_train.py WORKDIR DATA_DIR
"""

import json
import pathlib
import sys

import jax

jax.config.update("jax_default_matmul_precision", "highest")

from jav.train.diffusion import train  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from mesh_case import FSDP4_TENSOR2, FSDP8, STEPS, config, param_specs  # noqa: E402

if __name__ == "__main__":
    workdir, data = pathlib.Path(sys.argv[1]), sys.argv[2]
    moved = config(data, STEPS, FSDP4_TENSOR2)
    messages = []
    train(moved, str(workdir), log=messages.append)
    print(json.dumps(dict(messages=messages, specs={"fsdp=8": param_specs(config(data, STEPS, FSDP8)), "fsdp=4 tensor=2": param_specs(moved)})))
