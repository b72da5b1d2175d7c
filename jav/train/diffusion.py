"""The diffusion phase: the joint audio-video DiT trained with the rectified-flow
loss (jav/train/step.py) on Grain shards, optionally in shape buckets, with MFU
counted from the model's FLOPs. `python -m jav.train` runs it when `cfg.phase` is
"diffusion" (the default); jav/train/loop.py is the loop it runs on.
"""

from __future__ import annotations

import pathlib
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from jav import schema, sharding
from jav.clip_tokens import TokenLayout
from jav.data.buckets import make_bucket_loader
from jav.data.loader import make_loader, text_input_for
from jav.evaluation import check_tasks, evaluate_model
from jav.flow import validate_flow_config
from jav.media import read_mp4
from jav.models import AVDiT, init_model, validate_config
from jav.models.attention_kernels import check_kernel
from jav.models.av_dit import LENGTH, attention_options
from jav.models.flops import forward_flops
from jav.plots import contact_sheet
from jav.train import loop
from jav.train.step import optimizer, train_step, trainable_mask, trainable_pattern


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
        raise ValueError(
            f"model.video.decoupled=True does not support context parallelism (mesh context={context}); set mesh.shape.context=1 or model.video.decoupled=False"
        )
    if context > 1 and options["context"] == "ulysses":
        heads_split = context * int(np.prod([mesh.shape[a] for a in sharding.mesh_axes_of("activation_heads", mesh, rules)]))
        if cfg.model.video.heads % heads_split:
            raise ValueError(
                f"model.attention.context='ulysses' needs model.video.heads={cfg.model.video.heads} divisible by "
                f"mesh context x tensor={heads_split}; use model.attention.context='ring' or change the heads or mesh.shape"
            )
    tensor = mesh.shape["tensor"]
    for m in ("video", "audio"):
        if cfg.model[m].heads % tensor:
            raise ValueError(f"model.{m}.heads={cfg.model[m].heads} is not divisible by mesh tensor={tensor}; change mesh.shape.tensor or the heads")
    batch_axes = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.train.batch_size % batch_axes:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by mesh data x fsdp={batch_axes}; change the batch or mesh.shape")
    accum = cfg.train.grad_accum
    if accum < 1 or cfg.train.batch_size % (accum * batch_axes):
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} is not divisible by train.grad_accum={accum} x mesh data x fsdp={batch_axes}: "
            "each microbatch must spread over every batch shard; change train.grad_accum or the batch"
        )
    if cfg.train.batch_size % jax.process_count():
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by {jax.process_count()} processes")
    if not cfg.data.get("dir"):
        raise ValueError("data.dir is not set: point it at shards written by `python -m jav.data.synthetic --out DIR --num N`")
    if cfg.train.eval_every:
        _validate_eval(cfg, mesh)


def trained_count(params, cfg) -> tuple[int, int]:
    """(parameters that train, all parameters) under train.trainable; raises when none train."""
    pattern = trainable_pattern(cfg)
    sizes = [(x.size, m) for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(trainable_mask(params, pattern)))]
    trained, total = sum(n for n, m in sizes if m), sum(n for n, _ in sizes)
    if not trained:
        raise ValueError(
            f"train.trainable={cfg.train.trainable!r} (pattern {pattern!r}) matches no parameter of the model: "
            "paths read like groups/layers/0/audio/mlp/up/kernel; widen the pattern, or use 'auto'"
        )
    return trained, total


def _eval_tasks(cfg) -> tuple[str, ...]:
    return tuple(t.strip() for t in str(cfg.eval.tasks).split(",") if t.strip())


def _validate_eval(cfg, mesh) -> None:
    """train.eval_every samples the bounce world's held-out captions in this process."""
    if "eval" not in cfg:
        raise ValueError("train.eval_every needs the config's eval block (num, tasks, media; configs/common.py): add it or set train.eval_every=0")
    if not all(k in cfg.data for k in ("canvas", "fps", "duration", "sample_rate")):
        raise ValueError(
            "train.eval_every samples and scores held-out bounce-world clips, and this config's data names no "
            "bounce world (data.canvas, fps, duration, sample_rate): set train.eval_every=0"
        )
    if jax.process_count() > 1:
        raise ValueError(
            f"train.eval_every samples in one process; this run has {jax.process_count()}: set train.eval_every=0 "
            "and score its checkpoints with `python -m jav.evaluate --workdir DIR`"
        )
    check_tasks(_eval_tasks(cfg))
    shards = sharding.batch_shards(mesh, tuple(tuple(r) for r in cfg.mesh.rules))
    if cfg.eval.num < 1 or cfg.eval.num % shards:
        raise ValueError(f"eval.num={cfg.eval.num} clips are sampled as one batch over the mesh's {shards} batch shards: make it a positive multiple of that")


def _curriculum(buckets):
    """data.buckets from a config -> jav.data.buckets' curriculum: a {bucket: weight} dict as is, or a
    list of [until_step, {bucket: weight}] stages (JSON and ConfigDict turn tuples into lists)."""
    if hasattr(buckets, "items"):
        return dict(buckets.items())
    return [(until, dict(weights.items())) for until, weights in buckets]


class DiffusionPhase(loop.Phase):
    """One network, "model": the AVDiT, its AdamW state and EMA (train.ema_decay)."""

    def validate(self, mesh):
        validate(self.cfg, mesh)

    def _model(self, mesh, rules):
        """(abstract parameters, their shardings on `mesh`); keeps the step's graphdef and options."""
        cfg = self.cfg
        self.tx = optimizer(cfg)
        self.flow_cfg = ml_collections.FrozenConfigDict(cfg.flow)
        self.layout = TokenLayout.from_config(cfg)
        self.text_len = cfg.model.text.max_len if cfg.model.text.encoder == "builtin" else cfg.data.get("text_len", cfg.model.text.max_len)
        self.layouts = {}  # clip shapes -> (layout, FLOPs per step, tokens per step); one per shape bucket
        self.graphdef, abstract = nnx.split(nnx.eval_shape(lambda: AVDiT(cfg.model, rngs=nnx.Rngs(0))))
        return abstract, sharding.param_shardings(abstract, mesh, rules)

    def init_state(self, run):
        self.run = run
        t = self.cfg.train
        _, shardings = self._model(run.mesh, run.rules)  # the parameters are made in place
        params = nnx.state(init_model(self.cfg.model, jax.random.key(t.seed), out_shardings=shardings))
        return {"model": loop.trainable(params, self.tx, run, ema=bool(t.ema_decay))}

    def abstract_state(self, mesh, rules):
        """`init_state`'s result as sharded ShapeDtypeStructs, made without memory (jav.aot)."""
        abstract, shardings = self._model(mesh, rules)
        params = jax.tree.map(lambda s, var: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), var), shardings, abstract)
        return {"model": loop.abstract_trainable(params, self.tx, ema=bool(self.cfg.train.ema_decay))}

    def step_options(self, layout: TokenLayout) -> dict:
        """The static arguments of jav.train.step.train_step for batches of `layout`."""
        t = self.cfg.train
        return dict(tx=self.tx, layout=layout, flow_cfg=self.flow_cfg, ema_decay=t.ema_decay, accum_steps=t.grad_accum, trainable=trainable_pattern(self.cfg))

    def describe(self, state):
        t, shards = self.cfg.train, self.run.shards
        trained, total = trained_count(state["model"].params, self.cfg)  # raises if train.trainable names no parameter
        return (
            f"{jax.process_count()} process(es) x {jax.local_device_count()} {jax.default_backend()} device(s) = {jax.device_count()}, "
            f"mesh {dict(self.run.mesh.shape)}; each step's {t.batch_size} clips are loaded in {shards} part(s) of {t.batch_size // shards}"
            + ("" if trained == total else f"; trains {trained:,} of {total:,} parameters (train.trainable={t.get('trainable', 'auto')!r})")
        )

    def stream(self, run):
        cfg, t = self.cfg, self.cfg.train
        kw = dict(
            batch_size=t.batch_size // run.shards,
            seed=t.seed,
            process_index=run.shard,
            process_count=run.shards,
            tokenizer_vocab=cfg.model.text.vocab_size,
            tokenizer_len=cfg.model.text.max_len,
            text_input=text_input_for(cfg.model.text),
            text_dim=cfg.model.text.dim,
        )
        if cfg.data.get("buckets"):  # every process draws the same shape bucket at each step
            return make_bucket_loader(cfg.data.dir, _curriculum(cfg.data.buckets), **kw)
        return make_loader(cfg.data.dir, **kw)

    def _layout_of(self, batch):
        shapes = (batch["video"].shape[1:], batch["audio"].shape[1:])
        if shapes not in self.layouts:
            cfg, batch_size = self.cfg, self.cfg.train.batch_size
            lay = self.layout if shapes == (self.layout.video_shape, self.layout.audio_shape) else TokenLayout.from_batch(cfg, *shapes)
            self.layouts[shapes] = (
                lay,
                3 * forward_flops(cfg.model, lay.num_tokens, self.text_len, batch=batch_size, grid=lay.grid),
                batch_size * sum(lay.num_tokens.values()),
            )
            if cfg.data.get("buckets"):
                self.run.say(
                    f"shape bucket {len(self.layouts)}: video {lay.video_shape} audio {lay.audio_shape} -> "
                    f"{lay.num_tokens['video']} + {lay.num_tokens['audio']} tokens (compiles the step for this shape)"
                )
        return self.layouts[shapes]

    def mfu_dtype(self):
        return self.cfg.model.dtype

    def cost(self, batch):
        return self._layout_of(batch)[1:]

    def step(self, state, batch, key, step):
        model = state["model"]
        params, opt_state, ema, metrics = train_step(
            self.graphdef, model.params, model.opt_state, model.ema, batch, key, **self.step_options(self._layout_of(batch)[0])
        )
        return {"model": loop.Trainable(params, opt_state, ema)}, metrics

    def evaluate(self, state, step, writer):
        """cfg.eval.num held-out captions per task (cfg.eval.tasks) sampled with the EMA weights (see
        configs/common.py) -> their mean metrics as "TASK_METRIC"; the clips go to
        WORKDIR/evals/step_NNNNNNN/TASK/ and the first cfg.eval.media of them to TensorBoard."""
        e, tasks = self.cfg.eval, _eval_tasks(self.cfg)
        trainable = state["model"]
        model = nnx.merge(self.graphdef, trainable.ema if trainable.ema is not None else trainable.params)
        out = pathlib.Path(str(self.run.workdir)) / "evals" / f"step_{step:07d}"
        started = time.time()
        summaries = evaluate_model(
            model, self.cfg, step, e.num, tasks=tasks, out=out, workdir=str(self.run.workdir), batch_size=e.num, show_steps=False, log=lambda _: None
        )
        scores = {f"{task}_{k}": v for task, s in summaries.items() for k, v in s["metrics"].items()}
        self.run.say(
            f"step {step}: held-out "
            + "; ".join(f"{task} sync {s['metrics']['sync_error_ms']:.0f} ms F1 {s['metrics']['event_f1']:.2f}" for task, s in summaries.items())
            + f" ({time.time() - started:.0f}s; {out})"
        )
        if writer is not None:
            for task in tasks:
                for i in range(min(e.media, e.num)):  # what a viewer gets: the written mp4, decoded
                    frames, fps, wave, rate = read_mp4(out / task / f"{i:03d}.mp4")
                    sheet = contact_sheet(frames, fps, wave, rate, out / task / f"{i:03d}.png")
                    writer.add_image(f"samples/{task}/{i}", sheet, step, dataformats="HWC")
                    writer.add_audio(f"samples/{task}/{i}", np.clip(wave, -1, 1), step, sample_rate=rate)
        return scores

    def log_line(self, step, m):
        held = " ".join(f"{k[5:]} {v:.3g}" for k, v in m.items() if k.startswith("eval_") and k.endswith(("sync_error_ms", "event_f1")))
        return (
            f"step {step:6d}/{self.cfg.train.steps}  loss {m['loss']:.4f} (video {m['loss_video']:.4f}, audio {m['loss_audio']:.4f})  "
            f"grad {m['grad_norm']:.3f}  {m['steps_per_s']:.2f} steps/s  {m['tokens_per_s']:.0f} tok/s  MFU {100 * m['mfu']:.1f}%  "
            f"skipped {m['skipped_total']}" + (f"  held-out {held}" if held else "")
        )


def train(cfg: ml_collections.ConfigDict, workdir: str, log=print) -> dict:
    """Trains the diffusion phase of `cfg` in `workdir` (resuming if it holds a checkpoint) -> last metrics."""
    cfg = schema.complete(cfg)  # every key the config leaves unsaid at its default
    return loop.run(cfg, workdir, DiffusionPhase(cfg), log)
