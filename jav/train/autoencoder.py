"""The autoencoder phase: trains a video VAE, audio VAE or vocoder with the
diffusion trainer's machinery (mesh, sharded parameters, Orbax checkpoints with
the data stream's position, resume, SIGTERM save-and-exit, metrics.jsonl and
TensorBoard). `python -m jav.train` runs it when `cfg.phase == "autoencoder"`.

`cfg.model.kind` names the model's module (jav.models.autoencoders.MODELS),
imported when needed. A module provides
  init_model(model_cfg, key, out_shardings=None) -> nnx.Module
      (model_cfg is the experiment's cfg.model),
  training_loss(model, batch, key, cfg) -> (scalar loss, dict of scalar metrics)
      (cfg is the whole experiment config, frozen; batch holds "video"
      [B, T, H, W, 3], "logmel" [B, Ta, n_mels] and / or "wave" [B, S]),
and optionally
  training_outputs(model, batch, key, cfg) -> (loss, metrics, (target, output)),
      needed for the adversarial term (loss.adv_weight > 0),
  evaluate(model, batch, cfg) -> dict of scalars, scored on held-out clips
      with the EMA weights every train.eval_every steps ("eval_" prefixed).

`jav.runs.load_autoencoder(workdir)` gives back a trained run's config and model.
"""
from __future__ import annotations

import functools
import importlib
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jav import sharding
from jav.data.bounce_stream import BounceStream, heldout_batch
from jav.data.loader import make_loader
from jav.models.autoencoders import MODELS, model_module
from jav.train.checkpoint import Checkpointer, abstract_like, restore_params_from
from jav.train.discriminator import PatchDiscriminator, as_images, hinge_discriminator, hinge_generator
from jav.train.step import init_opt_state, optimizer
from jav.train.trainer import Preemption, close_run, final_metrics, nonfinite_error, record_metrics


def validate(cfg, mesh: jax.sharding.Mesh) -> None:
    """Config checks before any compile, with errors naming the key and the fix."""
    module = model_module(cfg.model.get("kind", None))
    batch_axes = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.train.batch_size % batch_axes:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by mesh data x fsdp={batch_axes}; "
                         "change the batch or mesh.shape")
    if cfg.data.source not in ("bounce", "shards"):
        raise ValueError(f"data.source={cfg.data.source!r}: use 'bounce' (made on the fly) or 'shards' (data.dir)")
    if cfg.loss.get("adv_weight", 0.0) and not hasattr(module, "training_outputs"):
        raise ValueError(f"loss.adv_weight={cfg.loss.adv_weight} needs {MODELS[cfg.model.kind]}.training_outputs; set it to 0")


# ---- Data

class _ShardStream:
    """Shards from jav.data.loader as autoencoder batches: video cropped to 1 + 4k
    frames, the record's audio (a normalised log-mel) as "logmel"."""

    def __init__(self, data_cfg, batch_size: int, seed: int, index: int, count: int):
        self.loader = make_loader(data_cfg.dir, batch_size=batch_size // count, seed=seed, process_index=index, process_count=count)
        self.time_factor = int(data_cfg.get("time_factor", 4))

    def __next__(self) -> dict:
        b = next(self.loader)
        t = b["video"].shape[1]
        return {"video": b["video"][:, :1 + (t - 1) // self.time_factor * self.time_factor], "logmel": b["audio"]}

    def get_state(self):
        return self.loader.get_state()

    def set_state(self, state):
        self.loader.set_state(state)


def make_stream(cfg, index: int = 0, count: int = 1):
    """The training stream this process reads (its rows of each global batch)."""
    if cfg.data.source == "bounce":
        return BounceStream(cfg.data, cfg.train.batch_size, index=index, count=count)
    if not cfg.data.get("dir"):
        raise ValueError("data.source='shards' needs data.dir (shards from `python -m jav.data.synthetic`)")
    return _ShardStream(cfg.data, cfg.train.batch_size, cfg.train.seed, index, count)


# ---- The step

def _keep_if(ok, new, old):
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


@functools.partial(jax.jit, static_argnames=("graphdef", "module_name", "cfg", "tx", "disc_graphdef", "disc_tx"),
                   donate_argnums=(1, 2, 3, 4, 5))
def train_step(graphdef, params, opt_state, ema, disc, disc_opt, batch, key, *, module_name, cfg, tx,
               disc_graphdef=None, disc_tx=None):
    """One optimiser step of the autoencoder (and of the discriminator when `disc`
    is given) -> (params, opt_state, ema, disc, disc_opt, metrics).

    A non-finite loss or gradient leaves every state as it was and reports skipped = 1.
    """
    module = importlib.import_module(module_name)
    adversarial = disc is not None

    def loss_fn(p):
        model = nnx.merge(graphdef, p)
        if not adversarial:
            loss, metrics = module.training_loss(model, batch, key, cfg)
            return loss, (metrics, None)
        loss, metrics, (target, output) = module.training_outputs(model, batch, key, cfg)
        gen = hinge_generator(nnx.merge(disc_graphdef, disc)(as_images(output)))
        metrics = dict(metrics, adv_generator=gen)
        return loss + cfg.loss.adv_weight * gen, (metrics, (target, output))

    (loss, (metrics, pair)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, opt_state, params)
    params_out = _keep_if(ok, optax.apply_updates(params, updates), params)
    opt_state = _keep_if(ok, new_opt, opt_state)
    if ema is not None:
        d = cfg.train.ema_decay
        ema = _keep_if(ok, jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params_out), ema)
    if adversarial:
        target, output = pair

        def disc_loss_fn(dp):
            d = nnx.merge(disc_graphdef, dp)
            return hinge_discriminator(d(as_images(target)), d(as_images(jax.lax.stop_gradient(output))))

        d_loss, d_grads = jax.value_and_grad(disc_loss_fn)(disc)
        d_updates, new_disc_opt = disc_tx.update(d_grads, disc_opt, disc)
        d_ok = ok & jnp.isfinite(d_loss)
        disc = _keep_if(d_ok, optax.apply_updates(disc, d_updates), disc)
        disc_opt = _keep_if(d_ok, new_disc_opt, disc_opt)
        metrics = dict(metrics, adv_discriminator=d_loss)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, skipped=(~ok).astype(jnp.int32))
    return params_out, opt_state, ema, disc, disc_opt, metrics


@functools.partial(jax.jit, static_argnames=("graphdef", "module_name", "cfg"))
def eval_step(graphdef, params, batch, *, module_name, cfg) -> dict:
    return importlib.import_module(module_name).evaluate(nnx.merge(graphdef, params), batch, cfg)


def _discriminator(cfg, example: np.ndarray, key: jax.Array, mesh):
    """(graphdef, replicated params, tx, opt_state) of the patch discriminator."""
    channels = as_images(jnp.zeros((1,) + example.shape[1:])).shape[-1]
    disc = PatchDiscriminator(channels, cfg.loss.disc_width, rngs=nnx.Rngs(params=key))
    graphdef, state = nnx.split(disc)
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.P()))
    tx = optax.adam(cfg.loss.disc_lr, b1=0.5, b2=0.9)
    return graphdef, state, tx, init_opt_state(tx, state)


# ---- The loop

def train(cfg: ml_collections.ConfigDict, workdir: str, log=print) -> dict:
    """Trains the autoencoder of `cfg` in `workdir` (resuming if it holds a checkpoint) -> last metrics."""
    workdir = pathlib.Path(workdir)
    mesh = sharding.mesh_from_config(cfg.mesh)
    rules = tuple(tuple(r) for r in cfg.mesh.rules)
    validate(cfg, mesh)
    module_name = MODELS[cfg.model.kind]
    module = model_module(cfg.model.kind)
    is_main = jax.process_index() == 0
    say = log if is_main else (lambda _: None)
    t = cfg.train
    frozen = ml_collections.FrozenConfigDict(cfg)
    tx = optimizer(cfg)
    adversarial = bool(cfg.loss.get("adv_weight", 0.0))

    # Parameters placed before the mesh context (under it, NNX would read the
    # logical names as mesh axes). Autoencoders are small: they are created on
    # one device and then spread over the mesh by their logical axes.
    graphdef, params = nnx.split(module.init_model(cfg.model, jax.random.key(t.seed)))
    params = jax.device_put(params, sharding.param_shardings(params, mesh, rules))

    with jax.set_mesh(mesh), sharding.logical_rules(rules):
        opt_state = init_opt_state(tx, params)
        ema = jax.tree.map(jnp.copy, params) if t.ema_decay else None
        index, count = sharding.data_shard(sharding.batch_sharding(mesh, rules, 1), t.batch_size)
        stream = make_stream(cfg, index, count)
        disc = disc_opt = disc_graphdef = disc_tx = None
        if adversarial:
            probe = make_stream(cfg, index, count)
            example = next(probe)
            target_key = {"video_vae": "video", "audio_vae": "logmel"}.get(cfg.model.kind, "video")
            disc_graphdef, disc, disc_tx, disc_opt = _discriminator(cfg, example[target_key], jax.random.key(t.seed + 2), mesh)

        ckpt = Checkpointer(workdir, max_to_keep=t.keep_checkpoints)
        start = 0
        extra = dict(disc=disc, disc_opt=disc_opt) if adversarial else None
        if ckpt.latest_step() is not None:
            restored = ckpt.restore(abstract_params=abstract_like(params), abstract_ema=abstract_like(ema),
                                    abstract_opt_state=abstract_like(opt_state),
                                    abstract_extra=abstract_like(extra) if adversarial else None)
            params, ema, opt_state, start = restored["params"], restored["ema"], restored["opt_state"], restored["step"]
            if adversarial:
                disc, disc_opt = restored["extra"]["disc"], restored["extra"]["disc_opt"]
            stream.set_state(restored["data_state"])
            say(f"resumed from {workdir} at step {start}")
        elif cfg.get("init_from"):
            run_dir, _, which = cfg.init_from.partition(":")
            params = restore_params_from(run_dir, use_ema=which == "ema", abstract_params=abstract_like(params))
            ema = jax.tree.map(jnp.copy, params) if t.ema_decay else None
            say(f"initialised from {cfg.init_from}")

        heldout = None
        if t.get("eval_every") and hasattr(module, "evaluate") and cfg.data.source == "bounce":
            heldout = {k: jax.device_put(v, sharding.batch_sharding(mesh, rules, v.ndim) if len(v) % (mesh.shape["data"] * mesh.shape["fsdp"]) == 0
                                         else jax.sharding.NamedSharding(mesh, jax.P()))
                       for k, v in heldout_batch(cfg.data, cfg.data.eval_clips).items()}

        writer = None
        if is_main:
            from tensorboardX import SummaryWriter

            workdir.mkdir(parents=True, exist_ok=True)
            writer = SummaryWriter(str(workdir / "tensorboard"))
            (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
        n_params = sum(x.size for x in jax.tree.leaves(params))
        say(f"{cfg.model.kind}: {n_params / 1e6:.2f}M parameters, mesh {dict(mesh.shape)}, batch {t.batch_size}, "
            f"{'adversarial from step ' + str(cfg.loss.adv_start) if adversarial else 'no adversary'}")
        preempt = Preemption()
        base_key = jax.random.key(t.seed + 1)
        nonfinite_run, skipped_total = 0, 0
        metrics, window_start, window_steps, run_start = {}, time.time(), 0, time.time()
        step = start
        try:
            while step < t.steps:
                batch = sharding.global_batch(next(stream), mesh, rules, t.batch_size)
                use_disc = adversarial and step >= cfg.loss.adv_start
                params, opt_state, ema, new_disc, new_disc_opt, m = train_step(
                    graphdef, params, opt_state, ema, disc if use_disc else None, disc_opt if use_disc else None,
                    batch, jax.random.fold_in(base_key, step), module_name=module_name, cfg=frozen, tx=tx,
                    disc_graphdef=disc_graphdef if use_disc else None, disc_tx=disc_tx if use_disc else None)
                if use_disc:
                    disc, disc_opt = new_disc, new_disc_opt
                step += 1
                window_steps += 1
                if step == start + 1:  # the first step compiles: keep it out of the rates
                    jax.block_until_ready(m)
                    say(f"compiled and ran step {step} in {time.time() - window_start:.1f}s")
                    window_start, window_steps = time.time(), 0
                skipped = int(m["skipped"])
                skipped_total += skipped
                nonfinite_run = nonfinite_run + 1 if skipped else 0
                if nonfinite_run >= t.max_nonfinite:
                    ckpt.save(step, params=params, ema=ema, opt_state=opt_state, data_state=stream.get_state(), config=cfg,
                              extra=dict(disc=disc, disc_opt=disc_opt) if adversarial else None, force=True)
                    raise nonfinite_error(ckpt, nonfinite_run, step, workdir)
                evaluated = {}
                if heldout is not None and (step % t.eval_every == 0 or step == t.steps):
                    scores = eval_step(graphdef, ema if ema is not None else params, heldout, module_name=module_name, cfg=frozen)
                    evaluated = {f"eval_{k}": float(v) for k, v in scores.items()}
                if step % t.log_every == 0 or step == t.steps or evaluated:
                    elapsed = time.time() - window_start
                    rate = window_steps / elapsed if window_steps else float("nan")
                    metrics = {k: float(v) for k, v in m.items()}
                    metrics.update(evaluated, steps_per_s=rate, skipped_total=skipped_total, wall_s=time.time() - run_start)
                    if is_main:
                        parts = "  ".join(f"{k} {metrics[k]:.4g}" for k in m if k not in ("loss", "skipped"))
                        held = f"  held-out PSNR {metrics['eval_psnr']:.2f} dB" if "eval_psnr" in metrics else ""
                        log(f"step {step:6d}/{t.steps}  loss {metrics['loss']:.4f}  {parts}{held}  {rate:.2f} steps/s")
                        record_metrics(writer, workdir, metrics, step)
                    window_start, window_steps = time.time(), 0
                stop = preempt.stop_at(step)
                if step % t.checkpoint_every == 0 or step == t.steps or stop:
                    ckpt.save(step, params=params, ema=ema, opt_state=opt_state, data_state=stream.get_state(), config=cfg,
                              extra=dict(disc=disc, disc_opt=disc_opt) if adversarial else None, force=True)
                if stop:
                    say(f"SIGTERM: saved step {step} in {workdir}; rerun the same command to resume")
                    break
        finally:
            close_run(ckpt, preempt, writer)
    return final_metrics(workdir, metrics, step=step, start=start, total=t.steps, is_main=is_main, say=say)
