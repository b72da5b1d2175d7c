"""Jit-compatible samplers for the joint audio-video flow model.

A time-shifted sigma schedule, classifier-free text guidance per modality plus
modality guidance in one batched denoiser call, the Euler probability-flow ODE
sampler, and the Flow-GRPO SDE sampler with per-step Gaussian log-probabilities
(and the pure step / log-density functions that reward tuning re-evaluates).

Conditioning is by clean tokens: where `clean[m]` [B, N_m] is True the token is held
at `x_clean[m]` with timestep 0 for the whole trajectory (I2VA: the first frame;
V2A: all video; A2V: all audio). Tokens are m -> [B, N_m, P_m], as in `jav.flow`.

Jitting: `denoise_fn`, `num_steps`, `guidance` and `return_trajectory` are static,
for example `jax.jit(euler_sample, static_argnums=0, static_argnames=("num_steps",
"guidance"))`. Pass noise as arrays (`x_init`) to a jitted sampler, or close over a
dict of shapes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jav.flow import standard_normal, time_shift

DenoiseFn = Callable[..., dict]


def sigma_schedule(num_steps: int, mu) -> jax.Array:
    """[num_steps + 1] timesteps from 1 down to 0: a uniform grid, time-shifted by mu."""
    return time_shift(jnp.linspace(1.0, 0.0, num_steps + 1), mu)


# ---------------------------------------------------------------------------
# Guidance.


@dataclasses.dataclass(frozen=True)
class Guidance:
    """Guidance scales; 1.0 switches a term off (and skips its denoiser pass).

    With float scales it is hashable, so it can be a static argument of a jitted
    sampler. A scale may also be a [B] array, one per sample (a distillation
    teacher's target over a range of scales): its term's pass always runs.
    """

    text_video: float | jax.Array = 1.0
    text_audio: float | jax.Array = 1.0
    modality: float | jax.Array = 1.0

    def text_scale(self, modality: str):
        return {"video": self.text_video, "audio": self.text_audio}[modality]

    def uses_text(self) -> bool:
        """Whether a text scale is on (the unconditional pass runs, and a negative prompt can replace it)."""
        return _on(self.text_video) or _on(self.text_audio)

    def as_array(self, batch: int) -> jax.Array:
        """[batch, 3] scales in the order of `jav.models.av_dit.GUIDANCE_TERMS`: the
        input of a model with model.guidance_embed."""
        return jnp.stack([jnp.broadcast_to(jnp.asarray(s, jnp.float32), (batch,)) for s in (self.text_video, self.text_audio, self.modality)], axis=1)


def guidance_from(cfg, text_video=None, text_audio=None, modality=None) -> Guidance:
    """A run's sampling guidance (cfg.sample), each scale overridden where given."""
    s = cfg.sample
    return Guidance(
        text_video=text_video if text_video is not None else s.text_video,
        text_audio=text_audio if text_audio is not None else s.text_audio,
        modality=modality if modality is not None else s.modality,
    )


def passes_per_step(guidance: Guidance) -> int:
    """Network passes of one guided step: the conditional pass, plus the unconditional one
    when a text scale is on, plus the one without the coupling when the modality scale is."""
    return 1 + guidance.uses_text() + _on(guidance.modality)


def _on(scale) -> bool:
    """Whether a guidance term needs its pass: an array scale always does, a float one unless 1."""
    return not isinstance(scale, (int, float)) or scale != 1.0


def _times(scale, delta: jax.Array) -> jax.Array:
    """(scale - 1) * delta, a per-sample [B] scale broadcast over [B, N, P]."""
    if isinstance(scale, (int, float)):
        return (scale - 1.0) * delta
    return (jnp.asarray(scale, jnp.float32) - 1.0).reshape((-1,) + (1,) * (delta.ndim - 1)) * delta


NO_GUIDANCE = Guidance()
LTX2_GUIDANCE = Guidance(text_video=3.0, text_audio=7.0, modality=3.0)


def guided_velocity(denoise_fn: DenoiseFn, x: dict, t: dict, text, text_mask, guidance: Guidance = NO_GUIDANCE, negative=None) -> dict:
    """Guided velocity per modality from ONE batched denoiser call.

    Passes, concatenated along the batch axis: conditional; unconditional (all-False
    text mask) if a text scale != 1; cross-modal off if guidance.modality != 1. Then
    v[m] = v_c + (s_text[m] - 1)(v_c - v_uncond) + (s_mod - 1)(v_c - v_nocross).
    `negative`: (text, mask) of negative prompts, same shapes as text / text_mask: the
    text-guidance pass reads them instead of no text, so guidance pushes away from them.
    The denoiser therefore sees a batch of n * B ([cond | uncond | nocross]); per-sample
    arrays it closes over (positions, padding masks) must follow: `tile_to_batch`.
    """
    use_text = any(_on(guidance.text_scale(m)) for m in x)
    use_modality = _on(guidance.modality)
    batch = text.shape[0]
    on = jnp.ones((batch,), bool)
    if negative is not None and not use_text:
        raise ValueError("a negative prompt acts through text guidance: set a text guidance scale above 1")
    texts, masks, cross = [text], [text_mask], [on]
    if use_text:
        neg_text, neg_mask = negative if negative is not None else (text, jnp.zeros_like(text_mask))
        texts.append(neg_text.astype(text.dtype))
        masks.append(neg_mask)
        cross.append(on)
    if use_modality:
        texts.append(text)
        masks.append(text_mask)
        cross.append(~on)
    n = len(masks)
    if n == 1:
        return denoise_fn(x, t, text, text_mask, on)

    def rep(a):  # [B, ...] -> [n * B, ...]
        return jnp.concatenate([a] * n, axis=0)

    out = denoise_fn(
        {m: rep(x[m]) for m in x},
        {m: rep(t[m]) for m in t},
        jnp.concatenate(texts, axis=0),
        jnp.concatenate(masks, axis=0),
        jnp.concatenate(cross, axis=0),
    )
    v = {}
    for m in x:
        parts = jnp.split(out[m], n, axis=0)
        v_c, rest = parts[0], parts[1:]
        vm = v_c
        if use_text:
            vm = vm + _times(guidance.text_scale(m), v_c - rest.pop(0))
        if use_modality:
            vm = vm + _times(guidance.modality, v_c - rest.pop(0))
        v[m] = vm
    return v


def tile_to_batch(a: jax.Array, batch: int) -> jax.Array:
    """[B, ...] -> [batch, ...] as whole copies, the layout of `guided_velocity`'s passes.

    For a denoise_fn closing over per-sample extras: tile_to_batch(pos, x["video"].shape[0]).
    Arrays with a leading 1 broadcast and need nothing.
    """
    return jnp.tile(a, (batch // a.shape[0],) + (1,) * (a.ndim - 1))


# ---------------------------------------------------------------------------
# Shared set-up of the samplers.


def _init_noise(key, x) -> dict:
    """Arrays pass through; shape tuples become N(0, I) draws from key."""
    out = {}
    for i, m in enumerate(sorted(x)):
        if isinstance(x[m], (tuple, list)):
            out[m] = standard_normal(jax.random.fold_in(key, i), tuple(x[m]))
        else:
            out[m] = jnp.asarray(x[m])
    return out


def _clean_masks(x: dict, clean, x_clean) -> dict:
    """m -> [B, N_m] bool; modalities missing from `clean` are all noisy."""
    clean = clean or {}
    x_clean = x_clean or {}
    for m in clean:
        if m not in x_clean:
            raise ValueError(f"clean[{m!r}] is given but x_clean[{m!r}] is not; pass the clean tokens.")
    return {m: jnp.broadcast_to(clean[m], x[m].shape[:2]) if m in clean else jnp.zeros(x[m].shape[:2], bool) for m in x}


def _hold(x: dict, clean: dict, x_clean) -> dict:
    if not x_clean:
        return x
    return {m: jnp.where(clean[m][..., None], x_clean[m].astype(x[m].dtype), x[m]) if m in x_clean else x[m] for m in x}


def _schedules(num_steps: int, mu, modalities) -> dict:
    """m -> [num_steps + 1]; mu is a scalar or a per-modality dict."""
    return {m: sigma_schedule(num_steps, mu[m] if isinstance(mu, dict) else mu) for m in modalities}


def _token_t(clean: dict, s: dict) -> dict:
    """Scalar timestep per modality -> per-token [B, N_m], 0 on clean tokens."""
    return {m: jnp.where(clean[m], 0.0, s[m]) for m in clean}


# ---------------------------------------------------------------------------
# Euler ODE.


def euler_sample(
    denoise_fn: DenoiseFn,
    key,
    x,
    text,
    text_mask,
    *,
    num_steps: int,
    mu,
    guidance: Guidance = NO_GUIDANCE,
    clean: dict | None = None,
    x_clean: dict | None = None,
    on_step: Callable[[jax.Array], None] | None = None,
    mean_velocity: bool = False,
    negative=None,
) -> dict:
    """Euler steps of the probability-flow ODE from t = 1 to 0, in one lax.scan.

    x: m -> initial noise [B, N_m, P_m], or m -> shape tuple (noise drawn from key;
    key is unused, may be None, when x holds arrays). text [B, L, D], text_mask [B, L]. mu: scalar or m -> scalar (see
    `jav.flow.sampling_mu`). clean: m -> [B, N_m] (or [N_m]) bool, held at x_clean[m].
    on_step: a host function called with the number of steps done after each step
    (through `jax.debug.callback`, for progress display). mean_velocity: the
    denoiser is a few-step student (model.interval_embed) called with
    `interval=` m -> [B, N_m], the length of the step its velocity spans (0 on clean
    tokens), so that one step jumps from t to t_next along the teacher's path.
    Returns m -> [B, N_m, P_m].
    """
    x = _init_noise(key, x)
    clean_m = _clean_masks(x, clean, x_clean)
    sig = _schedules(num_steps, mu, x)

    def step(x, inputs):  # s: m -> (t, t_next) scalars
        i, s = inputs
        t = _token_t(clean_m, {m: s[m][0] for m in s})

        def spanning(xx, tt, *args):  # noisy tokens (t > 0) span this step, clean ones nothing
            return denoise_fn(xx, tt, *args, interval={m: jnp.where(tt[m] > 0, s[m][0] - s[m][1], 0.0) for m in tt})

        v = guided_velocity(spanning if mean_velocity else denoise_fn, x, t, text, text_mask, guidance, negative)
        x = {m: (x[m] + (s[m][1] - s[m][0]) * v[m]).astype(x[m].dtype) for m in x}
        if on_step is not None:
            jax.debug.callback(on_step, i + 1)
        return _hold(x, clean_m, x_clean), None

    xs = (jnp.arange(num_steps), {m: (sig[m][:-1], sig[m][1:]) for m in sig})
    x, _ = jax.lax.scan(step, _hold(x, clean_m, x_clean), xs)
    return x


# ---------------------------------------------------------------------------
# SDE (Flow-GRPO).


def sde_step(x, v, t, t_next, noise, noise_level=0.7):
    """One Euler-Maruyama step of the flow SDE with the ODE's marginals; returns (x_next, mean, std).

    x, v, noise [B, N, P]; t, t_next [B, N] (per token, t_next <= t); std [B, N].
    The reverse SDE with diffusion sigma_t = a sqrt(t / (1 - t)) has drift
    v + sigma_t^2 / (2t) (x + (1 - t) v), the score of rectified flow being
    -(x + (1 - t) v) / t; sigma_t^2 / (2t) = a^2 / (2 (1 - t)) is written without
    the division by t so that clean tokens (t = 0) stay finite.

    Degenerate ends, handled explicitly:
      * t = 1: sigma_t is infinite; as in Flow-GRPO, 1 - t is taken at the next grid
        point (1 - t_next) there.
      * t_next = 0 (the last step): the step is the deterministic Euler step
        x - t v (the model's clean estimate) with std 0. An Euler-Maruyama step into
        t = 0 would leave noise of std a t / sqrt(1 - t) in the final sample that
        the continuous SDE does not, and a point mass has no density: its log-prob
        is reported as 0 (see `gaussian_logprob`).
    Clean tokens (t = t_next = 0) get x_next = x and std 0.
    """
    dt = (t_next - t)[..., None]  # [B, N, 1], <= 0
    t_den = jnp.where(t >= 1.0, t_next, t)  # the t = 1 care
    one_minus = 1.0 - t_den
    c = noise_level**2 / (2.0 * one_minus)  # sigma_t^2 / (2t), [B, N]
    tt = t[..., None]
    sde_mean = x + (v + c[..., None] * (x + (1.0 - tt) * v)) * dt
    sde_std = noise_level * jnp.sqrt(t / one_minus) * jnp.sqrt(t - t_next)  # [B, N]
    stochastic = t_next > 0.0
    mean = jnp.where(stochastic[..., None], sde_mean, x + v * dt)
    std = jnp.where(stochastic, sde_std, 0.0)
    x_next = mean + std[..., None] * noise
    return x_next.astype(x.dtype), mean, std


def gaussian_logprob(x_next, mean, std, mask=None):
    """[B] log N(x_next; mean, std^2 I) summed over tokens where mask and std > 0.

    x_next, mean [B, N, P]; std, mask [B, N]. Tokens with std == 0 (deterministic:
    clean tokens, the last step, noise_level 0) contribute 0.
    """
    x_next = x_next.astype(jnp.float32)
    mean = mean.astype(jnp.float32)
    keep = std > 0.0
    if mask is not None:
        keep = keep & mask
    safe = jnp.where(keep, std, 1.0)[..., None]
    lp = -0.5 * jnp.square((x_next - mean) / safe) - jnp.log(safe) - 0.5 * math.log(2.0 * math.pi)
    return jnp.where(keep, lp.sum(-1), 0.0).sum(-1)


class SDEOutput(NamedTuple):
    x: dict  # m -> [B, N_m, P_m], the samples
    logprob: jax.Array  # [B, num_steps], log-prob of each transition (last step: 0)
    trajectory: dict | None  # m -> [num_steps + 1, B, N_m, P_m] states, if requested


def sde_sample(
    denoise_fn: DenoiseFn,
    key,
    x,
    text,
    text_mask,
    *,
    num_steps: int,
    mu,
    guidance: Guidance = NO_GUIDANCE,
    noise_level=0.7,
    clean: dict | None = None,
    x_clean: dict | None = None,
    return_trajectory: bool = False,
    clip_keys: jax.Array | None = None,
    negative=None,
) -> SDEOutput:
    """Flow-GRPO sampling: `sde_step` along the schedule, recording log-probs.

    Arguments as `euler_sample`, plus noise_level (a; 0 gives the Euler ODE; a
    [num_steps] array gives each step its own, e.g. SDE steps inside a window and
    ODE steps outside it, as MixGRPO samples) and return_trajectory. logprob[:, i] sums the Gaussian log-density of transition i
    over both modalities' noisy tokens (clean tokens excluded); the last step is
    deterministic and records 0 (see `sde_step`).

    To re-evaluate stored transitions under new parameters: with
    s = sigma_schedule(num_steps, mu[m]) and t_i = where(clean, 0, s[i]), call
    `sde_step(traj[i], v_new, t_i, t_{i+1}, noise, a)` for (mean, std) (noise does
    not affect them) and `gaussian_logprob(traj[i + 1], mean, std, ~clean)`.

    clip_keys: [B] keys, one per clip, from which each clip's step noise is drawn
    (its initial noise then comes in `x`), so that a clip's trajectory does not
    depend on the batch it is sampled in; `key` is then unused.
    negative: (text, mask) of negative prompts for text guidance (see `guided_velocity`).
    """
    if clip_keys is None:
        k_init, k_steps = jax.random.split(key)
        x = _init_noise(k_init, x)
        step_keys = jax.random.split(k_steps, num_steps)
    else:  # [num_steps, B]: step i's key of each clip
        step_keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, 1), num_steps), out_axes=1)(clip_keys)
    clean_m = _clean_masks(x, clean, x_clean)
    sig = _schedules(num_steps, mu, x)
    names = sorted(x)

    def step(x, inp):
        s, k, a = inp
        t = _token_t(clean_m, {m: s[m][0] for m in s})
        t_next = _token_t(clean_m, {m: s[m][1] for m in s})
        v = guided_velocity(denoise_fn, x, t, text, text_mask, guidance, negative)
        x_next, lp = {}, 0.0
        for i, m in enumerate(names):
            if clip_keys is None:
                eps = standard_normal(jax.random.fold_in(k, i), x[m].shape)
            else:  # k: [B] keys
                eps = jax.vmap(lambda kb, s=x[m].shape[1:], i=i: standard_normal(jax.random.fold_in(kb, i), s))(k)
            x_next[m], mean, std = sde_step(x[m], v[m], t[m], t_next[m], eps, a)
            lp = lp + gaussian_logprob(x_next[m], mean, std, ~clean_m[m])
        return _hold(x_next, clean_m, x_clean), (lp, x if return_trajectory else None)

    x0 = _hold(x, clean_m, x_clean)
    levels = jnp.broadcast_to(jnp.asarray(noise_level, jnp.float32), (num_steps,))
    xs = ({m: (sig[m][:-1], sig[m][1:]) for m in sig}, step_keys, levels)
    x_final, (lp, states) = jax.lax.scan(step, x0, xs)
    trajectory = None
    if return_trajectory:
        trajectory = {m: jnp.concatenate([states[m], x_final[m][None]], axis=0) for m in x_final}
    return SDEOutput(x=x_final, logprob=lp.T, trajectory=trajectory)
