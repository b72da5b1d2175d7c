"""The loss of one batch and the jitted optimiser step.

A batch is a dict of model-space arrays: `video` [B, T, H, W, C], `audio`
[B, Ta, Ca], and either `text_ids` [B, L] (the built-in encoder) or
`text_emb` [B, L, D] (precomputed), with `text_mask` [B, L].

Which parameters train is `train.trainable`: "auto" (the LoRA adapters of
jav.models.lora where the model has them, else all) or a regular expression
searched in each parameter's path ("groups/layers/0/audio/mlp/up/kernel"). The
others are frozen: the optimiser keeps no state for them and sets their update
to zero, and the step zeroes their gradients, so they are never computed.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jav import flow
from jav.clip_tokens import TokenLayout


def batch_loss(model, batch: dict, key: jax.Array, layout: TokenLayout, flow_cfg):
    """Rectified-flow loss of a batch over the task mixture -> (loss, aux)."""
    if "text_ids" in batch:
        text = model.encode_text(batch["text_ids"], batch["text_mask"])
    else:
        text = batch["text_emb"]
    x0 = layout.to_tokens(batch["video"], batch["audio"])
    return flow.flow_loss(layout.denoiser(model), key, x0, text, batch["text_mask"], jnp.asarray(layout.first_frame), flow_cfg)


LORA_PATTERN = r"(^|/)lora/"  # the adapters' parameters (jav.models.lora.Adapter under Dense.lora)


def trainable_pattern(cfg) -> str | None:
    """train.trainable -> the regular expression of the parameters that train; None: all of them."""
    spec = cfg.train.trainable or "auto"
    if spec == "auto":
        return LORA_PATTERN if cfg.model.get("lora") and cfg.model.lora.get("rank", 0) else None
    try:
        re.compile(spec)
    except re.error as e:
        raise ValueError(f"train.trainable={spec!r} is not a regular expression ({e}); use 'auto' or e.g. 'audio|cross'") from None
    return spec


def param_path(path) -> str:
    """A parameter's tree path -> "groups/layers/0/audio/mlp/up/kernel"."""
    names = []
    for key in path:
        name = getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))
        if name != "value":
            names.append(str(name))
    return "/".join(names)


@functools.lru_cache(maxsize=64)
def trains(pattern: str | None, path: str) -> bool:
    return pattern is None or re.search(pattern, path) is not None


def trainable_mask(params, pattern: str | None):
    """A tree of bools like `params`: True where the parameter trains."""
    return jax.tree_util.tree_map_with_path(lambda p, _: trains(pattern, param_path(p)), params)


def freeze_grads(grads, pattern: str | None):
    """Gradients with the frozen parameters' set to zero (so XLA never computes them)."""
    if pattern is None:
        return grads
    return jax.tree_util.tree_map_with_path(lambda p, g: g if trains(pattern, param_path(p)) else jnp.zeros_like(g), grads)


def optimizer(cfg) -> optax.GradientTransformation:
    """AdamW with linear warmup, cosine decay and global-norm clipping, over the parameters
    `train.trainable` names (the others get no optimiser state and no update).

    Equal settings give the same object: the jitted steps take the optimiser as a
    static argument, so a second run in the same process (a resume, the next
    phase) reuses the compiled step instead of tracing it again.
    """
    o = cfg.optim
    tx = _adamw(
        float(o.lr),
        int(o.warmup_steps),
        int(max(cfg.train.steps, o.warmup_steps + 1)),
        float(o.end_lr_fraction),
        float(o.grad_clip),
        float(o.b1),
        float(o.b2),
        float(o.weight_decay),
    )
    pattern = trainable_pattern(cfg)
    return tx if pattern is None else _only(tx, pattern)


@functools.lru_cache(maxsize=32)
def _only(tx: optax.GradientTransformation, pattern: str) -> optax.GradientTransformation:
    def labels(params):
        return jax.tree.map(lambda t: "train" if t else "frozen", trainable_mask(params, pattern))

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


@functools.lru_cache(maxsize=32)
def _adamw(lr, warmup_steps, decay_steps, end_lr_fraction, grad_clip, b1, b2, weight_decay) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup_steps, decay_steps=decay_steps, end_value=lr * end_lr_fraction
    )
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay))


def opt_state_shardings(tx: optax.GradientTransformation, params):
    """Where the optimizer state of `params` (arrays or sharded ShapeDtypeStructs)
    lives: each moment placed like the parameter it mirrors (FSDP shards Adam's
    moments with the weights), counters replicated."""
    shardings = jax.tree.map(lambda x: x.sharding, params)
    mesh = jax.tree.leaves(shardings)[0].mesh
    replicated = jax.sharding.NamedSharding(mesh, jax.P())
    # a frozen parameter's place in the state is an empty optax.MaskedNode: it stays one
    return optax.tree_map_params(
        tx,
        lambda x, s: x if isinstance(x, optax.MaskedNode) else s,
        jax.eval_shape(tx.init, params),
        shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, optax.MaskedNode),
    )


def init_opt_state(tx: optax.GradientTransformation, params):
    """The optimizer state, placed by `opt_state_shardings`.

    A plain `jax.jit(tx.init)` leaves the placement of the zeros to the compiler,
    which replicates them: every device would hold the whole optimizer state, and
    the train step, whose outputs are sharded, would compile a second time.
    """
    return jax.jit(tx.init, out_shardings=opt_state_shardings(tx, params))(params)


_SUMMED_AUX = ("loss_video", "loss_audio")


def loss_and_grads(graphdef, params, batch, key, *, layout, flow_cfg, accum_steps=1, trainable=None):
    """Loss, per-modality losses and gradients of a batch, optionally accumulated
    over `accum_steps` equal microbatches (a `lax.scan`, so activation memory is
    that of one microbatch) -> (loss, aux, grads).

    Microbatch i holds rows i, i + k, ... and draws its noise and tasks from
    `fold_in(key, i)`; the result is the mean of the microbatch losses and
    gradients. `trainable`: the pattern of `trainable_pattern` (None: all); the
    frozen parameters' gradients are zero.
    """

    def loss_fn(p, micro, k):
        return batch_loss(nnx.merge(graphdef, p), micro, k, layout, flow_cfg)

    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

    def grad_fn(p, micro, k):
        out, grads = value_and_grad(p, micro, k)
        return out, freeze_grads(grads, trainable)

    if accum_steps == 1:
        (loss, aux), grads = grad_fn(params, batch, key)
        return loss, aux, grads
    size = jax.tree.leaves(batch)[0].shape[0]
    if size % accum_steps:
        raise ValueError(f"batch of {size} is not divisible by train.grad_accum={accum_steps}")
    # Microbatch i takes rows i, i + k, i + 2k, ...: each keeps a slice on every
    # device of the batch axes instead of living on 1/k of them.
    micro = jax.tree.map(lambda x: x.reshape((size // accum_steps, accum_steps) + x.shape[1:]).swapaxes(0, 1), batch)

    def body(carry, inputs):
        i, mb = inputs
        (loss, aux), grads = grad_fn(params, mb, jax.random.fold_in(key, i))
        aux = {k: aux[k] for k in _SUMMED_AUX}
        return jax.tree.map(jnp.add, carry, (loss, aux, grads)), None

    zero = jnp.zeros((), jnp.float32)
    init = (zero, {k: zero for k in _SUMMED_AUX}, jax.tree.map(jnp.zeros_like, params))
    total, _ = jax.lax.scan(body, init, (jnp.arange(accum_steps), micro))
    return jax.tree.map(lambda x: x / accum_steps, total)


def guarded_update(tx: optax.GradientTransformation, params, opt_state, ema, grads, loss, ema_decay: float):
    """An optimiser update that a non-finite loss or gradient skips -> (params, opt_state,
    ema, grad_norm, skipped): where skipped is 1 the parameters, optimiser state and
    EMA (None: none kept) are returned as they were."""
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)

    def keep_if_ok(new, old):
        return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)

    params_out = keep_if_ok(new_params, params)
    opt_state = keep_if_ok(new_opt_state, opt_state)
    if ema is not None:
        ema = keep_if_ok(jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params_out), ema)
    return params_out, opt_state, ema, grad_norm, (~ok).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "layout", "flow_cfg", "ema_decay", "accum_steps", "trainable"), donate_argnums=(1, 2, 3))
def train_step(graphdef, params, opt_state, ema, batch, key, *, tx, layout, flow_cfg, ema_decay=0.0, accum_steps=1, trainable=None):
    """One optimiser step -> (params, opt_state, ema, metrics).

    A non-finite loss or gradient leaves params, optimiser state and EMA as they
    were and reports `skipped` = 1; `ema` may be None (no EMA kept). With
    `accum_steps` > 1 the batch is split into that many microbatches whose
    gradients are averaged before the one update.
    """
    loss, aux, grads = loss_and_grads(graphdef, params, batch, key, layout=layout, flow_cfg=flow_cfg, accum_steps=accum_steps, trainable=trainable)
    params, opt_state, ema, grad_norm, skipped = guarded_update(tx, params, opt_state, ema, grads, loss, ema_decay)
    metrics = dict(loss=loss, loss_video=aux["loss_video"], loss_audio=aux["loss_audio"], grad_norm=grad_norm, skipped=skipped)
    return params, opt_state, ema, metrics
