"""The one training loop every phase runs on, and the interface a phase fills in.

`run(cfg, workdir, phase)` owns what all phases share: the mesh from cfg.mesh,
the config check, the state made sharded, the data stream made global and its
position kept in checkpoints, the step, the count of skipped (non-finite)
steps read one step late and the stop after too many in a row, progress lines with steps/s (and MFU where the phase counts
FLOPs), metrics.jsonl and TensorBoard, a profiler trace of the steps
`train.profile_steps` = [first, end) names (TensorBoard's profile plugin or
Perfetto read WORKDIR/profile), checkpoints every train.checkpoint_every
steps, at the end and on SIGTERM, resume, `init_from`, and every process
stepping in lockstep on a multi-host mesh. A run lives in its workdir:
rerunning the same command resumes from the latest checkpoint, so a run killed
at any point continues with the batches it would have seen. The workdir may be
on Google Cloud Storage (`gs://bucket/run`): its files go through `etils.epath`,
and TensorBoard's event files too (tensorboardX is given an epath writer for gs://).

A phase (`Phase`, subclassed once per phase: jav/train/diffusion.py,
jav/train/autoencoder.py) supplies only what differs: its config check, its
networks' initial state, its data stream, its jitted step, its log line and,
optionally, the FLOPs of a step and a held-out evaluation. Its state is a dict
of named networks, each `Trainable` (parameters, optimiser state, optional EMA)
or `Frozen` (parameters only: a teacher loaded from another run). A checkpoint
keeps the layout jav.runs reads: the primary network's trees as the items
`params`, `ema` and `opt_state`; every other trainable network NAME in the item
`extra` as NAME, NAME_opt and NAME_ema (when it keeps one); frozen networks are
not saved, the phase makes or loads them again on every start.
"""

from __future__ import annotations

import abc
import dataclasses
import io
import json
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils
from tensorboardX import SummaryWriter, record_writer

from jav import perf, schema, sharding
from jav.train.checkpoint import Checkpointer, abstract_like, is_remote, restore_params_from
from jav.train.step import init_opt_state, opt_state_shardings

# Metrics the loop adds to a phase's step metrics at a logged step.
LOOP_METRICS = ("steps_per_s", "tokens_per_s", "mfu", "skipped_total", "wall_s")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Trainable:
    """A network being trained: its parameters, its optimiser's state and an EMA
    of the parameters (None where the phase keeps none)."""

    params: Any
    opt_state: Any
    ema: Any = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Frozen:
    """A network a phase reads and never updates (a distillation teacher). Not
    checkpointed: the phase makes or loads it in `init_state` on every start."""

    params: Any


State = dict  # {network name: Trainable | Frozen}


@dataclasses.dataclass(frozen=True)
class Run:
    """What a phase may need to know about the run it is part of."""

    cfg: ml_collections.ConfigDict
    workdir: epath.Path
    mesh: jax.sharding.Mesh
    rules: tuple
    shard: int  # this process loads part `shard` of `shards` of each global batch
    shards: int
    say: Callable[[str], None]  # a line for the log (a no-op on all processes but the first)


def trainable(params, tx: optax.GradientTransformation, run: Run, *, ema: bool) -> Trainable:
    """A network's training state from its sharded parameters: optimiser moments
    placed like the parameters, and an EMA starting at them when `ema`."""
    with jax.set_mesh(run.mesh), sharding.logical_rules(run.rules):
        return Trainable(params, init_opt_state(tx, params), jax.tree.map(jnp.copy, params) if ema else None)


def abstract_trainable(params, tx: optax.GradientTransformation, *, ema: bool) -> Trainable:
    """`trainable`'s result as sharded ShapeDtypeStructs, from abstract sharded
    parameters: what a pod plan (jav.aot) compiles the step on."""
    opt_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), jax.eval_shape(tx.init, params), opt_state_shardings(tx, params))
    return Trainable(params, opt_state, params if ema else None)


class Phase(abc.ABC):
    """What a training phase supplies to `run`; subclass it, define the four
    abstract methods and register the class in jav/train/__main__.py's PHASES.
    Made from the config (cheaply: nothing is checked or built before
    `validate`), then called in this order."""

    primary = "model"  # the network whose trees are the checkpoint's params / ema / opt_state (init_from and jav.runs read it)

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.cfg = cfg

    @abc.abstractmethod
    def validate(self, mesh: jax.sharding.Mesh) -> None:
        """Config checks that need no compile; errors name the key and the fix."""

    @abc.abstractmethod
    def init_state(self, run: Run) -> State:
        """The networks' initial state, sharded on run.mesh. Called once, before the
        mesh context (NNX would read logical axis names as mesh axes under it); the
        phase keeps here what `step` needs (graphdefs, optimisers)."""

    @abc.abstractmethod
    def stream(self, run: Run):
        """This process's part of each global batch: an iterator of dicts of numpy
        arrays with get_state() / set_state(state) (kept in every checkpoint)."""

    @abc.abstractmethod
    def step(self, state: State, batch: dict, key: jax.Array, step: int) -> tuple[State, dict]:
        """One training step (jitted, donating `state`) -> (state, metrics). Metrics
        hold 'loss' and 'skipped' (1 where a non-finite loss or gradient left the
        state as it was). `step` is the number of steps taken before this one."""

    def log_line(self, step: int, metrics: dict) -> str:
        """The progress line of a logged step (metrics: the step's, then LOOP_METRICS)."""
        return f"step {step:6d}/{self.cfg.train.steps}  loss {metrics['loss']:.4f}  {metrics['steps_per_s']:.2f} steps/s"

    def describe(self, state: State) -> str | None:
        """A line said once the state is made: what is trained, on what."""
        return None

    def mfu_dtype(self) -> str | None:
        """The dtype whose peak FLOP rate MFU is measured against; None: no MFU (no `cost`)."""
        return None

    def cost(self, batch: dict) -> tuple[float, float] | None:
        """(FLOPs, tokens) of one step on `batch`, for MFU and tokens/s; None if not counted."""
        return None

    def evaluate(self, state: State, step: int, writer) -> dict:
        """Held-out scores every train.eval_every steps, logged with an 'eval_' prefix. `writer`:
        the run's TensorBoard writer for pictures and sound (None on processes that log nothing)."""
        return {}


class Profile:
    """`train.profile_steps` = [first, end): a `jax.profiler` trace of the steps
    numbered first .. end - 1 (0 is the first step of a run, which compiles) in
    `directory`; empty: none. A resumed run traces what is left of the window."""

    def __init__(self, window, directory: epath.Path, say):
        if window and (len(window) != 2 or not 0 <= window[0] < window[1]):
            raise ValueError(f"train.profile_steps={list(window)} must be [first, end) with 0 <= first < end, or [] for no trace")
        self.window, self.directory, self.say, self.on = tuple(window), directory, say, False

    def before(self, step: int) -> None:
        if self.window and self.window[0] <= step < self.window[1] and not self.on:
            jax.profiler.start_trace(str(self.directory))
            self.on = True

    def after(self, step: int, metrics) -> None:
        if self.on and step >= self.window[1]:
            jax.block_until_ready(metrics)
            self.close()
            self.say(f"profiled steps {self.window[0]}..{self.window[1] - 1} into {self.directory} (TensorBoard's profile plugin or Perfetto)")

    def close(self) -> None:
        if self.on:
            jax.profiler.stop_trace()
            self.on = False


class Preemption:
    """Turns SIGTERM into a step at which the loop saves and stops.

    With several processes, each must stop at the same step, or the ones still
    stepping wait forever in a collective for those that left. JAX's
    preemption service (started by `jax.distributed.initialize`) catches
    SIGTERM on any process, and every process agrees on the first step that all
    can still reach; a Python handler here would take the signal from it.
    """

    def __init__(self):
        self._shared = jax.process_count() > 1
        self._requested = False
        if not self._shared:
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        self._requested = True

    def stop_at(self, step: int) -> bool:
        """Whether to save and stop after `step`; call once per step, on every process."""
        if self._shared:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested

    def restore(self):
        if not self._shared:
            signal.signal(signal.SIGTERM, self._previous)


# ---- The checkpoint layout of a state


def _trees(phase: Phase, state: State) -> dict:
    """A state -> the checkpoint's params / ema / opt_state / extra trees."""
    main = state[phase.primary]
    if not isinstance(main, Trainable):
        raise TypeError(f"{type(phase).__name__}.primary={phase.primary!r} must name a Trainable network, not {type(main).__name__}")
    extra = {}
    for name, net in state.items():
        if name == phase.primary or isinstance(net, Frozen):
            continue
        trees = {name: net.params, f"{name}_opt": net.opt_state}
        if net.ema is not None:
            trees[f"{name}_ema"] = net.ema
        if clash := set(trees) & set(extra):
            raise ValueError(
                f"{type(phase).__name__}'s networks {sorted(state)} collide in the checkpoint's extra item at {sorted(clash)} "
                "(network NAME is kept as NAME, NAME_opt, NAME_ema); rename one"
            )
        extra.update(trees)
    return dict(params=main.params, ema=main.ema, opt_state=main.opt_state, extra=extra or None)


def _from_trees(phase: Phase, state: State, trees: dict) -> State:
    out = dict(state)
    out[phase.primary] = Trainable(trees["params"], trees["opt_state"], trees["ema"])
    for name, net in state.items():
        if name != phase.primary and isinstance(net, Trainable):
            extra = trees["extra"]
            out[name] = Trainable(extra[name], extra[f"{name}_opt"], extra.get(f"{name}_ema"))
    return out


def _save(ckpt: Checkpointer, step: int, phase: Phase, state: State, stream, cfg) -> None:
    ckpt.save(step, **_trees(phase, state), data_state=stream.get_state(), config=cfg, force=True)


def _restore(ckpt: Checkpointer, phase: Phase, state: State) -> dict:
    """The latest checkpoint read onto the shardings of `state` -> Checkpointer.restore's dict, state included."""
    trees = _trees(phase, state)
    restored = ckpt.restore(
        abstract_params=abstract_like(trees["params"]),
        abstract_ema=abstract_like(trees["ema"]),
        abstract_opt_state=abstract_like(trees["opt_state"]),
        abstract_extra=abstract_like(trees["extra"]) if trees["extra"] else None,
    )
    return dict(restored, state=_from_trees(phase, state, restored))


def _init_from(cfg, phase: Phase, state: State, say) -> State:
    """`init_from=DIR[:ema]`: the primary network starts from another run's weights (its EMA restarts
    there too). LoRA adapters (nnx.LoRAParam) the other run does not have start as made (B = 0: the
    model computes what the other run's weights compute)."""
    run_dir, _, which = cfg.init_from.partition(":")
    main = state[phase.primary]
    adapters, base = nnx.split_state(main.params, nnx.LoRAParam, ...)
    if jax.tree.leaves(adapters) and not _has_adapters(run_dir):
        params = restore_params_from(run_dir, use_ema=which == "ema", abstract_params=abstract_like(base))
        params = nnx.merge_state(params, adapters)
        say(f"LoRA adapters start fresh: {sum(x.size for x in jax.tree.leaves(adapters)):,} parameters on the weights of {run_dir}")
    else:
        params = restore_params_from(run_dir, use_ema=which == "ema", abstract_params=abstract_like(main.params))
    ema = jax.tree.map(jnp.copy, params) if main.ema is not None else None
    return dict(state, **{phase.primary: Trainable(params, main.opt_state, ema)})


def _has_adapters(run_dir) -> bool:
    """Whether a run's model has LoRA adapters (its config.json's model.lora.rank)."""
    path = epath.Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"init_from={run_dir}: no config.json there; name a run directory written by jav.train or jav.convert")
    lora = json.loads(path.read_text()).get("model", {}).get("lora") or {}
    return bool(lora.get("rank", 0))


# ---- The loop


def run(cfg: ml_collections.ConfigDict, workdir, phase: Phase, log=print) -> dict:
    """Trains `phase` as `cfg` says in `workdir` (resuming if it holds a checkpoint) -> last metrics."""
    cfg = schema.complete(cfg)  # the loop's own keys (train.*, init_from) at their defaults where unsaid
    workdir = epath.Path(workdir)
    mesh = sharding.mesh_from_config(cfg.mesh)
    rules = tuple(tuple(r) for r in cfg.mesh.rules)
    phase.validate(mesh)
    # Every process runs this loop in step; one writes the log, the events and the JSON files.
    is_main = jax.process_index() == 0
    say = log if is_main else (lambda _: None)
    t = cfg.train
    shard, shards = sharding.data_shard(sharding.batch_sharding(mesh, rules, 1), t.batch_size)
    ctx = Run(cfg, workdir, mesh, rules, shard, shards, say)
    state = phase.init_state(ctx)
    _trees(phase, state)  # a state the checkpoint cannot hold fails now, not at the first save
    if (line := phase.describe(state)) is not None:
        say(line)

    with jax.set_mesh(mesh), sharding.logical_rules(rules):
        stream = phase.stream(ctx)
        ckpt = Checkpointer(workdir, max_to_keep=t.keep_checkpoints)
        start = 0
        if ckpt.latest_step() is not None:
            restored = _restore(ckpt, phase, state)
            state, start = restored["state"], restored["step"]
            stream.set_state(restored["data_state"])
            say(f"resumed from {workdir} at step {start}")
        elif cfg.init_from:
            state = _init_from(cfg, phase, state, say)
            say(f"initialised from {cfg.init_from}")

        writer = None
        if is_main:
            workdir.mkdir(parents=True, exist_ok=True)
            writer = SummaryWriter(str(workdir / "tensorboard"))
            (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
        peak = t.peak_flops_per_device
        if phase.mfu_dtype() is not None and not peak:
            peak, source = perf.peak_flops(phase.mfu_dtype())
            say(f"MFU against {peak / 1e12:.3g} TFLOP/s per device ({source}; set train.peak_flops_per_device to override)")
        preempt = Preemption()
        profile = Profile(t.profile_steps or (), workdir / "profile", say)
        base_key = jax.random.key(t.seed + 1)
        nonfinite_run, skipped_total, pending = 0, 0, None
        metrics, window_start, window_steps, run_start = {}, time.time(), 0, time.time()
        step = start
        try:
            while step < t.steps:
                batch = sharding.global_batch(next(stream), mesh, rules, t.batch_size)
                cost = phase.cost(batch)
                profile.before(step)
                state, m = phase.step(state, batch, jax.random.fold_in(base_key, step), step)
                step += 1
                profile.after(step, m)
                window_steps += 1
                if step == start + 1:  # the first step compiles: keep it out of the rates
                    jax.block_until_ready(m)
                    say(f"compiled and ran step {step} in {time.time() - window_start:.1f}s")
                    window_start, window_steps = time.time(), 0
                # `skipped` is read one step late, after the next step is queued, so
                # that the host never waits on the device just to count.
                pending, previous = m["skipped"], pending
                if previous is not None:
                    skipped = int(previous)
                    skipped_total += skipped
                    nonfinite_run = nonfinite_run + 1 if skipped else 0
                    if nonfinite_run >= t.max_nonfinite:
                        _save(ckpt, step, phase, state, stream, cfg)
                        raise nonfinite_error(ckpt, nonfinite_run, step, workdir)
                evaluated = {}
                if t.eval_every and (step % t.eval_every == 0 or step == t.steps):
                    evaluated = {f"eval_{k}": float(v) for k, v in phase.evaluate(state, step, writer).items()}
                if step % t.log_every == 0 or step == t.steps or evaluated:
                    metrics = {k: float(v) for k, v in m.items()}  # waits for the step: the window's time is its steps' time
                    elapsed = time.time() - window_start
                    rate = window_steps / elapsed if window_steps else float("nan")
                    metrics.update(evaluated, steps_per_s=rate, skipped_total=skipped_total + int(pending), wall_s=time.time() - run_start)
                    if cost is not None:
                        flops, tokens = cost
                        metrics.update(tokens_per_s=rate * tokens, mfu=rate * flops / (peak * jax.device_count()))
                    if is_main:
                        log(phase.log_line(step, metrics))
                        record_metrics(writer, workdir, metrics, step)
                    window_start, window_steps = time.time(), 0
                stop = preempt.stop_at(step)
                if step % t.checkpoint_every == 0 or step == t.steps or stop:
                    _save(ckpt, step, phase, state, stream, cfg)
                if stop:
                    say(f"SIGTERM: saved step {step} in {workdir}; rerun the same command to resume")
                    break
        finally:
            profile.close()
            close_run(ckpt, preempt, writer)
    return final_metrics(workdir, metrics, step=step, start=start, total=t.steps, is_main=is_main, say=say)


def nonfinite_error(ckpt, run: int, step: int, workdir) -> FloatingPointError:
    """Once the last checkpoint is written: the error that stops a run after `run` steps
    in a row had a non-finite loss or gradient."""
    ckpt.wait()
    return FloatingPointError(
        f"{run} steps in a row had a non-finite loss or gradient (by step {step}); saved a checkpoint in {workdir}. Lower optim.lr or check the data."
    )


def record_metrics(writer, workdir: epath.Path, metrics: dict, step: int) -> None:
    """One logged step's metrics into TensorBoard (finite values: a rate is NaN when the
    step after a resume is the last) and as a line of workdir/metrics.jsonl."""
    for k, v in metrics.items():
        if np.isfinite(v):
            writer.add_scalar(k, v, step)
    path, line = workdir / "metrics.jsonl", json.dumps(dict(metrics, step=step)) + "\n"
    if is_remote(path):  # an object is written whole: appending is rewriting
        path.write_text((path.read_text() if path.exists() else "") + line)
    else:
        with path.open("a") as f:
            f.write(line)


class _EventFile:
    """An event file on an object store through epath. Objects cannot be appended
    to, so each flush rewrites the whole file, as tensorboardX's own gs:// writer
    does (that one needs google-cloud-storage and reaches the bucket directly)."""

    def __init__(self, path: str):
        self.path, self.buffer = epath.Path(path), io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    def flush(self) -> None:
        self.path.write_bytes(self.buffer.getvalue())

    def close(self) -> None:
        self.flush()


class _EventFiles:
    """tensorboardX's writer factory interface, for gs:// log directories."""

    def open(self, path: str) -> _EventFile:
        return _EventFile(path)

    def directory_check(self, path: str) -> None:
        epath.Path(path).mkdir(parents=True, exist_ok=True)


record_writer.register_writer_factory("gs", _EventFiles())


def close_run(ckpt, preempt, writer) -> None:
    """End of a training loop, however it ends: finish the last checkpoint write, give
    SIGTERM back, close the TensorBoard writer (None on processes that log nothing)."""
    ckpt.wait()
    ckpt.close()
    preempt.restore()
    if writer is not None:
        writer.close()


def final_metrics(workdir: epath.Path, metrics: dict, *, step: int, start: int, total: int, is_main: bool, say) -> dict:
    """A run's last metrics, kept in workdir/last_metrics.json; a finished run started again
    (nothing trained) reports the ones it kept."""
    last = workdir / "last_metrics.json"
    if step == start and last.exists():
        say(f"{workdir} is already at step {step} of {total}; nothing to train")
        return json.loads(last.read_text())
    if is_main:
        last.write_text(json.dumps(dict(metrics, step=step), indent=2))
    return dict(metrics, step=step)
