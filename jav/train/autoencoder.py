"""The autoencoder phase: trains a video VAE, audio VAE or vocoder, optionally
against a patch discriminator, on the loop every phase runs on
(jav/train/loop.py: mesh, sharded state, Orbax checkpoints with the data
stream's position, resume, SIGTERM save-and-exit, metrics.jsonl and
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

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jav import schema, sharding
from jav.data.bounce_stream import BounceStream, heldout_batch
from jav.data.loader import make_loader
from jav.models.autoencoders import MODELS, model_module
from jav.train import loop
from jav.train.discriminator import PatchDiscriminator, as_images, hinge_discriminator, hinge_generator
from jav.train.step import optimizer


def validate(cfg, mesh: jax.sharding.Mesh) -> None:
    """Config checks before any compile, with errors naming the key and the fix."""
    module = model_module(cfg.model.get("kind", None))
    batch_axes = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.train.batch_size % batch_axes:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by mesh data x fsdp={batch_axes}; change the batch or mesh.shape")
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
        return {"video": b["video"][:, : 1 + (t - 1) // self.time_factor * self.time_factor], "logmel": b["audio"]}

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


@functools.partial(jax.jit, static_argnames=("graphdef", "module_name", "cfg", "tx", "disc_graphdef", "disc_tx"), donate_argnums=(1, 2, 3, 4, 5))
def train_step(graphdef, params, opt_state, ema, disc, disc_opt, batch, key, *, module_name, cfg, tx, disc_graphdef=None, disc_tx=None):
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


def _discriminator(cfg, example: np.ndarray, key: jax.Array, run: loop.Run):
    """(graphdef, optimiser, replicated training state) of the patch discriminator."""
    channels = as_images(jnp.zeros((1,) + example.shape[1:])).shape[-1]
    graphdef, state = nnx.split(PatchDiscriminator(channels, cfg.loss.disc_width, rngs=nnx.Rngs(params=key)))
    state = jax.device_put(state, jax.sharding.NamedSharding(run.mesh, jax.P()))
    tx = optax.adam(cfg.loss.disc_lr, b1=0.5, b2=0.9)
    return graphdef, tx, loop.trainable(state, tx, run, ema=False)


# ---- The phase


class AutoencoderPhase(loop.Phase):
    """Network "model" (the autoencoder, with EMA) and, when loss.adv_weight > 0,
    "disc" (the discriminator, trained from step loss.adv_start with its own Adam)."""

    def validate(self, mesh):
        validate(self.cfg, mesh)

    def init_state(self, run):
        cfg, t = self.cfg, self.cfg.train
        self.module_name = MODELS[cfg.model.kind]
        module = model_module(cfg.model.kind)
        self.frozen_cfg = ml_collections.FrozenConfigDict(cfg)
        self.tx = optimizer(cfg)
        self.adversarial = bool(cfg.loss.get("adv_weight", 0.0))
        self.mesh = run.mesh
        # Autoencoders are small: made on one device, then spread over the mesh by their logical axes.
        self.graphdef, params = nnx.split(module.init_model(cfg.model, jax.random.key(t.seed)))
        params = jax.device_put(params, sharding.param_shardings(params, run.mesh, run.rules))
        state = {"model": loop.trainable(params, self.tx, run, ema=bool(t.ema_decay))}
        self.disc_graphdef = self.disc_tx = None
        if self.adversarial:
            example = next(make_stream(cfg, run.shard, run.shards))
            target_key = {"video_vae": "video", "audio_vae": "logmel"}.get(cfg.model.kind, "video")
            self.disc_graphdef, self.disc_tx, state["disc"] = _discriminator(cfg, example[target_key], jax.random.key(t.seed + 2), run)
        self.heldout = None
        if t.get("eval_every") and hasattr(module, "evaluate") and cfg.data.source == "bounce":
            batch_axes = run.mesh.shape["data"] * run.mesh.shape["fsdp"]
            self.heldout = {
                k: jax.device_put(
                    v, sharding.batch_sharding(run.mesh, run.rules, v.ndim) if len(v) % batch_axes == 0 else jax.sharding.NamedSharding(run.mesh, jax.P())
                )
                for k, v in heldout_batch(cfg.data, cfg.data.eval_clips).items()
            }
        return state

    def describe(self, state):
        cfg = self.cfg
        n_params = sum(x.size for x in jax.tree.leaves(state["model"].params))
        return (
            f"{cfg.model.kind}: {n_params / 1e6:.2f}M parameters, mesh {dict(self.mesh.shape)}, batch {cfg.train.batch_size}, "
            f"{'adversarial from step ' + str(cfg.loss.adv_start) if self.adversarial else 'no adversary'}"
        )

    def stream(self, run):
        return make_stream(self.cfg, run.shard, run.shards)

    def step(self, state, batch, key, step):
        model, disc = state["model"], state.get("disc")
        use_disc = self.adversarial and step >= self.cfg.loss.adv_start
        params, opt_state, ema, disc_params, disc_opt, metrics = train_step(
            self.graphdef,
            model.params,
            model.opt_state,
            model.ema,
            disc.params if use_disc else None,
            disc.opt_state if use_disc else None,
            batch,
            key,
            module_name=self.module_name,
            cfg=self.frozen_cfg,
            tx=self.tx,
            disc_graphdef=self.disc_graphdef if use_disc else None,
            disc_tx=self.disc_tx if use_disc else None,
        )
        state = dict(state, model=loop.Trainable(params, opt_state, ema))
        if use_disc:
            state["disc"] = loop.Trainable(disc_params, disc_opt)
        return state, metrics

    def evaluate(self, state, step, writer):
        if self.heldout is None:
            return {}
        model = state["model"]
        return eval_step(self.graphdef, model.ema if model.ema is not None else model.params, self.heldout, module_name=self.module_name, cfg=self.frozen_cfg)

    def log_line(self, step, m):
        parts = "  ".join(f"{k} {m[k]:.4g}" for k in m if k not in ("loss", "skipped") + loop.LOOP_METRICS and not k.startswith("eval_"))
        scores = {k[len("eval_") :]: v for k, v in m.items() if k.startswith("eval_")}
        held = "  held-out " + " ".join(f"{k} {v:.4g}" for k, v in scores.items()) if scores else ""
        return f"step {step:6d}/{self.cfg.train.steps}  loss {m['loss']:.4f}  {parts}{held}  {m['steps_per_s']:.2f} steps/s"


def train(cfg: ml_collections.ConfigDict, workdir: str, log=print) -> dict:
    """Trains the autoencoder of `cfg` in `workdir` (resuming if it holds a checkpoint) -> last metrics."""
    cfg = schema.complete(cfg)  # every key the config leaves unsaid at its default
    return loop.run(cfg, workdir, AutoencoderPhase(cfg), log)
