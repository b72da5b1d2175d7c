"""Logical axis names and the rules that map them onto mesh axes.

Model code names the axes of every parameter and large activation with
logical names (`embed`, `heads`, `mlp`, ...). A rules table from the config
maps each logical name to a mesh axis (`data`, `fsdp`, `context`, `tensor`)
or to nothing; model code never names a mesh axis.

A global batch is sharded over the mesh by its logical batch axis
(`batch_sharding`); each process loads only the rows its devices hold
(`data_shard`) and `global_batch` assembles the global arrays from them.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils

# Logical names used by jav's modules. Kept in one place so that a rules table
# can be checked for typos against it.
PARAM_AXES = ("layers", "embed", "heads", "kv", "mlp", "vocab", "patch", "modulation", "norm")
ACTIVATION_AXES = (
    "activation_batch",
    "activation_length",
    "activation_audio_length",
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


def constrain_batch(x: jax.Array) -> jax.Array:
    """`x`'s leading axis sharded as `activation_batch`, its other axes left to the
    partitioner; a no-op without rules or a mesh. For the small per-token MLPs
    (timestep, guidance, AdaLN) between whose layers the partitioner would otherwise
    shard the width like the weights and all-reduce the whole batch."""
    rules = current_rules()
    if not rules or jax.sharding.get_abstract_mesh().empty:
        return x
    (batch,) = logical_to_spec(("activation_batch",), rules)
    return jax.lax.with_sharding_constraint(x, jax.P(batch, *[jax.P.UNCONSTRAINED] * (x.ndim - 1)))


def mesh_axes_of(logical: str | None, mesh=None, rules: Rules | None = None) -> tuple[str, ...]:
    """The axes of `mesh` (default: the current one) of size > 1 that a logical
    axis is split over under `rules` (default: the active ones); () without
    rules or a mesh."""
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    if logical is None or mesh.empty:
        return ()
    entry = logical_to_spec((logical,), rules)[0]
    axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
    return tuple(a for a in axes if a in mesh.shape and mesh.shape[a] > 1)


MESH_AXES = ("data", "fsdp", "context", "tensor")

# Where each logical axis goes by default (MaxText-style): parameters are split
# over fsdp on their model dimension and over tensor on heads / MLP; activations
# over (data, fsdp) on batch, context on sequence, tensor on heads / MLP. Audio
# tokens are far fewer than video tokens (LTX-2 at 5 s: 125 vs about 14k), so
# every context shard keeps the whole audio sequence
# (jav.models.context_parallel relies on it).
DEFAULT_RULES = (
    ("layers", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", None),
    ("patch", None),
    ("modulation", None),
    ("norm", None),
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", "context"),
    ("activation_audio_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
)


def mesh_shape(shape: dict, num_devices: int) -> tuple[int, ...]:
    """Resolves a {axis: size} table, one size may be -1 ("the rest"), into sizes
    in MESH_AXES order; errors name the key and the fix."""
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh.shape has unknown axes {sorted(unknown)}; use {MESH_AXES}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError("mesh.shape may use -1 for one axis only")
    known = 1
    for s in sizes:
        known *= s if s != -1 else 1
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh.shape {dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not divisible by the fixed axes' product {known}")
        sizes[sizes.index(-1)] = num_devices // known
    total = 1
    for s in sizes:
        total *= s
    if total != num_devices:
        raise ValueError(f"mesh.shape {dict(zip(MESH_AXES, sizes))} needs {total} devices, but {num_devices} are present; set one axis to -1")
    return tuple(sizes)


def dcn_shape(dcn: dict | None, sizes: Sequence[int]) -> tuple[int, ...]:
    """`mesh.dcn` ({axis: slices}, e.g. {"data": 2}) in MESH_AXES order: how many slices
    each mesh axis spans over the data-centre network; errors name the key and the fix."""
    dcn = dict(dcn or {})
    unknown = set(dcn) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh.dcn has unknown axes {sorted(unknown)}; use {MESH_AXES}")
    out = tuple(int(dcn.get(a, 1)) for a in MESH_AXES)
    for a, size, slices in zip(MESH_AXES, sizes, out):
        if slices < 1 or size % slices:
            raise ValueError(f"mesh.dcn.{a}={slices} must divide mesh.shape.{a}={size}: each slice holds an equal part of the axis")
    return out


def make_mesh(shape: dict, devices=None, dcn: dict | None = None) -> jax.sharding.Mesh:
    """The (data, fsdp, context, tensor) mesh of `shape` over `devices` (all by default).

    `dcn` ({axis: slices}) spreads axes over several TPU slices (multi-slice): each
    such axis is cut into `slices` parts, slice-major, so that its outer part
    crosses the slower data-centre network and everything else stays inside a
    slice's ICI (put data or fsdp there: their traffic is one gradient
    reduction per step). Devices must carry `slice_index`, and the slices' count
    must be the product of `dcn`.
    """
    devices = list(devices if devices is not None else jax.devices())
    sizes = mesh_shape(shape, len(devices))
    slices = dcn_shape(dcn, sizes)
    # Auto axes: GSPMD propagates shardings from the parameters, the batch and
    # the logical constraints in the model.
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    if int(np.prod(slices)) == 1:
        return jax.make_mesh(sizes, MESH_AXES, devices=devices, axis_types=auto)
    found = sorted({getattr(d, "slice_index", 0) for d in devices})
    if len(found) != int(np.prod(slices)):
        raise ValueError(
            f"mesh.dcn {dict(zip(MESH_AXES, slices))} asks for {int(np.prod(slices))} slices, but the devices "
            f"come from {len(found)}; set mesh.dcn to the job's slices (e.g. {{'data': {len(found)}}}) or remove it"
        )
    per_slice = tuple(size // n for size, n in zip(sizes, slices))
    grid = mesh_utils.create_hybrid_device_mesh(per_slice, slices, devices, allow_split_physical_axes=True)
    return jax.sharding.Mesh(grid, MESH_AXES, axis_types=auto)


def mesh_from_config(mesh_cfg, devices=None) -> jax.sharding.Mesh:
    """`make_mesh` of a config's `mesh` block (shape, and dcn for multi-slice jobs)."""
    return make_mesh(dict(mesh_cfg.shape), devices, dict(mesh_cfg.get("dcn", None) or {}))


def canonical_spec(spec: jax.sharding.PartitionSpec, mesh: jax.sharding.Mesh) -> jax.sharding.PartitionSpec:
    """`spec` as XLA writes the shardings of a jitted function's outputs: mesh axes
    of size 1 dropped, single-axis tuples as names, no trailing None.

    Equal placements spelled differently are different cache keys for `jax.jit`:
    parameters placed with the canonical spelling come back from the train step
    with the same one, so the step compiles once, not twice.
    """
    entries = []
    for entry in spec:
        axes = tuple(a for a in ((entry,) if isinstance(entry, str) else tuple(entry or ())) if mesh.shape[a] > 1)
        entries.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    while entries and entries[-1] is None:
        entries.pop()
    return jax.P(*entries)


def param_shardings(abstract_state, mesh: jax.sharding.Mesh, rules: Rules):
    """NamedShardings for a state of nnx Variables from their logical axis names.

    Checks every sharded dimension divides its mesh axes, naming the parameter,
    its logical axis and the fix.
    """

    def one(path, var):
        axes = var.get_metadata().get("out_sharding") if isinstance(var, nnx.Variable) else None
        if axes is None:
            return jax.sharding.NamedSharding(mesh, jax.P())
        spec = logical_to_spec(axes, rules)
        for dim, (size, entry, name) in enumerate(zip(var.shape, spec, axes)):
            mesh_axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
            parts = 1
            for a in mesh_axes:
                parts *= mesh.shape[a]
            if size % parts:
                where = ".".join(str(p) for p in path)
                raise ValueError(
                    f"parameter {where} dimension {dim} ({name}={size}) is not divisible by mesh "
                    f"{'x'.join(mesh_axes)}={parts}; change the model width/heads or the rule for '{name}'"
                )
        return jax.sharding.NamedSharding(mesh, canonical_spec(spec, mesh))

    return jax.tree_util.tree_map_with_path(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: jax.sharding.Mesh, rules: Rules, ndim: int) -> jax.sharding.NamedSharding:
    """The sharding of a batch array of rank `ndim`: rows over the mesh axes of `activation_batch`."""
    return jax.sharding.NamedSharding(mesh, logical_to_spec(("activation_batch",) + (None,) * (ndim - 1), rules))


def batch_shards(mesh: jax.sharding.Mesh, rules: Rules) -> int:
    """Into how many parts `batch_sharding` splits a batch's rows (a batch must be a multiple)."""
    return int(np.prod([mesh.shape[a] for a in mesh_axes_of("activation_batch", mesh, rules)]))


def data_shard(placement: jax.sharding.Sharding, batch_size: int) -> tuple[int, int]:
    """Which part of each global batch placed by `placement` (`batch_sharding(mesh, rules, 1)`)
    this process loads -> (index, count).

    The batch's rows are split into `count` disjoint sets, one per group of
    processes whose devices hold the same rows; this process loads set `index`,
    `batch_size // count` rows. Processes that hold the same rows (a batch
    replicated over a mesh axis spanning processes) load the same data, as
    `jax.make_array_from_process_local_data` requires of replicas.
    """
    rows: dict[int, set] = {}
    for device, index in placement.devices_indices_map((batch_size,)).items():
        rows.setdefault(device.process_index, set()).update(range(batch_size)[index[0]])
    groups = sorted({frozenset(r) for r in rows.values()}, key=min)
    if sum(map(len, groups)) != batch_size:
        raise ValueError(
            f"the processes' devices hold overlapping but unequal rows of the batch ({[sorted(g) for g in groups]}); "
            "make mesh.shape split the batch evenly over the processes"
        )
    return groups.index(frozenset(rows[jax.process_index()])), len(groups)


def global_batch(batch: dict, mesh: jax.sharding.Mesh, rules: Rules, batch_size: int) -> dict:
    """This process's numpy rows -> global arrays of `batch_size` rows, sharded over (data, fsdp)."""
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, rules, v.ndim), v, (batch_size,) + v.shape[1:])
    return out
