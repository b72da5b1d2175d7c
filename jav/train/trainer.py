"""The training loop: a mesh from the config, parameters created sharded, Grain
batches made global, the jitted step, metrics, checkpoints and resume.

A run lives in its workdir: rerunning the same command resumes from the latest
checkpoint (parameters, EMA, optimiser state, step and the data iterator's
position), so a run killed at any point continues with the batches it would
have seen. SIGTERM (preemption) saves and exits cleanly.
"""
from __future__ import annotations

import json
import pathlib
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from jav import perf, sharding
from jav.clip_tokens import TokenLayout
from jav.data.buckets import make_bucket_loader
from jav.data.loader import make_loader, text_input_for
from jav.flow import validate_flow_config
from jav.models import AVDiT, init_model, validate_config
from jav.models.attention_kernels import check_kernel
from jav.models.av_dit import LENGTH, attention_options
from jav.models.flops import forward_flops
from jav.train.checkpoint import Checkpointer, abstract_like, restore_params_from
from jav.train.step import init_opt_state, optimizer, train_step


def validate(cfg, mesh: jax.sharding.Mesh) -> None:
    """Config checks that need no compile, with errors naming the key and the fix."""
    validate_config(cfg.model)
    validate_flow_config(cfg.flow)
    options = attention_options(cfg.model)
    abstract = mesh if isinstance(mesh, jax.sharding.AbstractMesh) else mesh.abstract_mesh
    check_kernel(options["kernel"], abstract.abstract_device.platform if abstract.abstract_device else jax.default_backend())
    rules = tuple(tuple(r) for r in cfg.mesh.rules)
    context = int(np.prod([mesh.shape[a] for a in sharding.mesh_axes_of(LENGTH["video"], mesh, rules)]))
    if context > 1 and cfg.model.video.decoupled:
        raise ValueError(f"model.video.decoupled=True does not support context parallelism (mesh context={context}); "
                         "set mesh.shape.context=1 or model.video.decoupled=False")
    if context > 1 and options["context"] == "ulysses":
        heads_split = context * int(np.prod([mesh.shape[a] for a in sharding.mesh_axes_of("activation_heads", mesh, rules)]))
        if cfg.model.video.heads % heads_split:
            raise ValueError(f"model.attention.context='ulysses' needs model.video.heads={cfg.model.video.heads} divisible by "
                             f"mesh context x tensor={heads_split}; use model.attention.context='ring' or change the heads or mesh.shape")
    tensor = mesh.shape["tensor"]
    for m in ("video", "audio"):
        if cfg.model[m].heads % tensor:
            raise ValueError(f"model.{m}.heads={cfg.model[m].heads} is not divisible by mesh tensor={tensor}; change mesh.shape.tensor or the heads")
    batch_axes = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.train.batch_size % batch_axes:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by mesh data x fsdp={batch_axes}; change the batch or mesh.shape")
    accum = cfg.train.get("grad_accum", 1)
    if accum < 1 or cfg.train.batch_size % (accum * batch_axes):
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by train.grad_accum={accum} x mesh data x fsdp={batch_axes}: "
                         "each microbatch must spread over every batch shard; change train.grad_accum or the batch")
    if cfg.train.batch_size % jax.process_count():
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by {jax.process_count()} processes")
    if not cfg.data.get("dir"):
        raise ValueError("data.dir is not set: point it at shards written by `python -m jav.data.synthetic --out DIR --num N`")


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


def _curriculum(buckets):
    """data.buckets from a config -> jav.data.buckets' curriculum: a {bucket: weight} dict as is, or a
    list of [until_step, {bucket: weight}] stages (JSON and ConfigDict turn tuples into lists)."""
    if hasattr(buckets, "items"):
        return dict(buckets.items())
    return [(until, dict(weights.items())) for until, weights in buckets]


def train(cfg: ml_collections.ConfigDict, workdir: str, log=print) -> dict:
    """Trains `cfg` in `workdir` (resuming if it holds a checkpoint) -> last metrics."""
    workdir = pathlib.Path(workdir)
    mesh = sharding.mesh_from_config(cfg.mesh)
    rules = tuple(tuple(r) for r in cfg.mesh.rules)
    validate(cfg, mesh)
    # Every process runs this loop in step; one writes the log, the events and the JSON files.
    is_main = jax.process_index() == 0
    say = log if is_main else (lambda _: None)
    layout = TokenLayout.from_config(cfg)
    tx = optimizer(cfg)
    flow_cfg = ml_collections.FrozenConfigDict(cfg.flow)
    t = cfg.train

    # The abstract model and the sharded initial parameters are made before the
    # mesh context: under it, NNX would read the logical names as mesh axes.
    abstract = nnx.eval_shape(lambda: AVDiT(cfg.model, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    shardings = sharding.param_shardings(abstract_state, mesh, rules)
    params = nnx.state(init_model(cfg.model, jax.random.key(t.seed), out_shardings=shardings))

    with jax.set_mesh(mesh), sharding.logical_rules(rules):
        opt_state = init_opt_state(tx, params)
        ema = jax.tree.map(jnp.copy, params) if t.ema_decay else None

        shard, shards = sharding.data_shard(sharding.batch_sharding(mesh, rules, 1), t.batch_size)
        say(f"{jax.process_count()} process(es) x {jax.local_device_count()} {jax.default_backend()} device(s) = {jax.device_count()}, "
            f"mesh {dict(mesh.shape)}; each step's {t.batch_size} clips are loaded in {shards} part(s) of {t.batch_size // shards}")
        loader_kw = dict(batch_size=t.batch_size // shards, seed=t.seed, process_index=shard, process_count=shards,
                         tokenizer_vocab=cfg.model.text.vocab_size, tokenizer_len=cfg.model.text.max_len,
                         text_input=text_input_for(cfg.model.text), text_dim=cfg.model.text.dim)
        if cfg.data.get("buckets"):  # every process draws the same shape bucket at each step
            loader = make_bucket_loader(cfg.data.dir, _curriculum(cfg.data.buckets), **loader_kw)
        else:
            loader = make_loader(cfg.data.dir, **loader_kw)
        ckpt = Checkpointer(workdir, max_to_keep=t.keep_checkpoints)
        start = 0
        if ckpt.latest_step() is not None:
            restored = ckpt.restore(abstract_params=abstract_like(params), abstract_ema=abstract_like(ema), abstract_opt_state=abstract_like(opt_state))
            params, ema, opt_state, start = restored["params"], restored["ema"], restored["opt_state"], restored["step"]
            loader.set_state(restored["data_state"])
            say(f"resumed from {workdir} at step {start}")
        elif cfg.get("init_from"):
            run_dir, _, which = cfg.init_from.partition(":")
            params = restore_params_from(run_dir, use_ema=which == "ema", abstract_params=abstract_like(params))
            ema = jax.tree.map(jnp.copy, params) if t.ema_decay else None
            say(f"initialised from {cfg.init_from}")

        writer = None
        if is_main:
            from tensorboardX import SummaryWriter

            workdir.mkdir(parents=True, exist_ok=True)
            writer = SummaryWriter(str(workdir / "tensorboard"))
            (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
        peak = t.peak_flops_per_device
        if not peak:
            peak, source = perf.peak_flops(cfg.model.dtype)
            say(f"MFU against {peak / 1e12:.3g} TFLOP/s per device ({source}; set train.peak_flops_per_device to override)")
        text_len = cfg.model.text.max_len if cfg.model.text.encoder == "builtin" else cfg.data.get("text_len", cfg.model.text.max_len)
        layouts = {}  # clip shapes -> (layout, FLOPs per step, tokens per step); one per shape bucket

        def layout_of(batch):
            shapes = (batch["video"].shape[1:], batch["audio"].shape[1:])
            if shapes not in layouts:
                lay = layout if shapes == (layout.video_shape, layout.audio_shape) else TokenLayout.from_batch(cfg, *shapes)
                layouts[shapes] = (lay, 3 * forward_flops(cfg.model, lay.num_tokens, text_len, batch=t.batch_size, grid=lay.grid),
                                   t.batch_size * sum(lay.num_tokens.values()))
                if cfg.data.get("buckets"):
                    say(f"shape bucket {len(layouts)}: video {lay.video_shape} audio {lay.audio_shape} -> "
                        f"{lay.num_tokens['video']} + {lay.num_tokens['audio']} tokens (compiles the step for this shape)")
            return layouts[shapes]
        preempt = Preemption()
        base_key = jax.random.key(t.seed + 1)
        nonfinite_run, skipped_total, pending = 0, 0, None
        metrics, window_start, window_steps = {}, time.time(), 0
        step = start
        try:
            while step < t.steps:
                batch = sharding.global_batch(next(loader), mesh, rules, t.batch_size)
                step_layout, flops_per_step, tokens_per_step = layout_of(batch)
                params, opt_state, ema, m = train_step(graphdef, params, opt_state, ema, batch, jax.random.fold_in(base_key, step),
                                                       tx=tx, layout=step_layout, flow_cfg=flow_cfg, ema_decay=t.ema_decay,
                                                       accum_steps=t.get("grad_accum", 1))
                step += 1
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
                        ckpt.save(step, params=params, ema=ema, opt_state=opt_state, data_state=loader.get_state(), config=cfg, force=True)
                        raise nonfinite_error(ckpt, nonfinite_run, step, workdir)
                if step % t.log_every == 0 or step == t.steps:
                    elapsed = time.time() - window_start
                    rate = window_steps / elapsed if window_steps else float("nan")
                    metrics = {k: float(v) for k, v in m.items()}
                    metrics.update(steps_per_s=rate, tokens_per_s=rate * tokens_per_step, skipped_total=skipped_total + int(pending),
                                   mfu=rate * flops_per_step / (peak * jax.device_count()))
                    if is_main:
                        log(f"step {step:6d}/{t.steps}  loss {metrics['loss']:.4f} (video {metrics['loss_video']:.4f}, audio {metrics['loss_audio']:.4f})  "
                            f"grad {metrics['grad_norm']:.3f}  {rate:.2f} steps/s  {metrics['tokens_per_s']:.0f} tok/s  MFU {100 * metrics['mfu']:.1f}%  skipped {metrics['skipped_total']}")
                        record_metrics(writer, workdir, metrics, step)
                    window_start, window_steps = time.time(), 0
                stop = preempt.stop_at(step)
                if step % t.checkpoint_every == 0 or step == t.steps or stop:
                    ckpt.save(step, params=params, ema=ema, opt_state=opt_state, data_state=loader.get_state(), config=cfg, force=True)
                if stop:
                    say(f"SIGTERM: saved step {step} in {workdir}; rerun the same command to resume")
                    break
        finally:
            close_run(ckpt, preempt, writer)
    return final_metrics(workdir, metrics, step=step, start=start, total=t.steps, is_main=is_main, say=say)


def nonfinite_error(ckpt, run: int, step: int, workdir) -> FloatingPointError:
    """Once the last checkpoint is written: the error that stops a run after `run` steps
    in a row had a non-finite loss or gradient."""
    ckpt.wait()
    return FloatingPointError(f"{run} steps in a row had a non-finite loss or gradient (by step {step}); "
                              f"saved a checkpoint in {workdir}. Lower optim.lr or check the data.")


def record_metrics(writer, workdir: pathlib.Path, metrics: dict, step: int) -> None:
    """One logged step's metrics into TensorBoard (finite values: a rate is NaN when the
    step after a resume is the last) and as a line of workdir/metrics.jsonl."""
    for k, v in metrics.items():
        if np.isfinite(v):
            writer.add_scalar(k, v, step)
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(dict(metrics, step=step)) + "\n")


def close_run(ckpt, preempt, writer) -> None:
    """End of a training loop, however it ends: finish the last checkpoint write, give
    SIGTERM back, close the TensorBoard writer (None on processes that log nothing)."""
    ckpt.wait()
    ckpt.close()
    preempt.restore()
    if writer is not None:
        writer.close()


def final_metrics(workdir: pathlib.Path, metrics: dict, *, step: int, start: int, total: int, is_main: bool, say) -> dict:
    """A run's last metrics, kept in workdir/last_metrics.json; a finished run started again
    (nothing trained) reports the ones it kept."""
    last = workdir / "last_metrics.json"
    if step == start and last.exists():
        say(f"{workdir} is already at step {step} of {total}; nothing to train")
        return json.loads(last.read_text())
    if is_main:
        last.write_text(json.dumps(dict(metrics, step=step), indent=2))
    return dict(metrics, step=step)
