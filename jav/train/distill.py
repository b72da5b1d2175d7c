"""The distillation phase: a student that samples in one network pass per step and
in a few steps what a teacher samples in many, guided, passes.

`python -m jav.train --config configs/distill.py:TEACHER_RUN --workdir DIR` runs it
(`cfg.phase = "distill"`). The teacher is a diffusion run referenced by its
directory: loaded frozen (`loop.Frozen`, never saved) at the step recorded in
DIR/teacher.json at the first start, so that a resumed run distils the same
teacher even if the teacher's run has trained on. The student has the teacher's
architecture plus two inputs that start at zero (jav.models.av_dit), so it starts
as the teacher:

- `model.guidance_embed`: the guidance scales (text on video, text on audio,
  modality) are an input. Each clip of a batch draws its scales from the ranges in
  `distill.guidance`, and the student learns in one pass the teacher's guided
  velocity for them (up to three teacher passes, `jav.samplers.guided_velocity`).
- `model.interval_embed`: the student's output is the mean velocity over a step
  from t to r (x_r = x_t - (t - r) u). A fraction `distill.mean_fraction` of clips
  draws r uniformly below t, the rest r = t (the guided velocity itself). Sampled
  with the config's `sample.steps` (4) Euler steps, each spanning its step. Its
  target over [r, t] is either (`distill.teacher_steps` = 0) the identity a mean
  velocity obeys along the teacher's path (MeanFlow): u(x_t, r, t) = v(x_t, t) -
  (t - r) du/dt, with v the teacher's guided velocity and du/dt the student's own
  total derivative along v, one `jax.jvp`; or (`teacher_steps` = K > 0) the
  teacher's own path: K guided Euler steps of the teacher from t to r, u = (x_t -
  x_r) / (t - r), which refers to no student output (K teacher evaluations, no JVP).

Clips are noised data, drawn as pretraining draws them (`jav.flow`): every task
of the shared model (T2VA, I2VA, T2V, V2A, A2V: clean tokens at t = 0, whose step
length is 0) is distilled, with its per-token timesteps. The loss is
`jav.flow.velocity_loss` (the teacher's `flow.loss_space` weighting) against the
teacher's target; the student keeps an EMA like any run, and `jav.sample` /
`jav.evaluate` sample it from its own config.

Distribution matching (`distill.dmd.weight` > 0, DMD2's generator loss added to the
regression): a third network, the critic ("critic": the teacher's architecture,
initialised from the teacher, trained with its own optimiser state), learns the
flow of the student's own samples. Each step the student samples `distill.dmd.batch`
of the batch's captions as T2VA in its `sample.steps` steps, differentiably; the
samples are noised to a t drawn in `distill.dmd.t_range`, and the teacher's guided
clean estimate (the sampling scales) and the critic's are compared there: the
student's samples move along (critic's estimate - teacher's), normalised per clip
and modality by the mean distance of the sample to the teacher's estimate. So the
gradient reaches the first of the student's steps, where the joint timing of a
clip is decided, which the regression onto the teacher's path fits step by step.
Then the critic takes `distill.dmd.critic_updates` flow-matching updates on those
samples (without gradient into the student).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jav import flow, samplers, sharding
from jav.models import AVDiT, init_model
from jav.models.av_dit import GUIDANCE_TERMS
from jav.runs import load_config, pinned_reference
from jav.train import loop
from jav.train.checkpoint import restore_params_from
from jav.train.diffusion import DiffusionPhase, validate as validate_diffusion
from jav.train.step import freeze_grads, guarded_update, trainable_pattern

STUDENT_INPUTS = ("guidance_embed", "interval_embed")  # what the student's model config adds to the teacher's


def distill_config(teacher: str = "") -> ml_collections.ConfigDict:
    """The `distill` block of a config (configs/distill.py)."""
    return ml_collections.ConfigDict(
        dict(
            teacher=teacher,  # the teacher's run directory (a diffusion run)
            teacher_weights="ema",  # "ema" or "params"
            teacher_step=0,  # 0: its latest step at the first start (kept in WORKDIR/teacher.json)
            teacher_dtype="float32",  # the frozen teacher's parameters: "bfloat16" halves their memory (computed in model.dtype)
            # [low, high] of each guidance scale, drawn uniformly per clip; [1, 1]: that
            # term off (its teacher pass skipped). Sampling works at any scale in range.
            guidance=dict(text_video=[1.0, 3.0], text_audio=[1.0, 1.0], modality=[1.0, 1.0]),
            # with model.interval_embed: the fraction of clips trained on a step of random
            # length (r uniform in [0, t)); the others learn the velocity at r = t
            mean_fraction=0.75,
            # the derivative term of the mean-velocity target ramps in from 0 over this
            # many steps: the target refers to the student itself, which starts far from it
            jvp_warmup=100,
            # each clip's loss weighted by 1 / (its loss + 1e-3)^p, without gradient
            # through the weight (MeanFlow's adaptive weighting; 0: plain mean squares):
            # the mean-velocity targets are heavy-tailed
            adaptive_p=1.0,
            # the mean-velocity target: 0, MeanFlow's identity (one JVP through the student);
            # K > 0, K guided Euler steps of the teacher over the step (no student in the target).
            # 4 with grid_fraction 0.67 gave the best 4-step student of the run of record
            # (T2VA 97 ms / F1 0.58 against MeanFlow's 227 / 0.31: benchmarks/RESULTS.md)
            teacher_steps=4,
            # of the clips that span a step, the fraction placed on the student's own sampling
            # grid (`sample.steps` steps of the run's schedule, each modality at its own mu):
            # t = s_k and t - r = s_k - s_(k+1) for a step k drawn uniformly, the clip re-noised
            # at s_k; the others draw r uniformly below t. 0: off-grid only
            grid_fraction=0.67,
            # distribution matching (DMD2's generator loss, beside the regression): weight 0 off.
            # batch: the clips of each batch whose captions the student samples (T2VA) for it;
            # critic_updates: the critic's flow-matching updates per step on those samples;
            # t_range: where the samples are noised for the teacher's and the critic's estimates
            # critic_warmup: the first steps train only the critic (the DMD term's weight 0), which
            # starts as the teacher's unguided flow, not the student's
            dmd=dict(weight=0.0, batch=4, critic_updates=1, t_range=[0.02, 0.98], critic_warmup=0),
        )
    )


def student_config(teacher_cfg, teacher: str = "") -> ml_collections.ConfigDict:
    """A distillation config from the teacher's: its data, model, flow, optimiser and
    mesh, `phase="distill"`, the student's two inputs on, 4 sampling steps and the
    short run of a fine-tune (configs/distill.py; jav.aot --compile distill plans it)."""
    cfg = ml_collections.ConfigDict(teacher_cfg.to_dict())
    cfg.phase = "distill"
    cfg.distill = distill_config(teacher)
    for term in GUIDANCE_TERMS:  # the range reaches the teacher's own sampling scale, which the student samples at
        low, high = cfg.distill.guidance[term]
        cfg.distill.guidance[term] = [low, max(high, float(teacher_cfg.sample[term]))]
    cfg.model.guidance_embed = True
    cfg.model.interval_embed = True
    cfg.init_from = ""  # the student starts from the teacher (distill.teacher)
    cfg.train.steps = 300
    cfg.train.checkpoint_every = 100
    cfg.train.ema_decay = 0.99
    cfg.optim.lr = 5e-4
    cfg.optim.warmup_steps = 20
    cfg.sample.steps = 4
    return cfg


def _architecture(model_cfg) -> dict:
    return {k: v for k, v in model_cfg.to_dict().items() if k not in STUDENT_INPUTS}


def validate_distill(cfg) -> ml_collections.ConfigDict:
    """Checks the distill block against the teacher's run -> the teacher's config."""
    d = cfg.get("distill")
    if d is None or not d.get("teacher"):
        raise ValueError("distill.teacher is not set: make the config with configs/distill.py:TEACHER_RUN_DIR")
    teacher_cfg = load_config(d.teacher)
    if teacher_cfg.get("phase", "diffusion") != "diffusion":
        raise ValueError(f"distill.teacher={d.teacher} is a {teacher_cfg.phase} run; the teacher must be a diffusion run")
    if _architecture(teacher_cfg.model) != _architecture(cfg.model):
        diff = sorted(
            k
            for k in set(_architecture(teacher_cfg.model)) | set(_architecture(cfg.model))
            if _architecture(teacher_cfg.model).get(k) != _architecture(cfg.model).get(k)
        )
        raise ValueError(
            f"the student's model differs from the teacher's ({d.teacher}) in model.{', model.'.join(diff)}; "
            f"a student starts as its teacher: only {STUDENT_INPUTS} may differ (make the config with configs/distill.py)"
        )
    if not cfg.model.get("guidance_embed", False):
        raise ValueError("model.guidance_embed=False: a distilled student takes the guidance scales as input; set it to True")
    if d.get("teacher_dtype", "float32") not in ("float32", "bfloat16"):
        raise ValueError(f"distill.teacher_dtype={d.teacher_dtype!r} is not 'float32' or 'bfloat16'")
    if d.teacher_weights not in ("ema", "params"):
        raise ValueError(f"distill.teacher_weights={d.teacher_weights!r} is not 'ema' or 'params'")
    if d.teacher_weights == "ema" and not teacher_cfg.train.get("ema_decay"):
        raise ValueError(f"{d.teacher} kept no EMA (train.ema_decay=0); set distill.teacher_weights='params'")
    for term in GUIDANCE_TERMS:
        low, high = d.guidance[term]
        if not 1.0 <= low <= high:
            raise ValueError(f"distill.guidance.{term}={[low, high]} must be [low, high] with 1 <= low <= high (1: the term off)")
        if not low <= cfg.sample[term] <= high:
            raise ValueError(
                f"sample.{term}={cfg.sample[term]} is outside distill.guidance.{term}={[low, high]}, the scales the "
                f"student learns; widen the range or sample inside it"
            )
    if d.get("jvp_warmup", 0) < 0 or d.get("adaptive_p", 0.0) < 0:
        raise ValueError(f"distill.jvp_warmup={d.jvp_warmup} and distill.adaptive_p={d.adaptive_p} must be >= 0")
    if not 0.0 <= d.mean_fraction <= 1.0:
        raise ValueError(f"distill.mean_fraction={d.mean_fraction} must be in [0, 1]")
    if not 0.0 <= d.get("grid_fraction", 0.0) <= 1.0:
        raise ValueError(f"distill.grid_fraction={d.grid_fraction} must be in [0, 1]")
    if d.get("grid_fraction", 0.0) and not cfg.model.get("interval_embed"):
        raise ValueError("distill.grid_fraction > 0 places steps on the sampling grid; it needs model.interval_embed=True")
    dmd = d.get("dmd")
    if dmd is not None and dmd.weight:
        if dmd.weight < 0:
            raise ValueError(f"distill.dmd.weight={dmd.weight} must be >= 0 (0: no distribution matching)")
        if not cfg.model.get("interval_embed"):
            raise ValueError("distill.dmd.weight > 0 samples the student in its sample.steps steps; it needs model.interval_embed=True")
        if not 1 <= dmd.batch <= cfg.train.batch_size:
            raise ValueError(f"distill.dmd.batch={dmd.batch} must be in [1, train.batch_size={cfg.train.batch_size}]")
        if not isinstance(dmd.get("critic_warmup", 0), int) or dmd.get("critic_warmup", 0) < 0:
            raise ValueError(f"distill.dmd.critic_warmup={dmd.critic_warmup!r} must be a whole number of steps >= 0")
        if not isinstance(dmd.critic_updates, int) or dmd.critic_updates < 1:
            raise ValueError(f"distill.dmd.critic_updates={dmd.critic_updates!r} must be a whole number >= 1")
        low, high = dmd.t_range
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"distill.dmd.t_range={list(dmd.t_range)} must be [low, high] with 0 < low <= high < 1")
    k = d.get("teacher_steps", 0)
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"distill.teacher_steps={k!r} must be a whole number >= 0 (0: MeanFlow's target; K: K teacher Euler steps)")
    return teacher_cfg


def draw_guidance(key, ranges, batch: int) -> samplers.Guidance:
    """Per-clip scales, uniform in each term's [low, high]; a term whose range is [1, 1] stays the float 1.0 (off)."""
    scales = {}
    for i, term in enumerate(GUIDANCE_TERMS):
        low, high = (float(x) for x in ranges[term])
        scales[term] = 1.0 if high == 1.0 else jax.random.uniform(jax.random.fold_in(key, i), (batch,), jnp.float32, low, high)
    return samplers.Guidance(**scales)


def draw_interval(key, t: dict, fraction: float) -> dict:
    """m -> [B, N_m] step lengths t - r: for a `fraction` of clips r = u t with u ~ U[0, 1)
    shared by both modalities (a step from t towards 0), for the others 0. Clean
    tokens (t = 0) get 0."""
    k_pick, k_u = jax.random.split(key)
    batch = t["video"].shape[0]
    u = jax.random.uniform(k_u, (batch,), jnp.float32)
    spans = jax.random.uniform(k_pick, (batch,)) < fraction
    return {m: jnp.where(spans[:, None], (1.0 - u)[:, None] * t[m], 0.0) for m in t}


def sampling_grid(cfg, num_tokens: dict) -> tuple:
    """The timesteps a student of `cfg` samples at: ((m, (s_0, ..., s_K)), ...) for K =
    `sample.steps`, each modality at its own mu (`jav.flow.sampling_mu`); hashable, a
    static argument of the step."""
    mu = flow.sampling_mu(cfg.flow, num_tokens)
    schedule = samplers.schedule_from(cfg) if "schedule" in cfg.sample else samplers.SCHEDULES["shift"]
    return tuple(sorted((m, tuple(float(x) for x in samplers.sigma_schedule(cfg.sample.steps, mu[m], schedule))) for m in num_tokens))


def on_grid(key, t: dict, interval: dict, noisy: dict, grid: tuple, fraction: float) -> tuple[dict, dict]:
    """Moves a `fraction` of the clips that span a step onto the sampling grid: their
    noisy tokens get t = s_k and step length s_k - s_(k+1), k uniform per clip and
    shared by the modalities (as the sampler steps them together) -> (t, interval).
    noisy: m -> [B, N_m] bool, the tokens being generated; the others keep t and h."""
    k_pick, k_step = jax.random.split(key)
    batch = next(iter(t.values())).shape[0]
    k = jax.random.randint(k_step, (batch,), 0, len(grid[0][1]) - 1)
    spans = jnp.stack([h.max(-1) > 0 for h in interval.values()]).any(0)
    move = spans & (jax.random.uniform(k_pick, (batch,)) < fraction)
    t_new, h_new = {}, {}
    for m, s in grid:
        s = jnp.asarray(s, jnp.float32)
        where = move[:, None] & noisy[m]
        t_new[m] = jnp.where(where, s[k][:, None], t[m])
        h_new[m] = jnp.where(where, (s[k] - s[k + 1])[:, None], interval[m])
    return t_new, h_new


def distill_targets(
    teacher_fn, student_fn, x_t: dict, t: dict, text, text_mask, guidance: samplers.Guidance, interval: dict | None, student_text=None, ramp=1.0
) -> dict:
    """The student's regression targets (no gradient flows into them).

    teacher_fn / student_fn: `denoise_fn`s (the student's closes over its guidance
    input and takes `interval=`); `text` is the teacher's caption embedding,
    `student_text` the student's (default: the same). Without an interval: the teacher's guided
    velocity v. With one: the mean velocity over [t - h, t] by the MeanFlow
    identity, u = v - h du/dt, with du/dt the derivative of the student's output
    along the teacher's path (x moving by v, t and h by 1 on noisy tokens, clean
    tokens still), times `ramp` (the warm-up: 0 at the start of a run, then 1).
    """
    v = samplers.guided_velocity(teacher_fn, x_t, t, text, text_mask, guidance)
    if interval is None:
        return jax.lax.stop_gradient(v)
    cross = jnp.ones((text.shape[0],), bool)
    noisy = {m: (t[m] > 0).astype(jnp.float32) for m in t}

    def u_of(x, tt, h):
        return student_fn(x, tt, text if student_text is None else student_text, text_mask, cross, interval=h)

    tangents = ({m: v[m] * noisy[m][..., None] for m in v}, noisy, noisy)
    _, dudt = jax.jvp(u_of, (x_t, t, interval), tangents)
    return jax.lax.stop_gradient({m: v[m] - ramp * interval[m][..., None] * dudt[m] for m in v})


def teacher_path_targets(teacher_fn, x_t: dict, t: dict, text, text_mask, guidance: samplers.Guidance, interval: dict, steps: int) -> dict:
    """The mean velocity over [t - h, t] along the teacher's own path: `steps` Euler steps of its
    guided velocity from x_t at t (each token its own t and h; a token with h = 0 stays), then
    u = (x_t - x_r) / h where h > 0, and the guided velocity at x_t where h = 0. One traced teacher
    evaluation in a loop; no gradient flows into the targets."""
    dt = {m: interval[m] / steps for m in t}

    def body(k, carry):
        x, v0 = carry
        tau = {m: t[m] - k * dt[m] for m in t}
        v = samplers.guided_velocity(teacher_fn, x, tau, text, text_mask, guidance)
        v0 = {m: jnp.where(k == 0, v[m], v0[m]) for m in v}
        return {m: x[m] - dt[m][..., None] * v[m] for m in x}, v0

    x_r, v0 = jax.lax.fori_loop(0, steps, body, (x_t, {m: jnp.zeros_like(x) for m, x in x_t.items()}))
    span = {m: interval[m][..., None] for m in interval}
    return jax.lax.stop_gradient({m: jnp.where(span[m] > 0, (x_t[m] - x_r[m]) / jnp.where(span[m] > 0, span[m], 1.0), v0[m]) for m in x_t})


def student_rollout(student_fn, noise: dict, text, text_mask, grid: tuple) -> dict:
    """The student's own sampler, differentiable: from pure noise (every token generated, T2VA)
    `sample.steps` Euler steps of one pass each over `grid` (`sampling_grid`), each spanning
    its step, as `jav.samplers.euler_sample(mean_velocity=True)` takes them -> m -> x0."""
    sched = {m: jnp.asarray(s, jnp.float32) for m, s in grid}
    batch = next(iter(noise.values())).shape[0]
    cross = jnp.ones((batch,), bool)

    def step(x, s):
        t = {m: jnp.full(x[m].shape[:2], s[m][0]) for m in x}
        h = {m: jnp.full(x[m].shape[:2], s[m][0] - s[m][1]) for m in x}
        u = student_fn(x, t, text, text_mask, cross, interval=h)
        return {m: (x[m] - h[m][..., None] * u[m]).astype(x[m].dtype) for m in x}, None

    x, _ = jax.lax.scan(step, noise, {m: (sched[m][:-1], sched[m][1:]) for m in sched})
    return x


def noised_copy(key, x0: dict, t_range) -> tuple[dict, dict, dict]:
    """x0 noised to one t per clip, uniform in t_range and shared by the modalities -> (x_t, t, eps)."""
    k_t, k_eps = jax.random.split(key)
    batch = next(iter(x0.values())).shape[0]
    td = jax.random.uniform(k_t, (batch,), jnp.float32, *(float(x) for x in t_range))
    eps = {m: jax.random.normal(jax.random.fold_in(k_eps, i), x0[m].shape, jnp.float32).astype(x0[m].dtype) for i, m in enumerate(sorted(x0))}
    t = {m: jnp.broadcast_to(td[:, None], x0[m].shape[:2]) for m in x0}
    return {m: flow.noise(x0[m], eps[m], t[m]) for m in x0}, t, eps


def dmd_direction(teacher_fn, critic_fn, key, x0: dict, teacher_text, critic_text, text_mask, guidance: samplers.Guidance, t_range) -> dict:
    """DMD2's generator direction for samples x0 (m -> [B, N_m, P_m]): noised to t, the
    critic's clean estimate minus the teacher's guided one, each clip and modality divided by
    the mean |x0 - teacher's estimate| -> m -> direction (no gradient). A loss whose gradient
    in x0 is this direction pulls the samples' distribution towards the teacher's."""
    x_t, t, _ = noised_copy(key, jax.lax.stop_gradient(x0), t_range)
    v_real = samplers.guided_velocity(teacher_fn, x_t, t, teacher_text, text_mask, guidance)
    v_fake = critic_fn(x_t, t, critic_text, text_mask, jnp.ones((text_mask.shape[0],), bool))
    out = {}
    for m in x0:
        tm = t[m][..., None]
        real = x_t[m] - tm * v_real[m]
        fake = x_t[m] - tm * v_fake[m]
        scale = jnp.abs(x0[m] - real).mean(axis=(1, 2), keepdims=True)
        out[m] = (fake - real) / jnp.maximum(scale, 1e-6)
    return jax.lax.stop_gradient(out)


def dmd_loss(x0: dict, direction: dict, flow_cfg) -> jax.Array:
    """0.5 mean (x0 - sg(x0 - direction))^2 per modality, weighted as the flow loss: its
    gradient in x0 is the direction over the element count."""
    per = {m: 0.5 * jnp.square(x0[m] - jax.lax.stop_gradient(x0[m] - direction[m])).mean() for m in x0}
    return flow_cfg.video_weight * per["video"] + flow_cfg.audio_weight * per["audio"]


def critic_loss(critic_params, x0: dict, text, text_mask, key, *, critic_graphdef, layout, flow_cfg, t_range):
    """The critic's flow-matching loss on the student's samples x0 (T2VA, every token noisy at
    one t per clip in t_range), plain mean squares in the run's loss space."""
    critic = nnx.merge(critic_graphdef, critic_params)
    x_t, t, eps = noised_copy(key, x0, t_range)
    v = layout.denoiser(critic)(x_t, t, text(critic), text_mask, jnp.ones((text_mask.shape[0],), bool))
    target = {m: flow.velocity_target(x0[m], eps[m]) for m in x0}
    loss, _ = flow.velocity_loss(v, target, t, {m: jnp.ones(t[m].shape, bool) for m in t}, flow_cfg)
    return loss


def text_reader(batch, rows=None):
    """model -> its caption embedding of `batch` (the model's own text encoder where the batch
    holds token ids), for the first `rows` clips (None: all)."""

    def cut(a):
        return a if rows is None else a[:rows]

    def text(model):
        return model.encode_text(cut(batch["text_ids"]), cut(batch["text_mask"])) if "text_ids" in batch else cut(batch["text_emb"])

    return text


def adaptive_loss(u: dict, target: dict, t: dict, loss_mask: dict, flow_cfg, p: float, eps: float = 1e-3):
    """`jav.flow.velocity_loss` per clip, each clip's loss weighted by 1 / (loss + eps)^p
    (no gradient through the weight) -> (weighted total, m -> plain loss, plain total).
    p = 0 is the plain loss."""
    weighted, plain = {}, {}
    for m in u:
        se = flow.token_error(u[m], target[m], t[m], flow_cfg)  # [B, N_m]
        mask = loss_mask[m].astype(jnp.float32)
        count = mask.sum(-1)
        per_clip = (se * mask).sum(-1) / jnp.maximum(count, 1.0)  # [B]
        has = (count > 0).astype(jnp.float32)
        w = jax.lax.stop_gradient(1.0 / (per_clip + eps) ** p) if p else 1.0
        clips = jnp.maximum(has.sum(), 1.0)
        weighted[m] = (w * per_clip * has).sum() / clips
        plain[m] = (se * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    def total(x):
        return flow_cfg.video_weight * x["video"] + flow_cfg.audio_weight * x["audio"]

    return total(weighted), plain, total(plain)


def distill_loss(
    params,
    teacher_params,
    batch,
    key,
    step=None,
    *,
    graphdef,
    teacher_graphdef,
    layout,
    flow_cfg,
    distill_cfg,
    grid=None,
    critic_params=None,
    critic_graphdef=None,
    dmd_guidance=None,
):
    """The student's loss on `batch` at training step `step` (None: past the warm-up)
    -> (loss to differentiate, (m -> plain loss, plain total, DMD extras)). `grid`: the student's
    sampling timesteps (`sampling_grid`), used where distill.grid_fraction > 0 and by the
    distribution matching. Differentiable in `params`; the teacher's passes, the critic's and
    the JVP make targets under stop_gradient, so no gradient reaches `teacher_params` or
    `critic_params`. With distill.dmd.weight > 0 (and the critic given) the extras hold
    "loss_dmd" and "samples", the student's T2VA samples (without gradient) the critic learns
    from, sampled at `dmd_guidance` ((text_video, text_audio, modality): the sampling scales)."""
    teacher = nnx.merge(teacher_graphdef, teacher_params)
    student = nnx.merge(graphdef, params)
    k_flow, k_guide, k_interval, k_grid = jax.random.split(key, 4)
    x0 = layout.to_tokens(batch["video"], batch["audio"])
    text_mask = batch["text_mask"]
    # the draws of pretraining (tasks, timesteps, noise); no condition dropout: the
    # student learns conditional, guided targets (the teacher runs the unguided passes)
    d = flow.sample_flow_inputs(k_flow, x0, text_mask, jnp.asarray(layout.first_frame), flow_cfg)
    batch_size = text_mask.shape[0]
    guidance = draw_guidance(k_guide, distill_cfg.guidance, batch_size)
    scales = guidance.as_array(batch_size)
    interval = draw_interval(k_interval, d.t, distill_cfg.mean_fraction) if student.interval is not None else None
    if interval is not None and distill_cfg.get("grid_fraction", 0.0):
        if grid is None:
            raise ValueError("distill.grid_fraction > 0 needs the sampling grid (distill_loss(grid=sampling_grid(cfg, layout.num_tokens)))")
        t_grid, interval = on_grid(k_grid, d.t, interval, d.loss_mask, grid, distill_cfg.grid_fraction)
        d = d._replace(t=t_grid)
    x_t = {m: flow.noise(x0[m], d.eps[m], d.t[m]) for m in x0}

    text_of = text_reader(batch)

    student_fn = layout.denoiser(student, scales)
    student_text = text_of(student)
    warmup = distill_cfg.get("jvp_warmup", 0)
    ramp = 1.0 if step is None or not warmup else jnp.minimum(1.0, step / warmup)
    if interval is not None and distill_cfg.get("teacher_steps", 0):
        target = teacher_path_targets(layout.denoiser(teacher), x_t, d.t, text_of(teacher), text_mask, guidance, interval, int(distill_cfg.teacher_steps))
    else:
        target = distill_targets(
            layout.denoiser(teacher), student_fn, x_t, d.t, text_of(teacher), text_mask, guidance, interval, jax.lax.stop_gradient(student_text), ramp
        )
    extra = {} if interval is None else {"interval": interval}
    u = student_fn(x_t, d.t, student_text, text_mask, jnp.ones((batch_size,), bool), **extra)
    loss, plain, plain_total = adaptive_loss(u, target, d.t, d.loss_mask, flow_cfg, distill_cfg.get("adaptive_p", 0.0))
    extras = {}
    dmd = distill_cfg.get("dmd")
    if dmd is not None and dmd.weight and critic_params is not None:
        loss_dmd, samples = _dmd_term(
            student, teacher, nnx.merge(critic_graphdef, critic_params), batch, x0, jax.random.fold_in(key, 7), layout, flow_cfg, dmd, grid, dmd_guidance
        )
        on = 1.0 if step is None else (step >= dmd.get("critic_warmup", 0)).astype(jnp.float32)
        loss = loss + on * dmd.weight * loss_dmd
        extras = dict(loss_dmd=loss_dmd, samples=samples)
    return loss, (plain, plain_total, extras)


def _dmd_term(student, teacher, critic, batch, x0, key, layout, flow_cfg, dmd, grid, scales):
    """(DMD loss, the samples without gradient) for the first dmd.batch captions of `batch`."""
    if grid is None or scales is None:
        raise ValueError("distribution matching needs the sampling grid and the sampling guidance (distill_loss(grid=..., dmd_guidance=...))")
    rows = int(dmd.batch)
    text = text_reader(batch, rows)
    text_mask = batch["text_mask"][:rows]
    k_noise, k_dir = jax.random.split(key)
    noise = {m: jax.random.normal(jax.random.fold_in(k_noise, i), (rows, *x0[m].shape[1:]), jnp.float32) for i, m in enumerate(sorted(x0))}
    guidance = samplers.Guidance(*scales)
    samples = student_rollout(layout.denoiser(student, guidance.as_array(rows)), noise, text(student), text_mask, grid)
    direction = dmd_direction(layout.denoiser(teacher), layout.denoiser(critic), k_dir, samples, text(teacher), text(critic), text_mask, guidance, dmd.t_range)
    return dmd_loss(samples, direction, flow_cfg), jax.lax.stop_gradient(samples)


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "teacher_graphdef",
        "tx",
        "layout",
        "flow_cfg",
        "distill_cfg",
        "ema_decay",
        "trainable",
        "grid",
        "critic_graphdef",
        "dmd_guidance",
    ),
    donate_argnums=(0,),
)
def distill_step(
    state,
    batch,
    key,
    step,
    *,
    graphdef,
    teacher_graphdef,
    tx,
    layout,
    flow_cfg,
    distill_cfg,
    ema_decay,
    trainable=None,
    grid=None,
    critic_graphdef=None,
    dmd_guidance=None,
):
    """One student update on `batch` at training step `step` -> (state, metrics); the
    teacher is read, never changed. `loss` is the plain weighted mean square (what
    the student is from its targets); `loss_weighted` what the gradient follows.
    `trainable`: the pattern of the parameters that train (jav.train.step.trainable_pattern; None: all).
    With a "critic" in `state` (distill.dmd.weight > 0) the student's loss adds the DMD term
    against it, then the critic takes distill.dmd.critic_updates updates on the student's samples."""
    student_net = state["model"]
    critic_net = state.get("critic")
    loss_fn = functools.partial(
        distill_loss,
        teacher_params=state["teacher"].params,
        batch=batch,
        key=key,
        step=step,
        graphdef=graphdef,
        teacher_graphdef=teacher_graphdef,
        layout=layout,
        flow_cfg=flow_cfg,
        distill_cfg=distill_cfg,
        grid=grid,
        critic_params=None if critic_net is None else critic_net.params,
        critic_graphdef=critic_graphdef,
        dmd_guidance=dmd_guidance,
    )
    (weighted, (losses, loss, extras)), grads = jax.value_and_grad(loss_fn, has_aux=True)(student_net.params)
    grads = freeze_grads(grads, trainable)
    params, opt_state, ema, grad_norm, skipped = guarded_update(tx, student_net.params, student_net.opt_state, student_net.ema, grads, weighted, ema_decay)
    metrics = dict(loss=loss, loss_weighted=weighted, loss_video=losses["video"], loss_audio=losses["audio"], grad_norm=grad_norm, skipped=skipped)
    state = dict(state, model=loop.Trainable(params, opt_state, ema))
    if critic_net is not None:
        dmd = distill_cfg.dmd
        text, text_mask = text_reader(batch, int(dmd.batch)), batch["text_mask"][: int(dmd.batch)]
        critic_fn = functools.partial(critic_loss, critic_graphdef=critic_graphdef, layout=layout, flow_cfg=flow_cfg, t_range=dmd.t_range)

        def critic_update(carry, i):  # one compiled body however many updates (a scan, not an unrolled loop)
            c_params, c_opt = carry
            c_loss, c_grads = jax.value_and_grad(critic_fn)(c_params, extras["samples"], text, text_mask, jax.random.fold_in(key, 1000 + i))
            c_params, c_opt, _, c_norm, c_skip = guarded_update(tx, c_params, c_opt, None, c_grads, c_loss, 0.0)
            return (c_params, c_opt), (c_loss, c_norm, c_skip)

        start = (critic_net.params, critic_net.opt_state)
        (c_params, c_opt), (c_losses, c_norms, c_skips) = jax.lax.scan(critic_update, start, jnp.arange(int(dmd.critic_updates)))
        state["critic"] = loop.Trainable(c_params, c_opt)
        metrics.update(loss_dmd=extras["loss_dmd"], loss_critic=jnp.mean(c_losses), grad_norm_critic=c_norms[-1], skipped_critic=jnp.sum(c_skips))
    return state, metrics


class DistillPhase(DiffusionPhase):
    """Two networks: "model", the student (trained, with EMA: what jav.sample loads), and
    "teacher", frozen. The data stream, shape handling and progress line are the
    diffusion phase's."""

    def validate(self, mesh):
        validate_diffusion(self.cfg, mesh)
        self.teacher_cfg = validate_distill(self.cfg)

    def _dmd(self) -> bool:
        dmd = self.cfg.distill.get("dmd")
        return dmd is not None and bool(dmd.weight)

    def _teacher(self, mesh, rules, dtype=None):
        """(graphdef, abstract sharded parameters) of the teacher's architecture, in `dtype`
        (default distill.teacher_dtype; the critic: the student's param_dtype)."""
        model_cfg = ml_collections.ConfigDict(self.teacher_cfg.model.to_dict())
        model_cfg.param_dtype = dtype or self.cfg.distill.get("teacher_dtype", "float32")
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda: AVDiT(model_cfg, rngs=nnx.Rngs(0))))
        shardings = sharding.param_shardings(abstract, mesh, rules)
        return graphdef, jax.tree.map(lambda s, var: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), var), shardings, abstract)

    def init_state(self, run):
        self.run = run
        t = self.cfg.train
        _, shardings = self._model(run.mesh, run.rules)
        d = self.cfg.distill
        ref = pinned_reference(run.workdir, "teacher", d.teacher, d.teacher_step, d.teacher_weights)
        self.teacher_graphdef, target = self._teacher(run.mesh, run.rules)
        teacher = restore_params_from(ref["dir"], use_ema=ref["weights"] == "ema", abstract_params=target, step=ref["step"])
        self.teacher_ref = ref
        # the student: the teacher's weights, and its new inputs' embedders as initialised (outputs 0)
        student = nnx.state(init_model(self.cfg.model, jax.random.key(t.seed), out_shardings=shardings))
        dtype = jnp.dtype(self.cfg.model.param_dtype)
        student = nnx.merge_state(student, jax.tree.map(lambda x: jnp.array(x, dtype), teacher))
        state = {"model": loop.trainable(student, self.tx, run, ema=bool(t.ema_decay)), "teacher": loop.Frozen(teacher)}
        if self._dmd():  # the critic starts as the teacher (its estimate of the student's flow is then the teacher's)
            self.critic_graphdef, _ = self._teacher(run.mesh, run.rules, self.cfg.model.param_dtype)
            state["critic"] = loop.trainable(jax.tree.map(lambda x: jnp.array(x, dtype), teacher), self.tx, run, ema=False)
        return state

    def abstract_state(self, mesh, rules):
        """`init_state`'s result as sharded ShapeDtypeStructs (jav.aot), the teacher's
        config set beforehand (`teacher_cfg`)."""
        state = super().abstract_state(mesh, rules)
        self.teacher_graphdef, teacher = self._teacher(mesh, rules)
        state = dict(state, teacher=loop.Frozen(teacher))
        if self._dmd():
            self.critic_graphdef, critic = self._teacher(mesh, rules, self.cfg.model.param_dtype)
            state["critic"] = loop.abstract_trainable(critic, self.tx, ema=False)
        return state

    def step_options(self, layout):
        """The static arguments of distill_step for batches of `layout`."""
        return dict(
            graphdef=self.graphdef,
            teacher_graphdef=self.teacher_graphdef,
            tx=self.tx,
            layout=layout,
            flow_cfg=self.flow_cfg,
            distill_cfg=ml_collections.FrozenConfigDict(self.cfg.distill),
            ema_decay=self.cfg.train.ema_decay,
            trainable=trainable_pattern(self.cfg),
            grid=self._grid(layout) if self.cfg.distill.get("grid_fraction", 0.0) or self._dmd() else None,
            critic_graphdef=self.critic_graphdef if self._dmd() else None,
            dmd_guidance=tuple(float(self.cfg.sample[term]) for term in GUIDANCE_TERMS) if self._dmd() else None,
        )

    def _grid(self, layout) -> tuple:
        """`sampling_grid` for `layout`'s token counts, computed once (numbers on the host, so
        that it also works where jav.aot plans for devices it cannot run on)."""
        grids = self.__dict__.setdefault("_grids", {})
        key = tuple(sorted(layout.num_tokens.items()))
        if key not in grids:
            with jax.default_device(jax.local_devices(backend="cpu")[0]):
                grids[key] = sampling_grid(self.cfg, layout.num_tokens)
        return grids[key]

    def describe(self, state):
        ref, d = self.teacher_ref, self.cfg.distill
        target = f"{d.teacher_steps} teacher steps" if d.get("teacher_steps", 0) else "MeanFlow's identity"
        grid = f", {d.grid_fraction:g} of them on the {self.cfg.sample.steps}-step sampling grid" if d.get("grid_fraction", 0.0) else ""
        what = "guidance scales as input" + (
            f", mean velocity over steps (fraction {d.mean_fraction}{grid}, target by {target})" if self.cfg.model.get("interval_embed") else ""
        )
        if self._dmd():
            what += (
                f"; distribution matching (weight {d.dmd.weight:g}) on {d.dmd.batch} T2VA samples a step against a critic "
                f"({d.dmd.critic_updates} update(s) a step)"
            )
        return (
            f"{super().describe(state)}\ndistilling {ref['dir']} step {ref['step']} ({ref['weights']}): {what}; "
            f"guidance ranges {dict((k, list(v)) for k, v in d.guidance.items())}"
        )

    def cost(self, batch):
        """Student forward and backward, the teacher's passes (times its steps over a step with
        teacher_steps) and (MeanFlow's target) the JVP: counted as 3 + passes + 2 forward passes."""
        flops, tokens = self._layout_of(batch)[1:]
        d = self.cfg.distill
        passes = 1 + any(d.guidance[m][1] > 1 for m in ("text_video", "text_audio")) + (d.guidance.modality[1] > 1)
        interval, k = self.cfg.model.get("interval_embed"), d.get("teacher_steps", 0)
        if interval and k:
            per_clip = 3 + passes * k
        else:
            per_clip = 3 + passes + (2 if interval else 0)
        if self._dmd():  # on dmd.batch clips: the student's steps forward and backward, the guided teacher, the critic's pass and updates
            s = self.cfg.sample
            sampling_passes = 1 + (max(s.text_video, s.text_audio) > 1) + (s.modality > 1)
            per_clip += d.dmd.batch / self.cfg.train.batch_size * (3 * s.steps + sampling_passes + 1 + 3 * d.dmd.critic_updates)
        return flops * per_clip / 3, tokens

    def log_line(self, step, m):
        line = super().log_line(step, m)
        if "loss_dmd" not in m:
            return line
        head, sep, tail = line.partition("  grad ")
        return f"{head}  dmd {m['loss_dmd']:.4f}  critic {m['loss_critic']:.4f}{sep}{tail}"

    def step(self, state, batch, key, step):
        return distill_step(state, batch, key, jnp.asarray(step, jnp.float32), **self.step_options(self._layout_of(batch)[0]))
