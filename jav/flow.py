"""Rectified-flow training math for joint audio-video diffusion, as pure functions.

Noising and targets (x_t = (1 - t) x0 + t eps, target eps - x0), the shifted
logit-normal sigma sampler of LTX-2 (shared with the samplers' schedule through
`shift_mu` and `time_shift`), the task mixture (T2VA, I2VA, T2V, V2A, A2V as
per-token clean masks), condition dropout for guidance, and `flow_loss`.

Everything is per modality in dicts keyed "video" and "audio": tokens `[B, N_m, P_m]`,
one timestep per token `[B, N_m]` (0 = clean, 1 = pure noise).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

MODALITIES = ("video", "audio")
# Index order of the task ids that `sample_flow_inputs` draws.
TASKS = ("t2va", "i2va", "t2v", "v2a", "a2v")
AUDIO_SIGMA_MODES = ("shared", "tokens", "fixed")
LOSS_SPACES = ("velocity", "x0", "geometric")

DenoiseFn = Callable[..., dict]


def flow_config() -> ml_collections.ConfigDict:
    """Defaults for the flow-matching loss; configs copy this and override keys.

    Keys:
      task_probs.{t2va,i2va,t2v,v2a,a2v}: probability of each task per sample; sum to 1.
      p_drop_text: per-sample probability that the text mask is set all False (null text).
      p_drop_cross: per-sample probability that cross_modal is False (trains the
        contrast for modality guidance).
      sigma.logit_std: std of the normal whose sigmoid is sigma.
      sigma.uniform_fraction: fraction of samples whose sigma is U(0, 1) instead.
      sigma.{min_tokens,max_tokens,min_mu,max_mu}: the line mu(num_tokens) through
        (min_tokens, min_mu) and (max_tokens, max_mu), extrapolated outside it.
      sigma.audio: "shared" (audio uses the video's sigma, as LTX-2's open code does),
        "tokens" (own draw, mu from the audio token count on the same line) or
        "fixed" (own draw with mu = sigma.audio_mu).
      sigma.audio_mu: audio's mu when sigma.audio == "fixed".
      video_weight, audio_weight: weights of the per-modality mean losses.
      loss_space: "velocity" (the squared velocity error) or "x0" (the squared error
        of the clean estimate x_t - t v, which is t^2 times the velocity error: every
        noise level counts alike, where "velocity" weighs a token at t by 1 / t^2 in
        clean-sample terms and so is dominated by nearly clean tokens), or "geometric"
        (the velocity error times t: the geometric mean of the two weightings).
    """
    return ml_collections.ConfigDict(
        dict(
            task_probs=dict(t2va=0.5, i2va=0.2, t2v=0.1, v2a=0.1, a2v=0.1),
            p_drop_text=0.1,
            p_drop_cross=0.1,
            sigma=dict(
                logit_std=1.0,
                uniform_fraction=0.1,
                min_tokens=1024,
                max_tokens=4096,
                min_mu=0.95,
                max_mu=2.05,
                audio="shared",
                audio_mu=0.0,
            ),
            video_weight=1.0,
            audio_weight=1.0,
            loss_space="velocity",
        )
    )


def validate_flow_config(cfg: ml_collections.ConfigDict, prefix: str = "flow") -> None:
    """Raises ValueError naming the offending key and the fix."""
    probs = dict(cfg.task_probs)
    if set(probs) != set(TASKS):
        raise ValueError(f"{prefix}.task_probs has keys {sorted(probs)}; it needs exactly {list(TASKS)} (set unused tasks to 0.0).")
    for name, p in probs.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{prefix}.task_probs.{name}={p} is outside [0, 1].")
    total = sum(probs.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"{prefix}.task_probs sum to {total:.6g}, not 1: rescale them (e.g. {prefix}.task_probs.t2va={probs['t2va'] + 1.0 - total:.6g}).")
    for key in ("p_drop_text", "p_drop_cross"):
        if not 0.0 <= cfg[key] <= 1.0:
            raise ValueError(f"{prefix}.{key}={cfg[key]} is outside [0, 1].")
    s = cfg.sigma
    if not 0.0 <= s.uniform_fraction <= 1.0:
        raise ValueError(f"{prefix}.sigma.uniform_fraction={s.uniform_fraction} is outside [0, 1].")
    if not s.logit_std > 0:
        raise ValueError(f"{prefix}.sigma.logit_std={s.logit_std} must be > 0.")
    if not s.max_tokens > s.min_tokens:
        raise ValueError(f"{prefix}.sigma.max_tokens={s.max_tokens} must exceed {prefix}.sigma.min_tokens={s.min_tokens}.")
    if s.audio not in AUDIO_SIGMA_MODES:
        raise ValueError(f"{prefix}.sigma.audio={s.audio!r}; choose one of {AUDIO_SIGMA_MODES}.")
    if cfg.loss_space not in LOSS_SPACES:
        raise ValueError(f"{prefix}.loss_space={cfg.loss_space!r}; choose one of {LOSS_SPACES}.")
    for key in ("video_weight", "audio_weight"):
        if not cfg[key] >= 0:
            raise ValueError(f"{prefix}.{key}={cfg[key]} must be >= 0.")


# ---------------------------------------------------------------------------
# Noising and targets.


def noise(x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = (1 - t) x0 + t eps; x0, eps [B, N, P], t [B, N] (one per token)."""
    t = t[..., None].astype(jnp.float32)
    return ((1.0 - t) * x0 + t * eps).astype(x0.dtype)


def velocity_target(x0: jax.Array, eps: jax.Array) -> jax.Array:
    """d x_t / d t = eps - x0."""
    return eps - x0


# ---------------------------------------------------------------------------
# Sigma: shifted logit-normal.


def shift_mu(num_tokens, min_tokens=1024, max_tokens=4096, min_mu=0.95, max_mu=2.05):
    """Mean of the logit-normal, linear in the token count (LTX-2); extrapolates outside."""
    slope = (max_mu - min_mu) / (max_tokens - min_tokens)
    return min_mu + slope * (jnp.asarray(num_tokens, jnp.float32) - min_tokens)


def time_shift(s, mu):
    """exp(mu) / (exp(mu) + 1/s - 1), which equals sigmoid(logit(s) + mu).

    So sigmoid(z + mu) == time_shift(sigmoid(z), mu): shifting the logit-normal's mean
    in training is the same map as shifting a uniform sampling grid. Fixes 0 and 1.
    """
    s = jnp.asarray(s, jnp.float32)
    e = jnp.exp(jnp.asarray(mu, jnp.float32))
    # Written so that both ends are exact in float32: (1 - s)/s is inf at s = 0 and 0 at s = 1.
    return e / (e + (1.0 - s) / s)


def standard_normal(key, shape, dtype=jnp.float32) -> jax.Array:
    """N(0, I) of `shape`, drawn flat and reshaped.

    Same distribution as jax.random.normal(key, shape); with partitionable threefry
    the flat draw compiles 2-4x faster on XLA:CPU than a rank-2 or rank-3 one.
    """
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def sigma_from_variates(z, u_pick, u_value, mu, *, logit_std=1.0, uniform_fraction=0.1):
    """Shifted logit-normal sigma time_shift(sigmoid(logit_std * z), mu), replaced by
    u_value where u_pick < uniform_fraction. z ~ N(0, 1), u_pick, u_value ~ U(0, 1), [B]."""
    logit_normal = time_shift(jax.nn.sigmoid(logit_std * z), mu)
    return jnp.where(u_pick < uniform_fraction, u_value, logit_normal)


def sample_sigma(key, mu, batch: int, *, logit_std=1.0, uniform_fraction=0.1) -> jax.Array:
    """[batch] sigmas: shifted logit-normal, or U(0, 1) with probability uniform_fraction.

    `mu` is a scalar or [batch] (a per-sample token count gives a per-sample mu).
    """
    k_z, k_u = jax.random.split(key)
    z = jax.random.normal(k_z, (batch,), jnp.float32)
    u = jax.random.uniform(k_u, (2 * batch,), jnp.float32).reshape(2, batch)
    return sigma_from_variates(z, u[0], u[1], mu, logit_std=logit_std, uniform_fraction=uniform_fraction)


def _line(cfg) -> dict:
    s = cfg.sigma
    return dict(min_tokens=s.min_tokens, max_tokens=s.max_tokens, min_mu=s.min_mu, max_mu=s.max_mu)


def sampling_mu(cfg: ml_collections.ConfigDict, num_tokens: dict) -> dict:
    """Per-modality mu for `samplers.sigma_schedule`, matching how `cfg` trained.

    num_tokens: {"video": N_v, "audio": N_a} token counts per sample.
    """
    mu = {"video": shift_mu(num_tokens["video"], **_line(cfg))}
    mode = cfg.sigma.audio
    if mode == "shared":
        mu["audio"] = mu["video"]
    elif mode == "tokens":
        mu["audio"] = shift_mu(num_tokens["audio"], **_line(cfg))
    else:
        mu["audio"] = jnp.asarray(cfg.sigma.audio_mu, jnp.float32)
    return mu


# ---------------------------------------------------------------------------
# The draws of one training step.


class FlowInputs(NamedTuple):
    """Everything `flow_loss` draws from its key; shapes per modality m."""

    task: jax.Array  # [B] int, index into TASKS
    sigma: dict  # m -> [B], before clean masks
    t: dict  # m -> [B, N_m], 0 on clean tokens, 1 on absent audio (T2V)
    eps: dict  # m -> [B, N_m, P_m]
    loss_mask: dict  # m -> [B, N_m] bool
    text_mask: jax.Array  # [B, L] bool, after text dropout
    cross_modal: jax.Array  # [B] bool, after cross-modal dropout


def _token_count(x, mask):
    if mask is None:
        return jnp.full((x.shape[0],), x.shape[1], jnp.float32)
    return mask.sum(-1).astype(jnp.float32)  # [B]: real tokens only


def sample_flow_inputs(key, x0: dict, text_mask, first_frame, cfg, token_mask: dict | None = None) -> FlowInputs:
    """Draws sigmas, tasks, condition dropout and noise for one batch.

    first_frame: [N_v] (or [B, N_v]) bool, the video tokens of the first latent frame
      (held clean in I2VA); may be None when cfg.task_probs.i2va == 0.
    token_mask: optional m -> [B, N_m] bool, False on padding (no loss there; the
      per-sample token count that sets mu counts only real tokens).
    """
    if first_frame is None and cfg.task_probs.i2va > 0:
        raise ValueError(f"flow.task_probs.i2va={cfg.task_probs.i2va} needs first_frame; pass it or set it to 0.")
    xv, xa = x0["video"], x0["audio"]
    batch = xv.shape[0]
    token_mask = token_mask or {}
    # All per-sample scalars come from one normal and one uniform draw, flat (see
    # standard_normal): every separate draw is another threefry to compile.
    k_z, k_u, k_ev, k_ea = jax.random.split(key, 4)
    z = standard_normal(k_z, (2, batch))  # logits: [video, audio]
    u = jax.random.uniform(k_u, (7 * batch,), jnp.float32).reshape(7, batch)
    u_pick_v, u_value_v, u_pick_a, u_value_a, u_task, u_text, u_cross = u

    s = cfg.sigma
    draw = dict(logit_std=s.logit_std, uniform_fraction=s.uniform_fraction)
    mu_v = shift_mu(_token_count(xv, token_mask.get("video")), **_line(cfg))
    sigma_v = sigma_from_variates(z[0], u_pick_v, u_value_v, mu_v, **draw)
    if s.audio == "shared":
        sigma_a = sigma_v
    else:
        if s.audio == "tokens":
            mu_a = shift_mu(_token_count(xa, token_mask.get("audio")), **_line(cfg))
        else:
            mu_a = s.audio_mu
        sigma_a = sigma_from_variates(z[1], u_pick_a, u_value_a, mu_a, **draw)

    # Inverse CDF: task k where cdf[k-1] <= u_task < cdf[k]. Built in float64 and
    # normalised so that the cdf is exactly 1 from the last likely task on, and a task
    # of probability 0 is never drawn.
    probs = np.asarray([cfg.task_probs[name] for name in TASKS], np.float64)
    cdf = jnp.asarray(np.cumsum(probs) / probs.sum(), jnp.float32)
    task = (u_task[:, None] >= cdf[None, :-1]).sum(-1)  # [B]
    is_task = {name: (task == i)[:, None] for i, name in enumerate(TASKS)}  # [B, 1]

    # Per-token clean masks, [B, N_m].
    clean_v = is_task["v2a"] | jnp.zeros(xv.shape[:2], bool)
    if first_frame is not None:
        clean_v = clean_v | (is_task["i2va"] & jnp.broadcast_to(first_frame, xv.shape[:2]))
    clean_a = is_task["a2v"] | jnp.zeros(xa.shape[:2], bool)
    absent_a = is_task["t2v"] | jnp.zeros(xa.shape[:2], bool)

    t_v = jnp.where(clean_v, 0.0, sigma_v[:, None])
    t_a = jnp.where(clean_a, 0.0, jnp.where(absent_a, 1.0, sigma_a[:, None]))
    loss_v = ~clean_v
    loss_a = ~(clean_a | absent_a)
    if "video" in token_mask:
        loss_v = loss_v & token_mask["video"]
    if "audio" in token_mask:
        loss_a = loss_a & token_mask["audio"]

    keep_text = u_text >= cfg.p_drop_text
    cross_modal = u_cross >= cfg.p_drop_cross
    return FlowInputs(
        task=task,
        sigma={"video": sigma_v, "audio": sigma_a},
        t={"video": t_v, "audio": t_a},
        eps={
            "video": standard_normal(k_ev, xv.shape, xv.dtype),
            "audio": standard_normal(k_ea, xa.shape, xa.dtype),
        },
        loss_mask={"video": loss_v, "audio": loss_a},
        text_mask=text_mask & keep_text[:, None],
        cross_modal=cross_modal,
    )


def token_error(v: jax.Array, target: jax.Array, t: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """[B, N, P] velocities and targets, [B, N] timesteps -> [B, N]: the squared error
    averaged over a token's elements, weighted as cfg.loss_space says (see velocity_loss)."""
    se = jnp.square(v.astype(jnp.float32) - target.astype(jnp.float32)).mean(-1)
    space = cfg.loss_space
    if space != "velocity":
        tm = t.astype(jnp.float32)
        se = se * (jnp.square(tm) if space == "x0" else tm)
    return se


def velocity_loss(v: dict, target: dict, t: dict, loss_mask: dict, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, dict]:
    """The weighted mean squared error of velocities against targets -> (loss, m -> loss).

    Per modality: the squared error averaged over a token's elements, times t^2
    per token with cfg.loss_space == "x0" (the clean-estimate error), times t with
    "geometric", averaged over the tokens in loss_mask[m] [B, N_m] (0 where there are
    none); loss = video_weight * loss_video + audio_weight * loss_audio.
    """
    losses = {}
    for m in MODALITIES:
        se = token_error(v[m], target[m], t[m], cfg)
        mask = loss_mask[m].astype(jnp.float32)
        losses[m] = (se * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    return cfg.video_weight * losses["video"] + cfg.audio_weight * losses["audio"], losses


def flow_loss(
    denoise_fn: DenoiseFn,
    key,
    x0: dict,
    text,
    text_mask,
    first_frame,
    cfg: ml_collections.ConfigDict,
    token_mask: dict | None = None,
):
    """Rectified-flow loss over the task mixture; returns (loss, aux).

    x0: m -> [B, N_m, P_m] clean tokens; text [B, L, D]; text_mask [B, L] bool.
    The loss per modality is the mean squared velocity error (times t^2 per token
    with cfg.loss_space == "x0", the clean-estimate error; times t with "geometric") over the elements of
    tokens in the loss mask (noisy, present, not padding); loss = video_weight * loss_video
    + audio_weight * loss_audio. A modality with no counted tokens in the batch
    contributes 0. aux: loss_video, loss_audio, the per-sample sigma_video,
    sigma_audio and task, and the kept fractions of text and cross-modal.
    """
    validate_flow_config(cfg)
    d = sample_flow_inputs(key, x0, text_mask, first_frame, cfg, token_mask)
    x_t = {m: noise(x0[m], d.eps[m], d.t[m]) for m in MODALITIES}
    v = denoise_fn(x_t, d.t, text, d.text_mask, d.cross_modal)
    target = {m: velocity_target(x0[m].astype(jnp.float32), d.eps[m].astype(jnp.float32)) for m in MODALITIES}
    loss, losses = velocity_loss(v, target, d.t, d.loss_mask, cfg)
    aux = dict(
        loss_video=losses["video"],
        loss_audio=losses["audio"],
        sigma_video=d.sigma["video"],
        sigma_audio=d.sigma["audio"],
        task=d.task,
        text_kept=d.text_mask.any(-1).mean(),
        cross_kept=d.cross_modal.mean(),
    )
    return loss, aux
