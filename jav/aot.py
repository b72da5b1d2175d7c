"""Pod-scale planning without a pod: the train step and one sampling step
compiled ahead of time for a TPU topology, with the TPU compiler's per-chip
memory, FLOPs and time estimate.

    python -m jav.aot --config configs/ltx2_19b.py --topology v5p-128 [--slices 2] [--config.KEY=VALUE ...]

Needs libtpu (`pip install -e .[tpu]`), which compiles for TPUs on any host:
`jax.experimental.topologies` describes the slice's chips without them, the
mesh is `config.mesh.shape` over those chips, and the steps are lowered on
abstract, sharded inputs, so nothing is allocated. Topologies are named as
Cloud TPU names them (v4-N and v5p-N count TensorCores, two a chip; v5e-N and
v6e-N count chips) or as libtpu does (`v5p:4x4x8`).

`--compile distill` plans the distillation step of a student of the config's model
(jav/train/distill.py: student with optimizer state and EMA, the teacher frozen
in bfloat16). It prints, per chip: arguments (parameters, optimizer state, EMA, batch),
outputs, temporaries and their total against the chip's HBM (or the TPU
compiler's own out-of-memory verdict); and when a step does not fit, which
knob would help. Then FLOPs and time: `jav.models.flops` gives the model FLOPs
of a step (as MFU counts them) and the executed ones (with remat's
recompute). The compiler's `cost_analysis()` counts a loop's body once, so
with scanned layers its FLOPs and its time estimate (`optimal_seconds`) cover
one layer group, not the step; the step time printed is the executed FLOPs at
the rate the compiler's estimate implies (its FLOPs over its seconds), and the
MFU is what that time implies. Where the compiler gives no estimate
(`optimal_seconds` < 0), it is the executed FLOPs at the chip's peak (from
`jav.perf`), a lower bound.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import threading
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jav import flow, perf, samplers, schema, sharding
from jav.clip_tokens import TokenLayout
from jav.models import AVDiT
from jav.models.flops import forward_flops, param_count
from jav.train.diffusion import DiffusionPhase, validate
from jav.train.distill import DistillPhase, distill_step, student_config
from jav.train.step import train_step

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    generation: str
    hbm_bytes: int
    torus_dims: int
    cores_per_chip: int  # how many of a Cloud TPU name's count make one chip
    megacore: bool  # one JAX device drives both TensorCores of a chip


CHIPS = {
    "v4": Chip("v4", 32 * GiB, 3, 2, True),
    "v5p": Chip("v5p", 95 * GiB, 3, 2, True),
    "v5e": Chip("v5e", 16 * GiB, 2, 1, False),
    "v6e": Chip("v6e", 32 * GiB, 2, 1, False),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    chip: Chip
    shape: tuple[int, ...]  # chips along each ICI axis

    @property
    def num_chips(self) -> int:
        return _prod(self.shape)

    @property
    def libtpu_name(self) -> str:
        return f"{self.chip.generation}:{'x'.join(map(str, self.shape))}"


def slice_shape(num_chips: int, dims: int) -> tuple[int, ...]:
    """The ICI shape of a slice of `num_chips` (a power of two), as Cloud TPU
    lays slices out: 3-D slices from 2x2x1 and 2-D slices from 1x1, doubling
    the shortest axis (the last of equals) until the slice is full."""
    shape = [2, 2, 1] if dims == 3 else [1, 1]
    if num_chips < (4 if dims == 3 else 1) or num_chips & (num_chips - 1):
        raise ValueError
    while _prod(shape) < num_chips:
        i = max(i for i, s in enumerate(shape) if s == min(shape))
        shape[i] *= 2
    return tuple(shape)


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def parse_topology(name: str) -> Topology:
    """'v5p-128' (a Cloud TPU name) or 'v5p:4x4x4' (libtpu's) -> Topology."""
    known = ", ".join(CHIPS)
    m = re.fullmatch(r"(v\d+[a-z]?)(?:-(\d+)|:(\d+(?:x\d+)+))", name.strip())
    if not m or m.group(1) not in CHIPS:
        raise ValueError(f"--topology={name!r}: give a TPU generation ({known}) and a size, e.g. v5p-128, v5e-256 or v5p:4x4x8")
    chip = CHIPS[m.group(1)]
    if m.group(3):
        shape = tuple(int(s) for s in m.group(3).split("x"))
        if len(shape) != chip.torus_dims:
            example = f"{chip.generation}:{'x'.join(['2'] * chip.torus_dims)}"
            raise ValueError(f"--topology={name!r}: {chip.generation} slices are {chip.torus_dims}-D, e.g. {example}")
        return Topology(name, chip, shape)
    count = int(m.group(2))
    unit = "TensorCores (2 per chip)" if chip.cores_per_chip == 2 else "chips"
    try:
        if count % chip.cores_per_chip:
            raise ValueError
        return Topology(name, chip, slice_shape(count // chip.cores_per_chip, chip.torus_dims))
    except ValueError:
        raise ValueError(
            f"--topology={name!r}: {chip.generation}-N counts {unit}; N must give a power-of-two number of chips "
            f"({'at least 4, ' if chip.torus_dims == 3 else ''}e.g. {chip.generation}-{8 * chip.cores_per_chip}), "
            f"or name the shape: {chip.generation}:{'x'.join(['4'] * chip.torus_dims)}"
        ) from None


def topology_devices(topology: Topology, slices: int = 1) -> list:
    """Compile-only devices of the slice (or of `slices` such slices joined over the
    data-centre network, each device with its `slice_index`), one per chip
    (megacore on v4 / v5p)."""
    from jax.experimental import topologies

    kwargs = {"chip_config_name": "megacore"} if topology.chip.megacore else {}
    if _prod(topology.shape[:2]) < 4:  # a slice smaller than libtpu's default host of 2x2 chips
        kwargs["chips_per_host_bounds"] = (*(min(s, 2) for s in topology.shape[:2]), 1)
    # libtpu takes a machine-wide lock for the chips it drives; compiling drives
    # none, so several compiles (or a test beside a planning run) may share it
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    if slices > 1:
        kwargs["num_slices"] = slices
    try:
        desc = topologies.get_topology_desc(topology.libtpu_name, "tpu", **kwargs)
    except RuntimeError as e:
        if "not installed" in str(e):
            raise RuntimeError("jav.aot compiles with libtpu: pip install -e .[tpu] (libtpu==0.0.42.1 for jax 0.10.2)") from e
        raise
    return list(desc.devices)


# ---------------------------------------------------------------------------
# Abstract, sharded inputs.


def _abstract(tree, shardings):
    """ShapeDtypeStructs of `tree` (arrays or structs) placed by `shardings` (a pytree prefix of it)."""
    return jax.tree.map(lambda s, sub: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), sub), shardings, tree)


def abstract_params(cfg, mesh: jax.sharding.Mesh, rules):
    """(graphdef, params as sharded ShapeDtypeStructs), as the trainer places them."""
    # outside the mesh context: under it NNX would read the logical names as mesh axes
    graphdef, state = nnx.split(nnx.eval_shape(lambda: AVDiT(cfg.model, rngs=nnx.Rngs(0))))
    return graphdef, _abstract(state, sharding.param_shardings(state, mesh, rules))


def _batch_struct(shape, dtype, mesh, rules) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh, rules, len(shape)))


def text_inputs(cfg, batch: int, mesh, rules) -> dict:
    """The caption part of a batch: token ids (the built-in encoder) or precomputed embeddings."""
    if cfg.model.text.encoder == "builtin":
        length = cfg.model.text.max_len
        return {"text_ids": _batch_struct((batch, length), jnp.int32, mesh, rules), "text_mask": _batch_struct((batch, length), jnp.bool_, mesh, rules)}
    length = cfg.data.text_len
    return {
        "text_emb": _batch_struct((batch, length, cfg.model.text.dim), jnp.float32, mesh, rules),
        "text_mask": _batch_struct((batch, length), jnp.bool_, mesh, rules),
    }


def text_length(cfg) -> int:
    return cfg.model.text.max_len if cfg.model.text.encoder == "builtin" else cfg.data.text_len


def abstract_batch(cfg, layout: TokenLayout, mesh, rules) -> dict:
    """A global training batch as the trainer's loader and `sharding.global_batch` deliver it."""
    b = cfg.train.batch_size
    return dict(
        video=_batch_struct((b,) + tuple(layout.video_shape), jnp.float32, mesh, rules),
        audio=_batch_struct((b,) + tuple(layout.audio_shape), jnp.float32, mesh, rules),
        **text_inputs(cfg, b, mesh, rules),
    )


def _validate(cfg, mesh) -> None:
    # the trainer's checks, less the data directory: nothing is read here
    checked = ml_collections.ConfigDict(cfg.to_dict())
    checked.data.dir = checked.data.get("dir") or "(jav.aot reads no data)"
    validate(checked, mesh)


# ---------------------------------------------------------------------------
# Lowering.


def bytes_per_device(tree) -> int:
    """Bytes one device holds of a pytree of sharded ShapeDtypeStructs."""
    total = 0
    for x in jax.tree.leaves(tree):
        if jnp.issubdtype(x.dtype, jax.dtypes.extended):
            continue  # a PRNG key: a few bytes
        total += _prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
    return total


def _key_struct(mesh) -> jax.ShapeDtypeStruct:
    """A replicated PRNG key, as the loop passes one to each step."""
    return jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=jax.sharding.NamedSharding(mesh, jax.P()))


def _trainable_sizes(net) -> dict:
    """Bytes per device of a `loop.Trainable`'s parameters, optimiser state and EMA."""
    return {
        "params": bytes_per_device(net.params),
        "opt_state": bytes_per_device(net.opt_state),
        "ema": bytes_per_device(net.ema) if net.ema is not None else 0,
    }


def lower_train_step(cfg, mesh: jax.sharding.Mesh) -> tuple[jax.stages.Lowered, dict]:
    """jav.train.step.train_step lowered on abstract inputs placed on `mesh` as
    the trainer places them -> (lowered, bytes per device of each input)."""
    rules = tuple(tuple(r) for r in cfg.mesh.rules)
    _validate(cfg, mesh)
    # the diffusion phase's own state and step options, as abstract values; every
    # input is made outside the mesh context: under it, eager work (optax builds
    # its placements with an init, a key is an array) would run on the
    # compile-only devices
    phase = DiffusionPhase(cfg)
    model = phase.abstract_state(mesh, rules)["model"]
    batch = abstract_batch(cfg, phase.layout, mesh, rules)
    sizes = dict(_trainable_sizes(model), batch=bytes_per_device(batch))
    with jax.set_mesh(mesh), sharding.logical_rules(rules):
        lowered = train_step.lower(phase.graphdef, model.params, model.opt_state, model.ema, batch, _key_struct(mesh), **phase.step_options(phase.layout))
    return lowered, sizes


def lower_distill_step(
    cfg, mesh: jax.sharding.Mesh, teacher_steps: int | None = None, grid_fraction: float | None = None, dmd_weight: float | None = None
) -> tuple[jax.stages.Lowered, dict, DistillPhase]:
    """The distillation step (jav/train/distill.py) of a student of `cfg`'s model,
    lowered as the loop would run it: the student with its optimiser state and EMA,
    the teacher frozen in bfloat16 with neither -> (lowered, bytes per device of
    each input, the phase). teacher_steps, grid_fraction: distill.teacher_steps (0:
    MeanFlow's JVP target; K: K teacher Euler steps per target) and distill.grid_fraction;
    dmd_weight: distill.dmd.weight (> 0: the critic too, with its optimiser state, and the
    student's differentiable sampling of one clip per batch shard); None: the student config's defaults (jav/train/distill.py)."""
    rules = tuple(tuple(r) for r in cfg.mesh.rules)
    student = student_config(cfg)
    student.distill.teacher_dtype = "bfloat16"
    if teacher_steps is not None:
        student.distill.teacher_steps = int(teacher_steps)
    if grid_fraction is not None:
        student.distill.grid_fraction = float(grid_fraction)
    if dmd_weight is not None:
        student.distill.dmd.weight = float(dmd_weight)
        # one sampled clip per batch shard: a smaller sub-batch would leave shards idle or replicated
        student.distill.dmd.batch = min(student.train.batch_size, mesh.shape["data"] * mesh.shape["fsdp"])
    _validate(student, mesh)
    phase = DistillPhase(student)
    phase.teacher_cfg = cfg
    state = phase.abstract_state(mesh, rules)
    batch = abstract_batch(student, phase.layout, mesh, rules)
    sizes = dict(_trainable_sizes(state["model"]), teacher=bytes_per_device(state["teacher"].params), batch=bytes_per_device(batch))
    if "critic" in state:
        sizes.update({f"critic_{k}": v for k, v in _trainable_sizes(state["critic"]).items() if k != "ema"})
    step = jax.ShapeDtypeStruct((), jnp.float32, sharding=jax.sharding.NamedSharding(mesh, jax.P()))
    options = phase.step_options(phase.layout)  # host numbers (the sampling grid): outside the compile-only mesh
    with jax.set_mesh(mesh), sharding.logical_rules(rules):
        lowered = distill_step.lower(state, batch, _key_struct(mesh), step, **options)
    return lowered, sizes, phase


def guidance_of(cfg) -> samplers.Guidance:
    """The config's sampling guidance, STG and rescale included, with float scales (static arguments)."""
    g = samplers.guidance_from(cfg)
    return dataclasses.replace(g, **{k: float(getattr(g, k)) for k in ("text_video", "text_audio", "modality", "stg", "rescale")})


def lower_sample_step(cfg, mesh: jax.sharding.Mesh, batch: int) -> tuple[jax.stages.Lowered, dict]:
    """One Euler step of `jav.samplers.euler_sample` (one guided denoiser call,
    its passes batched) lowered on abstract inputs placed on `mesh` -> (lowered,
    bytes per device of each input)."""
    rules = tuple(tuple(r) for r in cfg.mesh.rules)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch % shards:
        raise ValueError(f"--sample_batch={batch} is not divisible by mesh data x fsdp={shards}; give a multiple of {shards}")
    layout = TokenLayout.from_config(cfg)
    guidance = guidance_of(cfg)
    mu = {m: float(v) for m, v in flow.sampling_mu(cfg.flow, layout.num_tokens).items()}
    graphdef, params = abstract_params(cfg, mesh, rules)
    dims = {"video": _prod(layout.video_patch) * layout.video_shape[-1], "audio": layout.audio_patch * layout.audio_shape[-1]}

    def step(state, x, text_in):
        model = nnx.merge(graphdef, state)
        text = model.encode_text(text_in["text_ids"], text_in["text_mask"]) if "text_ids" in text_in else text_in["text_emb"]
        return samplers.euler_sample(layout.denoiser(model), None, x, text, text_in["text_mask"], num_steps=1, mu=mu, guidance=guidance)

    x = {m: _batch_struct((batch, n, dims[m]), jnp.float32, mesh, rules) for m, n in layout.num_tokens.items()}
    text_in = text_inputs(cfg, batch, mesh, rules)
    sizes = {"params": bytes_per_device(params), "batch": bytes_per_device((x, text_in))}
    with jax.set_mesh(mesh), sharding.logical_rules(rules):
        return jax.jit(step).lower(params, x, text_in), sizes


# ---------------------------------------------------------------------------
# Compiling, and reading the compiler's answers.


def compile_with_progress(lowered: jax.stages.Lowered, label: str, say: Callable[[str], None], every: float = 60.0):
    """`lowered.compile()`, saying every `every` seconds that it is still at it."""
    done = threading.Event()
    start = time.time()

    def heartbeat():
        while not done.wait(every):
            say(f"still compiling the {label} ({time.time() - start:.0f} s)")

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        return lowered.compile()
    finally:
        done.set()
        thread.join()


# The TPU compiler's own estimate of a program's run time, in its cost analysis;
# negative where its cost model does not cover the program.
TIME_KEY = "optimal_seconds"


@dataclasses.dataclass
class StepReport:
    """What the compiler says about one step, per chip (bytes, FLOPs, seconds)."""

    label: str
    inputs: dict  # bytes per chip of each input (params, opt_state, ema, batch), from their shardings
    argument_bytes: int = 0
    output_bytes: int = 0
    alias_bytes: int = 0  # outputs written into donated arguments
    temp_bytes: int = 0
    code_bytes: int = 0
    host_bytes: int = 0  # pinned host memory (remat 'offload')
    compiler_flops: float = 0.0  # per chip, as the compiler counts them (a loop's body once)
    model_flops: float = 0.0  # per step, all chips, as MFU counts them (no recompute)
    executed_flops: float = 0.0  # per step, all chips, with remat's recompute
    compiler_seconds: float | None = None
    compile_seconds: float = 0.0
    error: str = ""  # the compiler's out-of-memory message, when it gives up
    # collective -> element type -> bytes of the full buffers it moves, a chip, as the
    # compiled program's text holds them (a loop's body once, like the FLOPs)
    collectives: dict = dataclasses.field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Peak HBM of the step: donated arguments share their buffers with the outputs."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

    def as_dict(self) -> dict:
        return dict(dataclasses.asdict(self), total_bytes=self.total_bytes)


_COLLECTIVE = re.compile(r"\s(all-gather|reduce-scatter|all-reduce|all-to-all|collective-permute)(-start)?\(")
_ARRAY = re.compile(r"\b(pred|[su](?:8|16|32|64)|f8e\w+|bf16|f16|f32|f64)\[([\d,]*)\]")
_ELEMENT_BYTES = {"pred": 1, "bf16": 2, "f16": 2, "f32": 4, "f64": 8}


def _element_bytes(dtype: str) -> int:
    if dtype in _ELEMENT_BYTES:
        return _ELEMENT_BYTES[dtype]
    return 1 if dtype.startswith("f8") else int(dtype[1:]) // 8


def collective_bytes(hlo_text: str) -> dict:
    """{collective: {element type: bytes}} of a compiled program's text: for each
    all-gather, reduce-scatter, all-reduce, all-to-all and collective-permute (the
    synchronous op or its -start), the largest array on its line, which is the whole
    buffer (an all-gather's result, a reduce-scatter's operand). A loop's body counts once."""
    out: dict = {}
    for line in hlo_text.splitlines():
        m = _COLLECTIVE.search(line)
        if not m:
            continue
        arrays = [(t, _element_bytes(t) * _prod(int(d) for d in dims.split(",") if d)) for t, dims in _ARRAY.findall(line)]
        if not arrays:
            continue
        dtype, size = max(arrays, key=lambda a: a[1])
        kinds = out.setdefault(m.group(1), {})
        kinds[dtype] = kinds.get(dtype, 0) + size
    return out


def read_compiled(report: StepReport, compiled) -> StepReport:
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    report.argument_bytes, report.output_bytes = mem.argument_size_in_bytes, mem.output_size_in_bytes
    report.alias_bytes, report.temp_bytes = mem.alias_size_in_bytes, mem.temp_size_in_bytes
    report.code_bytes = mem.generated_code_size_in_bytes
    report.host_bytes = mem.host_temp_size_in_bytes + mem.host_argument_size_in_bytes + mem.host_output_size_in_bytes
    report.compiler_flops = float(cost.get("flops", 0.0))
    seconds = float(cost.get(TIME_KEY, -1.0))
    report.compiler_seconds = seconds if seconds > 0 else None
    report.collectives = collective_bytes(compiled.as_text())
    return report


# The TPU compiler's out-of-memory verdicts: the whole program's HBM, or its
# temporaries alone (the arguments come on top).
_OOM_TOTAL = re.compile(r"Used ([\d.]+)([KMGT]?) of [\d.]+[KMGT]? hbm")
_OOM_TEMPORARIES = re.compile(r"HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds")
_OOM_HOST = re.compile(r"Used ([\d.]+)([KMGT]?) of ([\d.]+)([KMGT]?) host")
_SCALE = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def host_shortfall(report: StepReport) -> tuple[int, int] | None:
    """(needed, available) bytes of pinned host memory a chip, when the compiler
    gave up because the activations remat 'offload' moves there do not fit."""
    m = _OOM_HOST.search(report.error)
    if not m:
        return None
    return int(float(m.group(1)) * _SCALE[m.group(2)]), int(float(m.group(3)) * _SCALE[m.group(4)])


def needed_bytes(report: StepReport) -> int | None:
    """Per-chip HBM of a step: from the memory analysis, or from the compiler's
    out-of-memory error when it gave up."""
    if report.total_bytes:
        return report.total_bytes
    for pattern, plus_inputs in ((_OOM_TOTAL, False), (_OOM_TEMPORARIES, True)):
        m = pattern.search(report.error)
        if m:
            return int(float(m.group(1)) * _SCALE[m.group(2)]) + (sum(report.inputs.values()) if plus_inputs else 0)
    return None


REMAT_BY_MEMORY = ("none", "dots", "projections", "offload", "full")  # most activation memory first


def advice(report: StepReport, hbm_bytes: int, cfg, kind: str, num_devices: int | None = None) -> list[str]:
    """Which config knobs would bring a step that does not fit under `hbm_bytes`,
    each with about what it saves, the biggest saving first."""
    host = host_shortfall(report)
    if host:
        need, have = host
        return [
            f"(short by {(need - have) / GiB:.1f} GiB of host memory) the activations remat 'offload' keeps take about "
            f"{need / GiB:.1f} GiB of the {have / GiB:.0f} GiB of host memory a chip: train.grad_accum (now "
            f"{cfg.train.get('grad_accum', 1)}) splits each step into microbatches, each offloading its own; model.remat='full' "
            "keeps nothing; mesh.shape.context splits each clip's tokens over chips"
        ]
    need = needed_bytes(report) or 0
    if need and need <= hbm_bytes:
        return []
    over = need - hbm_bytes
    mesh = dict(cfg.mesh.shape)
    if num_devices:  # the sizes a -1 resolves to
        mesh = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(mesh, num_devices)))
    trains = kind in ("train", "distill")
    ema = report.inputs.get("ema", 0) if trains else 0
    state = sum(report.inputs.get(k, 0) for k in ("params", "opt_state", "teacher", "critic_params", "critic_opt_state")) + ema
    activations = max(need - state - report.inputs.get("batch", 0), 0)
    knobs = []  # (bytes saved, advice)
    what = {"train": "parameters, optimizer state and EMA", "distill": "the student's parameters, optimizer state and EMA, the teacher (and a critic)"}.get(
        kind, "parameters"
    )
    knobs.append(
        (
            state / 2,
            f"{what} take {state / GiB:.1f} GiB a chip and split over fsdp x tensor: doubling mesh.shape.fsdp "
            f"(now {mesh.get('fsdp')}) or mesh.shape.tensor (now {mesh.get('tensor')}) saves about {state / 2 / GiB:.1f} GiB",
        )
    )
    if ema:
        knobs.append((ema, f"train.ema_decay=0 drops the EMA copy ({ema / GiB:.1f} GiB)"))
    lines = [f"activations and temporaries take about {activations / GiB:.1f} GiB a chip"]
    if trains:
        policy = cfg.model.remat
        stronger = REMAT_BY_MEMORY[REMAT_BY_MEMORY.index(policy) + 1 :] if policy in REMAT_BY_MEMORY else ()
        if stronger:
            lines.append(f"model.remat={stronger[-1]!r} keeps the least (now {policy!r})")
        if kind == "train":
            lines.append(f"train.grad_accum (now {cfg.train.get('grad_accum', 1)}) splits each step into microbatches")
        lines.append(f"a smaller train.batch_size (now {cfg.train.batch_size}) holds fewer clips a chip")
    else:
        lines.append("a smaller --sample_batch holds fewer clips a chip")
    lines.append(f"mesh.shape.context (now {mesh.get('context', 1)}) splits each clip's tokens over chips")
    knobs.append((activations / 2, "; ".join(lines)))
    knobs.sort(key=lambda k: -k[0])
    return [f"(short by {over / GiB:.1f} GiB) " + knobs[0][1]] + [k[1] for k in knobs[1:]]


# ---------------------------------------------------------------------------
# The plan of one config on one set of devices.


def device_mesh(cfg, devices: Sequence, say: Callable[[str], None] = print) -> jax.sharding.Mesh:
    """`config.mesh.shape` over `devices` as the trainer lays it out; where a mesh
    axis is not a product of whole torus axes (fsdp=32 on a 4x4x4 slice), with
    torus axes split, which `jav.sharding.make_mesh` does not do (yet)."""
    try:
        return sharding.mesh_from_config(cfg.mesh, list(devices))
    except NotImplementedError:
        from jax.experimental import mesh_utils

        sizes = sharding.mesh_shape(dict(cfg.mesh.shape), len(devices))
        say(
            f"mesh {dict(zip(sharding.MESH_AXES, sizes))} splits torus axes: jav.sharding.make_mesh (and so the trainer) "
            "would refuse it; planned with mesh_utils.create_device_mesh(allow_split_physical_axes=True)"
        )
        grid = mesh_utils.create_device_mesh(sizes, list(devices), allow_split_physical_axes=True)
        return jax.sharding.Mesh(grid, sharding.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(sizes))


def recompute_flops(policy: str, forward: Callable[..., int], batch: int) -> int:
    """FLOPs the backward pass recomputes under the remat `policy` for `batch` clips:
    the layers' whole forward for `full`; attention's QK^T and AV for `dots` and
    `offload`, which keep matmul outputs against weights and recompute the rest
    (element-wise work is not counted); those and the MLPs' first layer for
    `projections`; nothing for `none`."""
    if policy == "full":
        return forward(batch=batch, part="layers")
    if policy in ("dots", "offload"):
        return forward(batch=batch, part="scores")
    if policy == "projections":  # the scores and the MLPs' first (wide) layer
        return forward(batch=batch, part="scores") + forward(batch=batch, part="mlp") // 2
    return 0


def plan(
    cfg,
    devices: Sequence,
    *,
    hbm_bytes: int,
    steps: Sequence[str] = ("train", "sample"),
    sample_batch: int | None = None,
    distill_teacher_steps: int | None = None,
    distill_grid_fraction: float | None = None,
    distill_dmd_weight: float | None = None,
    hlo_dir: str | None = None,
    say: Callable[[str], None] = print,
) -> dict:
    """Compiles the train step and / or one sampling step (and / or the distillation
    step, with `lower_distill_step`'s teacher_steps and grid_fraction)
    of `cfg` for `devices` (TPU compile-only devices, or any real ones) -> {step: StepReport}."""
    mesh = device_mesh(cfg, devices, say)
    layout = TokenLayout.from_config(cfg)
    num_devices = len(devices)
    text_len = text_length(cfg)
    forward = functools.partial(forward_flops, cfg.model, layout.num_tokens, text_len, grid=layout.grid)
    start = time.time()

    def log(msg):
        say(f"[{time.time() - start:6.0f} s] {msg}")

    reports = {}
    for step in steps:
        if step == "train":
            log(f"lowering the train step (batch {cfg.train.batch_size}, remat {cfg.model.remat!r})")
            lowered, inputs = lower_train_step(cfg, mesh)
            model = 3 * forward(batch=cfg.train.batch_size)
            executed = model + recompute_flops(cfg.model.remat, forward, cfg.train.batch_size)
            report = StepReport("train step", inputs, model_flops=model, executed_flops=executed)
        elif step == "distill":
            log(f"lowering the distillation step (batch {cfg.train.batch_size}: student, bfloat16 teacher)")
            lowered, inputs, phase = lower_distill_step(cfg, mesh, distill_teacher_steps, distill_grid_fraction, distill_dmd_weight)
            d = phase.cfg.distill
            targets = f"{f'{d.teacher_steps} teacher steps' if d.teacher_steps else 'MeanFlow JVP'} targets, grid fraction {d.grid_fraction}"
            dmd_clips = d.dmd.batch * phase.cfg.sample.steps if d.dmd.weight else 0  # the student's differentiable sampling
            if dmd_clips:
                targets += f", distribution matching on {d.dmd.batch} clips with a critic"
            # student forward and backward, the teacher's guided passes (times K), or the JVP (about two forwards)
            flops, _ = phase.cost(
                {
                    "video": jax.ShapeDtypeStruct((cfg.train.batch_size,) + tuple(layout.video_shape), jnp.float32),
                    "audio": jax.ShapeDtypeStruct((cfg.train.batch_size,) + tuple(layout.audio_shape), jnp.float32),
                }
            )
            # only the student's forward is under remat; the teacher runs no backward pass
            executed = flops + recompute_flops(cfg.model.remat, forward, cfg.train.batch_size + dmd_clips)
            report = StepReport(f"distillation step ({targets})", inputs, model_flops=flops, executed_flops=executed)
        elif step == "sample":
            batch = sample_batch or mesh.shape["data"] * mesh.shape["fsdp"]
            passes = samplers.passes_per_step(guidance_of(cfg))
            log(f"lowering one sampling step (batch {batch} x {passes} guidance passes)")
            lowered, inputs = lower_sample_step(cfg, mesh, batch)
            model = forward(batch=passes * batch)
            report = StepReport(f"sampling step (batch {batch} x {passes} passes)", inputs, model_flops=model, executed_flops=model)
        else:
            raise ValueError(f"--compile: unknown step {step!r}; use train, sample, distill")
        log(f"compiling the {report.label} for {num_devices} {devices[0].device_kind} device(s)")
        t = time.time()
        try:
            compiled = compile_with_progress(lowered, report.label, log)
            read_compiled(report, compiled)
            if hlo_dir:
                os.makedirs(hlo_dir, exist_ok=True)
                with open(os.path.join(hlo_dir, f"{step}.hlo.txt"), "w") as f:
                    f.write(compiled.as_text())
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            report.error = str(e).splitlines()[0]
        report.compile_seconds = time.time() - t
        log(f"compiled in {report.compile_seconds:.0f} s")
        reports[step] = report
    return reports


def step_seconds(report: StepReport, peak: float, num_devices: int) -> tuple[float, str]:
    """An estimate of one step's time -> (seconds, how it was made).

    The TPU compiler's estimate covers what its cost analysis counts, which
    takes a loop's body once: a layer scan's groups count as one. So its
    FLOPs over its seconds give the rate its cost model expects of this
    program's work, and the step takes the executed FLOPs at that rate.
    Without an estimate, the executed FLOPs at the chip's peak bound it below.
    """
    if report.compiler_seconds and report.compiler_flops:
        rate = report.compiler_flops / report.compiler_seconds  # per chip
        return (
            report.executed_flops / (rate * num_devices),
            f"the compiler's {TIME_KEY!r} ({report.compiler_seconds:.3g} s for the {report.compiler_flops:.3g} FLOPs it counts a chip, "
            f"{100 * rate / peak:.0f}% of peak) applied to the executed FLOPs",
        )
    return (
        report.executed_flops / (peak * num_devices),
        f"no estimate from the compiler ({TIME_KEY!r} < 0); the executed FLOPs at the chip's peak, a lower bound",
    )


def describe(report: StepReport, hbm_bytes: int, num_devices: int, peak: float, cfg, kind: str) -> list[str]:
    """The human-readable lines of one step's report."""
    g = lambda b: f"{b / GiB:8.2f} GiB"  # noqa: E731
    lines = [f"{report.label}, per chip:"]
    need = needed_bytes(report)
    if report.error:
        lines.append(f"  the compiler ran out of memory: {report.error}")
    else:
        inputs = ", ".join(f"{k} {v / GiB:.2f}" for k, v in report.inputs.items() if v)
        lines += [
            f"  arguments   {g(report.argument_bytes)}  ({inputs} GiB)",
            f"  outputs     {g(report.output_bytes)}  ({report.alias_bytes / GiB:.2f} GiB of them in donated arguments)",
            f"  temporaries {g(report.temp_bytes)}",
        ]
        if report.host_bytes:
            lines.append(f"  host memory {g(report.host_bytes)}  (offloaded activations)")
    host = host_shortfall(report)
    if host:
        lines.append(f"  host memory {g(host[0])}  of {host[1] / GiB:.0f} GiB a chip: DOES NOT FIT by {(host[0] - host[1]) / GiB:.1f} GiB")
    elif need:
        verdict = f"fits, {(hbm_bytes - need) / GiB:.1f} GiB free" if need <= hbm_bytes else f"DOES NOT FIT by {(need - hbm_bytes) / GiB:.1f} GiB"
        lines.append(f"  total       {g(need)}  of {hbm_bytes / GiB:.0f} GiB HBM: {verdict}")
    for tip in advice(report, hbm_bytes, cfg, kind, num_devices):
        lines.append(f"  to fit: {tip}")
    if report.error:
        return lines
    recompute = f"{report.executed_flops:.3e} with remat's recompute; " if report.executed_flops != report.model_flops else ""
    counted = dict(train="3x forward", distill="student 3x, the teacher's passes (times its steps), or MeanFlow's JVP 2x forward").get(kind, "forward")
    lines.append(
        f"  FLOPs       model {report.model_flops:.3e} per step ({counted}, jav.models.flops), "
        f"{recompute}the compiler counts {report.compiler_flops:.3e} per chip "
        f"({'the layer scan once: not a per-step total' if cfg.model.scan_layers else 'all layers'})"
    )
    if report.collectives:
        moved = "; ".join(
            f"{kind} " + ", ".join(f"{b / GiB:.2f} GiB {t}" for t, b in sorted(by_type.items())) for kind, by_type in sorted(report.collectives.items())
        )
        lines.append(f"  collectives {moved} a chip (whole buffers; the layer scan's body once)")
    seconds, how = step_seconds(report, peak, num_devices)
    mfu = 100 * report.model_flops / (seconds * peak * num_devices)
    if report.compiler_seconds:
        lines.append(f"  time        {how}: {seconds:.3f} s per step, MFU {mfu:.1f}%")
    else:
        lines.append(f"  time        {how}: at least {seconds:.3f} s per step, MFU at most {mfu:.1f}%")
    return lines


def summary(cfg, devices) -> str:
    params = nnx.state(nnx.eval_shape(lambda: AVDiT(cfg.model, rngs=nnx.Rngs(0))), nnx.Param)
    layout = TokenLayout.from_config(cfg)
    n = layout.num_tokens
    sizes = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(dict(cfg.mesh.shape), len(devices))))
    shards = sizes["data"] * sizes["fsdp"]
    return (
        f"model {param_count(params) / 1e9:.2f}B parameters ({cfg.model.dtype} compute, {cfg.model.param_dtype} parameters), "
        f"{n['video']} video + {n['audio']} audio tokens per clip, train.batch_size {cfg.train.batch_size} "
        f"({cfg.train.batch_size / shards:g} clips on each of the data x fsdp = {shards} batch shards), "
        f"grad_accum {cfg.train.get('grad_accum', 1)}, remat {cfg.model.remat!r}, attention kernel {cfg.model.get('attention', {}).get('kernel', 'xla')!r}"
    )


def main(argv) -> None:
    del argv
    from absl import flags

    FLAGS = flags.FLAGS
    cfg = schema.complete(FLAGS.config)  # every key the config leaves unsaid at its default
    topology = parse_topology(FLAGS.topology)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    say(
        f"jav.aot: {FLAGS['config'].config_filename} on {topology.name} = {topology.libtpu_name} "
        f"({topology.num_chips} chips, {topology.chip.hbm_bytes / GiB:.0f} GiB HBM each)"
    )
    devices = topology_devices(topology, FLAGS.slices)
    if FLAGS.slices > 1 and not dict(cfg.mesh.get("dcn", None) or {}):
        cfg.mesh.dcn = {"data": FLAGS.slices}
        say(f"{FLAGS.slices} slices: mesh.dcn unset, so the data axis spans them (mesh.dcn={{'data': {FLAGS.slices}}})")
    mesh_sizes = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(dict(cfg.mesh.shape), len(devices))))
    dcn = dict(cfg.mesh.get("dcn", None) or {})
    say(f"mesh {mesh_sizes}{f', over slices {dcn}' if dcn else ''}; {summary(cfg, devices)}")
    reports = plan(
        cfg,
        devices,
        hbm_bytes=topology.chip.hbm_bytes,
        steps=FLAGS.compile,
        sample_batch=FLAGS.sample_batch,
        hlo_dir=FLAGS.hlo_dir,
        distill_teacher_steps=FLAGS.distill_teacher_steps,
        distill_grid_fraction=FLAGS.distill_grid_fraction,
        distill_dmd_weight=FLAGS.distill_dmd_weight,
        say=say,
    )
    peak, source = perf.peak_flops(cfg.model.dtype, devices[0])
    say(f"peak {peak / 1e12:.0f} TFLOP/s per chip ({source})")
    for kind, report in reports.items():
        say("\n".join(describe(report, topology.chip.hbm_bytes, len(devices), peak, cfg, kind)))
    if FLAGS.json:
        record = dict(
            config=FLAGS["config"].config_filename,
            topology=topology.name,
            libtpu_topology=topology.libtpu_name,
            slices=FLAGS.slices,
            dcn=dcn,
            chips=len(devices),
            hbm_bytes=topology.chip.hbm_bytes,
            peak_flops=peak,
            mesh=mesh_sizes,
            batch_size=cfg.train.batch_size,
            grad_accum=cfg.train.grad_accum,
            remat=cfg.model.remat,
            attention=cfg.model.attention.kernel,
            reports={k: r.as_dict() for k, r in reports.items()},
        )
        with open(FLAGS.json, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "experiment config file (configs/NAME.py[:ARG])", lock_config=True)
    flags.DEFINE_string("topology", None, "TPU slice: v4-N, v5p-N, v5e-N, v6e-N (e.g. v5p-128), or libtpu's v5p:4x4x8")
    flags.DEFINE_integer(
        "slices",
        1,
        "how many such slices the job spans (multi-slice over the data-centre network; config.mesh.dcn says which axes cross it, default the data axis)",
    )
    flags.DEFINE_list(
        "compile",
        ["train", "sample"],
        "which steps to compile: train, sample, distill (a 4-step student of the config's "
        "model distilled from it, jav/train/distill.py, the teacher frozen in bfloat16)",
    )
    flags.DEFINE_integer(
        "distill_teacher_steps",
        None,
        "--compile distill: the student's targets by this many teacher Euler steps over each step (distill.teacher_steps; "
        "0: MeanFlow's target, one JVP through the student, which splash attention does not support; default: the config's, 4)",
    )
    flags.DEFINE_float("distill_grid_fraction", None, "--compile distill: distill.grid_fraction (default: the config's)")
    flags.DEFINE_float(
        "distill_dmd_weight", None, "--compile distill: distill.dmd.weight (> 0: distribution matching, the critic and its optimiser planned too; default 0)"
    )
    flags.DEFINE_integer("sample_batch", None, "clips per sampling step (default: one per batch shard, mesh data x fsdp)")
    flags.DEFINE_string("json", None, "append the reports to this JSON-lines file")
    flags.DEFINE_string("hlo_dir", None, "write each compiled program's text (optimised HLO) here as STEP.hlo.txt")
    flags.mark_flags_as_required(["config", "topology"])
    # compile-only: the host backend runs nothing, and libtpu must not try to own this machine's devices
    if "JAX_PLATFORMS" not in os.environ:
        jax.config.update("jax_platforms", "cpu")
    app.run(main)
