"""The loss of one batch and the jitted optimiser step.

A batch is a dict of model-space arrays: `video` [B, T, H, W, C], `audio`
[B, Ta, Ca], and either `text_ids` [B, L] (the built-in encoder) or
`text_emb` [B, L, D] (precomputed), with `text_mask` [B, L].
"""
from __future__ import annotations

import functools

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


def optimizer(cfg) -> optax.GradientTransformation:
    """AdamW with linear warmup, cosine decay and global-norm clipping."""
    o = cfg.optim
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=o.lr, warmup_steps=o.warmup_steps,
        decay_steps=max(cfg.train.steps, o.warmup_steps + 1), end_value=o.lr * o.end_lr_fraction,
    )
    return optax.chain(
        optax.clip_by_global_norm(o.grad_clip),
        optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay),
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "layout", "flow_cfg", "ema_decay"), donate_argnums=(1, 2, 3))
def train_step(graphdef, params, opt_state, ema, batch, key, *, tx, layout, flow_cfg, ema_decay=0.0):
    """One optimiser step -> (params, opt_state, ema, metrics).

    A non-finite loss or gradient leaves params, optimiser state and EMA as they
    were and reports `skipped` = 1; `ema` may be None (no EMA kept).
    """

    def loss_fn(p):
        return batch_loss(nnx.merge(graphdef, p), batch, key, layout, flow_cfg)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
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
    metrics = dict(loss=loss, loss_video=aux["loss_video"], loss_audio=aux["loss_audio"], grad_norm=grad_norm, skipped=(~ok).astype(jnp.int32))
    return params_out, opt_state, ema, metrics
