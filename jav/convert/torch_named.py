"""Loading PyTorch state dicts into jav modules that keep PyTorch's parameter names and
layouts (LTX-2's vocoder and VAEs, Wan's VAE): tensor `a.3.b.weight` is jav's parameter at
path ("a", 3, "b", "weight"), copied as it is after a shape check; `state_dict` is the way back."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx


def jav_path(name: str) -> tuple:
    """A PyTorch parameter name -> jav's parameter path (list indices as ints)."""
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


def torch_name(path: tuple) -> str:
    """A jav parameter path -> its PyTorch name (the inverse of `jav_path`)."""
    return ".".join(map(str, path))


def state_dict(flat: dict) -> dict:
    """jav's parameters (path -> array) -> {PyTorch name: array}, as they are."""
    return {torch_name(path): x for path, x in flat.items()}


def module_from_tensors(make: Callable[[], nnx.Module], tensors, what: str, dtype: str = "float32") -> nnx.Module:
    """The module `make()` builds, holding `tensors` (name -> array: a dict or a
    SafetensorsReader) in `dtype`; every parameter must be given and every tensor used."""
    graphdef, state = nnx.split(nnx.eval_shape(make))
    flat = dict(nnx.to_flat_state(state))
    names = tensors.names() if hasattr(tensors, "names") else list(tensors)
    paths = {jav_path(n): n for n in names}
    missing, unused = sorted(map(str, set(flat) - set(paths))), sorted(n for p, n in paths.items() if p not in flat)
    if missing or unused:
        raise ValueError(f"{what}: parameters the checkpoint lacks: {missing[:8]}; tensors jav has no place for: {unused[:8]}")
    values = {}
    for path, var in flat.items():
        x = np.asarray(tensors[paths[path]], np.float32)
        if x.shape != var.get_value().shape:
            raise ValueError(f"{what} tensor {paths[path]} has shape {x.shape}, the config makes {var.get_value().shape}")
        values[path] = jnp.asarray(x, dtype)
    return nnx.merge(graphdef, nnx.from_flat_state([(p, v.replace(values[p])) for p, v in flat.items()]))
