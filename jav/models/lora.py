"""Low-rank adapters (LoRA) on a model's dense projections, and folding them back in.

`model.lora` in a config: rank (0: none), alpha (the update is scaled by alpha / rank)
and targets, a comma list of projection roles: "attn" (the query, key, value and output
projections of every attention: self, text and cross-modal) and "mlp" (the two layers of
every block MLP). A targeted `Dense` gets an adapter beside its frozen kernel W:

    y = x . W + (alpha / rank) * (x . A) . B        A [in..., rank], B [rank, out...]

A is random (fan-in normal), B zero, so a model with fresh adapters computes exactly what
its base weights compute. A and B are `nnx.LoRAParam`s carrying logical axis names (A: the
kernel's input axes and the rank, B: the rank and the output axes; the rank axis is never
split), so they are sharded by the same rules as the kernel, and stacked with it under a
layer scan. `merge` folds them into the kernels (W + alpha / rank * A . B); the training
phases train only them by default (`train.trainable`, jav.train.step).

Adapters are made while the model is built: the model sets `building(cfg.lora)` around its
constructor and each `Dense` given a `role` asks `adapter_rank(role)`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import jax
import jax.numpy as jnp
from flax import nnx

ROLES = ("attn", "mlp")
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("jav_lora", default=None)


def parse(cfg) -> tuple[int, float, frozenset]:
    """model.lora -> (rank, scale, roles); rank 0 (or no block) is no adapters. Errors name the key."""
    if cfg is None or not cfg.get("rank", 0):
        return 0, 0.0, frozenset()
    rank = int(cfg.rank)
    if rank < 0:
        raise ValueError(f"model.lora.rank={rank} must be >= 0 (0: no adapters)")
    roles = frozenset(r.strip() for r in str(cfg.get("targets", "attn,mlp")).split(",") if r.strip())
    if not roles or roles - set(ROLES):
        raise ValueError(f"model.lora.targets={cfg.get('targets')!r}: name projections among {ROLES}, comma-separated")
    alpha = float(cfg.get("alpha", 0.0) or rank)
    return rank, alpha / rank, roles


@contextlib.contextmanager
def building(cfg):
    """Adapters from `cfg` (a model.lora block, or None) on every `Dense` built inside with a targeted role."""
    token = _ACTIVE.set(parse(cfg))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def adapter_rank(role: str | None) -> tuple[int, float]:
    """(rank, scale) of the adapter a Dense of `role` gets where it is being built; (0, 0) for none."""
    active = _ACTIVE.get()
    if role is None or active is None or role not in active[2]:
        return 0, 0.0
    return active[0], active[1]


class Adapter(nnx.Module):
    """The low-rank update of one Dense: x -> scale * (x . A) . B."""

    def __init__(self, in_shape: tuple, out_shape: tuple, axes: tuple, rank: int, scale: float, *, rngs: nnx.Rngs, dtype, param_dtype):
        n = len(in_shape)
        std = 1.0 / math.sqrt(math.prod(in_shape))
        self.a = nnx.LoRAParam(std * jax.random.normal(rngs.params(), (*in_shape, rank), param_dtype), out_sharding=(*axes[:n], None), eager_sharding=False)
        self.b = nnx.LoRAParam(jnp.zeros((rank, *out_shape), param_dtype), out_sharding=(None, *axes[n:]), eager_sharding=False)
        self.scale, self.dtype = scale, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        n = self.a.ndim - 1
        h = jnp.tensordot(x.astype(self.dtype), self.a[...].astype(self.dtype), axes=n)
        return self.scale * jnp.tensordot(h, self.b[...].astype(self.dtype), axes=1)


def merge(model: nnx.Module) -> int:
    """Folds every adapter of `model` into its kernel (in place: W + scale * A . B, in float32) and
    removes it -> the number merged. Under a layer scan kernel and adapter carry the layer axis first."""
    merged = 0
    for _, module in list(nnx.iter_modules(model)):
        adapter = getattr(module, "lora", None)
        if not isinstance(adapter, Adapter):
            continue
        kernel = module.kernel[...]
        a, b = adapter.a[...].astype(jnp.float32), adapter.b[...].astype(jnp.float32)
        lead = kernel.ndim - len(module.in_shape) - len(module.out_shape)  # 1 under a layer scan
        rank = a.shape[-1]
        delta = jnp.matmul(a.reshape(*a.shape[:lead], -1, rank), b.reshape(*b.shape[:lead], rank, -1))
        module.kernel[...] = (kernel.astype(jnp.float32) + adapter.scale * delta.reshape(kernel.shape)).astype(kernel.dtype)
        module.lora = None
        merged += 1
    return merged
