"""Logical axis names and the rules that map them onto mesh axes.

Model code names the axes of every parameter and large activation with
logical names (`embed`, `heads`, `mlp`, ...). A rules table from the config
maps each logical name to a mesh axis (`data`, `fsdp`, `context`, `tensor`)
or to nothing; model code never names a mesh axis.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Sequence

import jax

# Logical names used by jav's modules. Kept in one place so that a rules table
# can be checked for typos against it.
PARAM_AXES = ("layers", "embed", "heads", "kv", "mlp", "vocab", "patch", "modulation", "norm")
ACTIVATION_AXES = (
    "activation_batch",
    "activation_length",
    "activation_embed",
    "activation_heads",
    "activation_kv",
    "activation_mlp",
)
LOGICAL_AXES = PARAM_AXES + ACTIVATION_AXES

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

_state = threading.local()


def current_rules() -> Rules:
    return getattr(_state, "rules", ())


@contextlib.contextmanager
def logical_rules(rules: Rules):
    """Activates a logical-to-mesh rules table for `constrain` and `logical_to_spec`."""
    previous = current_rules()
    _state.rules = tuple((name, target) for name, target in rules)
    try:
        yield
    finally:
        _state.rules = previous


def logical_to_spec(logical: Sequence[str | None], rules: Rules | None = None) -> jax.sharding.PartitionSpec:
    """Maps logical axis names to a PartitionSpec; unknown names stay unsharded.

    A mesh axis is used at most once per spec: a later logical axis that maps to a
    mesh axis already taken stays unsharded (as in MaxText's rules).
    """
    table = dict(current_rules() if rules is None else rules)
    used: set[str] = set()
    out = []
    for name in logical:
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        out.append(axes[0] if len(axes) == 1 else (axes or None))
    return jax.P(*out)


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
    """Sharding constraint by logical names; a no-op without rules or a mesh."""
    rules = current_rules()
    if not rules or jax.sharding.get_abstract_mesh().empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(logical, rules))
