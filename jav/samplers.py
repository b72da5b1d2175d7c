"""Jit-compatible samplers for the joint audio-video flow model.

A time-shifted sigma schedule (optionally stretched to a terminal timestep, or a
fixed list: `Schedule`), classifier-free text guidance per modality plus modality
guidance and spatio-temporal guidance (STG) in one batched denoiser call, with
optional guidance rescale, the Euler probability-flow ODE sampler, and the
Flow-GRPO SDE sampler with per-step Gaussian log-probabilities (and the pure step /
log-density functions that reward tuning re-evaluates).

LTX-2's recipe (the defaults of diffusers' `LTX2Pipeline`) is `SCHEDULES["ltx2"]` with
`Guidance(text_video=3, text_audio=7, modality=3, stg=1, stg_blocks=(28,), rescale=0.7)`
(block 28 is LTX-2.3's; diffusers names 29 for LTX-2.0), and its distilled model's is
`SCHEDULES["ltx2_distilled"]` (8 steps) without guidance; tests/test_ltx2_sampling.py
checks both against the pipeline.

Conditioning is by clean tokens: where `clean[m]` [B, N_m] is True the token is held
at `x_clean[m]` with timestep 0 for the whole trajectory (I2VA: the first frame;
V2A: all video; A2V: all audio). Tokens are m -> [B, N_m, P_m], as in `jav.flow`.

Jitting: `denoise_fn`, `num_steps`, `guidance`, `schedule` and `return_trajectory`
are static, for example `jax.jit(euler_sample, static_argnums=0, static_argnames=("num_steps",
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


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Where a sampler's steps fall between t = 1 and t = 0 (hashable: a static argument).

    By default a uniform grid time-shifted by mu (`jav.flow.time_shift`, mu from the
    token count: `jav.flow.sampling_mu`). terminal > 0 then stretches the timesteps
    above 0 so that 1 stays 1 and the last one becomes `terminal` (LTX-2: 0.1):
    t -> 1 - (1 - t)(1 - terminal) / (1 - t_last), the final step jumping from
    `terminal` to 0. sigmas: fixed timesteps, one per step from 1 down (0 follows),
    taken as they are, without mu or stretch (a distilled model's own schedule).
    """

    terminal: float = 0.0
    sigmas: tuple[float, ...] = ()


# LTX-2's distilled model samples these 8 steps (without guidance)
LTX2_DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)
# sample.schedule: the name of a run's schedule
SCHEDULES = {
    "shift": Schedule(),
    "ltx2": Schedule(terminal=0.1),
    "ltx2_distilled": Schedule(sigmas=LTX2_DISTILLED_SIGMAS),
}


def schedule_from(cfg) -> Schedule:
    """A run's sampling schedule (cfg.sample.schedule, a name of SCHEDULES)."""
    name = cfg.sample.schedule
    if name not in SCHEDULES:
        raise ValueError(f"sample.schedule={name!r} is not one of {tuple(SCHEDULES)}")
    return SCHEDULES[name]


def sigma_schedule(num_steps: int, mu, schedule: Schedule = SCHEDULES["shift"]) -> jax.Array:
    """[num_steps + 1] timesteps from 1 down to 0 (see `Schedule`): by default a uniform grid, time-shifted by mu."""
    if schedule.sigmas:
        if len(schedule.sigmas) != num_steps:
            raise ValueError(f"this schedule has {len(schedule.sigmas)} fixed steps; sample {len(schedule.sigmas)} steps, not {num_steps}")
        return jnp.asarray(schedule.sigmas + (0.0,), jnp.float32)
    s = time_shift(jnp.linspace(1.0, 0.0, num_steps + 1), mu)
    if not schedule.terminal:
        return s
    if num_steps < 2:
        raise ValueError(f"a schedule stretched to terminal={schedule.terminal} needs 2 or more steps (its one step would start at 1)")
    gap = 1.0 - s[:-1]  # [num_steps], 0 first
    stretched = 1.0 - gap / (gap[-1] / (1.0 - schedule.terminal))
    return jnp.concatenate([stretched, s[-1:]])


# ---------------------------------------------------------------------------
# Guidance.


@dataclasses.dataclass(frozen=True)
class Guidance:
    """Guidance scales: 1.0 switches a text or modality term off, 0.0 STG or the
    rescale; a term that is off skips its denoiser pass.

    text_video / text_audio: classifier-free guidance on the caption, per modality;
    modality: away from the pass without the cross-modal coupling; stg (spatio-temporal
    guidance): away from a pass whose blocks `stg_blocks` (0-based) skip their
    self-attention, video and audio (`jav.models.av_dit.AVDiT`'s `perturbed`), by
    stg x (conditional - perturbed), LTX-2's convention; rescale: LTX-2's guidance
    rescale, which pulls each sample's guided clean estimate back towards the
    conditional one's standard deviation (`guided_velocity`).

    With float scales it is hashable, so it can be a static argument of a jitted
    sampler. A scale may also be a [B] array, one per sample (a distillation
    teacher's target over a range of scales): its term's pass always runs.
    """

    text_video: float | jax.Array = 1.0
    text_audio: float | jax.Array = 1.0
    modality: float | jax.Array = 1.0
    stg: float | jax.Array = 0.0
    stg_blocks: tuple[int, ...] = ()
    rescale: float | jax.Array = 0.0

    def text_scale(self, modality: str):
        return {"video": self.text_video, "audio": self.text_audio}[modality]

    def uses_text(self) -> bool:
        """Whether a text scale is on (the unconditional pass runs, and a negative prompt can replace it)."""
        return _on(self.text_video) or _on(self.text_audio)

    def uses_stg_or_rescale(self) -> bool:
        """Whether STG or the rescale is on: neither is an input of a distilled student (`as_array`)."""
        return _on(self.stg, off=0.0) or _on(self.rescale, off=0.0)

    def record(self) -> dict:
        """The scales as a sample's JSON records them: the three text and modality scales, and
        STG (scale and blocks) and the rescale where they are on."""
        out = dict(text_video=self.text_video, text_audio=self.text_audio, modality=self.modality)
        if _on(self.stg, off=0.0):
            out.update(stg=self.stg, stg_blocks=list(self.stg_blocks))
        if _on(self.rescale, off=0.0):
            out.update(rescale=self.rescale)
        return out

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
        stg=s.stg_scale,
        stg_blocks=tuple(int(b) for b in s.stg_blocks),
        rescale=s.guidance_rescale,
    )


def passes_per_step(guidance: Guidance) -> int:
    """Network passes of one guided step: the conditional pass, plus the unconditional one
    when a text scale is on, plus the one without the coupling when the modality scale is,
    plus the perturbed one when the STG scale is."""
    return 1 + guidance.uses_text() + _on(guidance.modality) + _on(guidance.stg, off=0.0)


def _on(scale, off: float = 1.0) -> bool:
    """Whether a guidance term needs its pass: an array scale always does, a float one unless `off`."""
    return not isinstance(scale, (int, float)) or scale != off


def _times(scale, delta: jax.Array, off: float = 1.0) -> jax.Array:
    """(scale - off) * delta, a per-sample [B] scale broadcast over [B, N, P]."""
    if isinstance(scale, (int, float)):
        return (scale - off) * delta
    return (jnp.asarray(scale, jnp.float32) - off).reshape((-1,) + (1,) * (delta.ndim - 1)) * delta


NO_GUIDANCE = Guidance()
LTX2_GUIDANCE = Guidance(text_video=3.0, text_audio=7.0, modality=3.0)


def guided_velocity(denoise_fn: DenoiseFn, x: dict, t: dict, text, text_mask, guidance: Guidance = NO_GUIDANCE, negative=None) -> dict:
    """Guided velocity per modality from ONE batched denoiser call.

    Passes, concatenated along the batch axis: conditional; unconditional (all-False
    text mask) if a text scale != 1; cross-modal off if guidance.modality != 1;
    perturbed if guidance.stg != 0 (the denoiser is then called with `perturbed=`
    [n * B] bool, True on that pass's rows, and `stg_blocks=`: AVDiT's STG arguments).
    Then v[m] = v_c + (s_text[m] - 1)(v_c - v_uncond) + (s_mod - 1)(v_c - v_nocross)
    + s_stg (v_c - v_perturbed), and with guidance.rescale = r != 0 each sample's
    clean estimate x0 = x - t v is scaled by 1 - r + r std(x0_c) / std(x0) (standard
    deviations over the sample's tokens and channels of the modality, x0_c the
    conditional pass's): LTX-2's rescale, against the over-saturation of large scales.
    `text` [B, L, D] and `text_mask` [B, L] may be dicts m -> those, a text per modality
    (LTX-2's connectors give each branch its own).
    `negative`: (text, mask) of negative prompts, same shapes as text / text_mask: the
    text-guidance pass reads them instead of no text, so guidance pushes away from them.
    The denoiser therefore sees a batch of n * B ([cond | uncond | nocross | perturbed]);
    per-sample arrays it closes over (positions, padding masks) must follow: `tile_to_batch`.
    """
    use_text = any(_on(guidance.text_scale(m)) for m in x)
    use_modality = _on(guidance.modality)
    use_stg = _on(guidance.stg, off=0.0)
    if negative is not None and not use_text:
        raise ValueError("a negative prompt acts through text guidance: set a text guidance scale above 1")
    if use_stg and not guidance.stg_blocks:
        raise ValueError("STG skips the self-attention of the blocks guidance.stg_blocks names (sample.stg_blocks): name at least one")
    batch = next(iter(x.values())).shape[0]
    on = jnp.ones((batch,), bool)
    passes = [(text, text_mask, on, ~on)]  # (text, text mask, cross_modal, perturbed) of each pass
    if use_text:
        neg_text, neg_mask = negative if negative is not None else (text, jax.tree.map(jnp.zeros_like, text_mask))
        passes.append((jax.tree.map(lambda a, b: a.astype(b.dtype), neg_text, text), neg_mask, on, ~on))
    if use_modality:
        passes.append((text, text_mask, ~on, ~on))
    if use_stg:
        passes.append((text, text_mask, on, on))
    n = len(passes)
    if n == 1:
        return denoise_fn(x, t, text, text_mask, on)

    def rep(a):  # [B, ...] -> [n * B, ...]
        return jnp.concatenate([a] * n, axis=0)

    texts, masks, cross, perturbed = (jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *column) for column in zip(*passes))
    stg = dict(perturbed=perturbed, stg_blocks=guidance.stg_blocks) if use_stg else {}
    out = denoise_fn({m: rep(x[m]) for m in x}, {m: rep(t[m]) for m in t}, texts, masks, cross, **stg)
    v = {}
    for m in x:
        v_c, *rest = jnp.split(out[m], n, axis=0)
        vm = v_c
        if use_text:
            vm = vm + _times(guidance.text_scale(m), v_c - rest.pop(0))
        if use_modality:
            vm = vm + _times(guidance.modality, v_c - rest.pop(0))
        if use_stg:
            vm = vm + _times(guidance.stg, v_c - rest.pop(0), off=0.0)
        if _on(guidance.rescale, off=0.0):
            vm = rescaled(vm, v_c, x[m], t[m], guidance.rescale)
        v[m] = vm
    return v


def rescaled(v: jax.Array, v_cond: jax.Array, x: jax.Array, t: jax.Array, factor) -> jax.Array:
    """LTX-2's guidance rescale (arXiv:2305.08891, section 3.4, applied to clean estimates):
    the guided velocity v [B, N, P] after its clean estimate x0 = x - t v is scaled per
    sample by 1 - factor + factor std(x0_cond) / std(x0), where x0_cond = x - t v_cond and
    the standard deviations run over the sample's tokens and channels. x [B, N, P], t [B, N]
    per token, factor a float or [B]. Tokens at t = 0 (held clean) keep v."""
    tt = t[..., None].astype(jnp.float32)
    x = x.astype(jnp.float32)
    x0, x0_cond = x - tt * v, x - tt * v_cond
    axes = tuple(range(1, v.ndim))
    ratio = jnp.std(x0_cond, axis=axes, keepdims=True) / jnp.std(x0, axis=axes, keepdims=True)  # [B, 1, 1]
    x0 = x0 * (1.0 + _times(factor, ratio - 1.0, off=0.0))
    return jnp.where(tt > 0, (x - x0) / jnp.where(tt > 0, tt, 1.0), v)


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


def _schedules(num_steps: int, mu, modalities, schedule: Schedule) -> dict:
    """m -> [num_steps + 1]; mu is a scalar or a per-modality dict."""
    return {m: sigma_schedule(num_steps, mu[m] if isinstance(mu, dict) else mu, schedule) for m in modalities}


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
    schedule: Schedule = SCHEDULES["shift"],
) -> dict:
    """Euler steps of the probability-flow ODE from t = 1 to 0, in one lax.scan.

    x: m -> initial noise [B, N_m, P_m], or m -> shape tuple (noise drawn from key;
    key is unused, may be None, when x holds arrays). text [B, L, D], text_mask [B, L]
    (or m -> those: see `guided_velocity`). mu: scalar or m -> scalar (see
    `jav.flow.sampling_mu`); schedule: where the steps fall (`Schedule`). clean: m -> [B, N_m] (or [N_m]) bool, held at x_clean[m].
    on_step: a host function called with the number of steps done after each step
    (through `jax.debug.callback`, for progress display). mean_velocity: the
    denoiser is a few-step student (model.interval_embed) called with
    `interval=` m -> [B, N_m], the length of the step its velocity spans (0 on clean
    tokens), so that one step jumps from t to t_next along the teacher's path.
    Returns m -> [B, N_m, P_m].
    """
    x = _init_noise(key, x)
    clean_m = _clean_masks(x, clean, x_clean)
    sig = _schedules(num_steps, mu, x, schedule)

    def step(x, inputs):  # s: m -> (t, t_next) scalars
        i, s = inputs
        t = _token_t(clean_m, {m: s[m][0] for m in s})

        def spanning(xx, tt, *args, **kw):  # noisy tokens (t > 0) span this step, clean ones nothing
            return denoise_fn(xx, tt, *args, **kw, interval={m: jnp.where(tt[m] > 0, s[m][0] - s[m][1], 0.0) for m in tt})

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
    schedule: Schedule = SCHEDULES["shift"],
) -> SDEOutput:
    """Flow-GRPO sampling: `sde_step` along the schedule, recording log-probs.

    Arguments as `euler_sample`, plus noise_level (a; 0 gives the Euler ODE; a
    [num_steps] array gives each step its own, e.g. SDE steps inside a window and
    ODE steps outside it, as MixGRPO samples) and return_trajectory. logprob[:, i] sums the Gaussian log-density of transition i
    over both modalities' noisy tokens (clean tokens excluded); the last step is
    deterministic and records 0 (see `sde_step`).

    To re-evaluate stored transitions under new parameters: with
    s = sigma_schedule(num_steps, mu[m], schedule) and t_i = where(clean, 0, s[i]), call
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
    sig = _schedules(num_steps, mu, x, schedule)
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
