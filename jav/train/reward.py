"""The reward-tuning phase: GRPO on the flow SDE against reward models trained by jav.

`python -m jav.train --config configs/reward.py:POLICY_RUN,SYNC_RUN --workdir DIR`
runs it (`cfg.phase = "reward"`). The policy starts from a diffusion run's
weights (a distilled student is refused: tune first, then distil), pinned in
DIR/policy.json at the first start; a frozen
copy of those weights is the reference its KL is measured against; each reward
model (`reward.models`, e.g. the sync model of configs/sync_reward.py) is loaded
frozen from its own run directory. Neither is ever saved or updated.

Each step, for the `train.batch_size` captions of a batch (`prompts`):
1. Rollout (Flow-GRPO / DanceGRPO / MixGRPO): every caption is sampled
   `reward.group_size` times by the SDE sampler (`jav.samplers.sde_sample`, the
   config's guidance), all of a group from the same initial noise and each with
   its own step noise; the steps in a window of `reward.window` consecutive SDE
   steps, placed at random each training step, are stochastic (noise level
   `reward.noise_level`), the others ODE steps (MixGRPO).
2. Rewards: each reward model scores the generated clips (model space: the pixel
   world's video and log-mel); each is normalised within its group (mean 0, std 1)
   and weighted (`reward.models.NAME.weight`) into an advantage per modality: a
   reward counts for the modalities it names (`reward.models.NAME.modalities`), so
   an audio reward moves audio tokens only.
3. Update: for each step of the window, the policy's log-density of the
   transition the rollout took, per modality (mean over that modality's noisy
   values), enters the clipped GRPO surrogate with that modality's advantage;
   plus `reward.kl` times the KL of the policy's step from the reference's (both
   Gaussians of the same std: |mean - mean_ref|^2 / (2 std^2), mean over values).
   One update per rollout: the rollout's policy is the policy being updated, so
   the ratio is 1 with gradient (the clip acts only when a rollout is reused,
   which is not offered yet).

`reward.method="draft"` replaces 1-3 by DRaFT-K (reward back-propagation): the
rollout is the ODE (`reward.group_size=1` is then enough: an ODE group from one
noise is one sample), its state `reward.draft_steps` = K steps before the end is
taken without gradient, and the last K Euler steps are run again through the
policy with gradient, into the reward models (differentiable, as the sync model
is); a reward's gradient reaches only the modalities it names. Loss: minus the
weighted rewards plus `reward.kl` times the mean squared difference of the
policy's and the reference's guided velocities over those K steps.

`reward.method="sync_dpo"` needs no reward model and no rollout: SyncDPO
(jav/train/sync_dpo.py), Diffusion-DPO on pairs of a real clip and the same clip
with its sound moved by whole frames, from the world's own stream, or (`reward.dpo.pairs`)
on the policy's own clips made beforehand, its V2A sound preferred to its joint one.

Logged apart: each reward (raw mean), the KL, the within-group diversity (RMS
distance between a group's samples), the surrogate. A rollout's randomness is a
function of the step number, so a resumed run draws what the uninterrupted one
would.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jav import flow, samplers
from jav.models.autoencoders import model_module
from jav.runs import load_autoencoder, load_config, pinned_reference
from jav.train import loop
from jav.train.checkpoint import restore_params_from
from jav.train.diffusion import DiffusionPhase, validate as validate_diffusion
from jav.train.step import freeze_grads, guarded_update, trainable_pattern
from jav.train.sync_dpo import PairStream, PolicyPairStream, dpo_step

MODALITIES = ("video", "audio")
ROLLOUT_TASKS = ("t2va", "i2va", "v2a", "a2v")
METHODS = ("grpo", "draft", "sync_dpo")


def reward_config(policy: str = "") -> ml_collections.ConfigDict:
    """The `reward` block of a config (configs/reward.py)."""
    return ml_collections.ConfigDict(
        dict(
            policy=policy,  # the run tuned: a diffusion (or reward) run directory
            policy_weights="ema",
            policy_step=0,  # 0: its latest step at the first start (kept in WORKDIR/policy.json)
            # NAME -> {run: the reward model's run directory (autoencoder phase, a kind with
            # `reward(model, video, logmel)`), weight, modalities its advantage moves, reading:
            # which of the module's READINGS scores the clips ("reward"; the sync model's
            # "event_agreement" reads its per-frame event heads instead of its offset classes)}
            models=dict(sync=dict(run="", weight=1.0, modalities=("video", "audio"), reading="reward")),
            # "grpo": the clipped surrogate on the SDE window's log-densities (any reward);
            # "draft": DRaFT-K, the rewards' gradient back-propagated through the last
            # `draft_steps` ODE steps of the rollout (differentiable reward models only)
            method="grpo",
            draft_steps=1,
            group_size=4,  # samples per caption; advantages are normalised within a group
            # rollout tasks, one drawn per group each step: t2va generates both streams; a2v / v2a
            # hold the data clip's audio / video clean and generate the other; i2va holds its first frame
            tasks=("t2va",),
            steps=16,  # SDE / ODE steps of a rollout
            window=4,  # consecutive stochastic (and trained) steps, placed at random each step
            noise_level=0.7,  # the SDE's a inside the window
            clip=0.2,  # the surrogate's ratio clip (inactive with one update per rollout)
            kl=0.01,  # weight of the KL to the reference
            eps=1e-4,  # added to a group's reward std
            # "sync_dpo" (jav/train/sync_dpo.py): real clips preferred to the same clips with their sound
            # moved by 1 .. max_shift video frames either way; no reward model. beta: the DPO
            # temperature on the difference of velocity errors; sft_weight: the flow loss on the
            # preferred clips; pairs: instead of real clips, a directory of the policy's own clips,
            # its V2A sound preferred to its joint sound (python -m jav.train.policy_pairs); with
            # prefer="real", the real clip of each pair's caption preferred to the policy's clip
            dpo=dict(beta=1000.0, max_shift=2, sft_weight=0.0, pairs="", prefer="v2a"),
        )
    )


def validate_reward(cfg) -> ml_collections.ConfigDict:
    """Checks the reward block against the policy's run -> the policy run's config."""
    r = cfg.get("reward")
    if r is None or not r.get("policy"):
        raise ValueError("reward.policy is not set: make the config with configs/reward.py:POLICY_RUN,SYNC_RUN")
    policy_cfg = load_config(r.policy)
    if policy_cfg.get("phase", "diffusion") not in ("diffusion", "reward"):
        raise ValueError(
            f"reward.policy={r.policy} is a {policy_cfg.phase} run; the policy must be a diffusion (or reward) run "
            "(a distilled student is refused: tune the diffusion run, then distil the tuned run)"
        )
    if policy_cfg.model.to_dict() != cfg.model.to_dict():
        raise ValueError(f"model differs from the policy's ({r.policy}); a reward-tuned model is its policy's model (make the config with configs/reward.py)")
    if cfg.data.get("world") == "latent":
        raise ValueError(
            "reward tuning scores the model's own output with reward models of the pixel world; "
            "a latent-space policy needs its decoder in the loop, which is not built yet"
        )
    if cfg.model.text.encoder != "builtin":
        raise ValueError(
            f"model.text.encoder={cfg.model.text.encoder!r}: reward tuning encodes its captions with the model's "
            "built-in encoder; a policy on precomputed text embeddings is not supported yet"
        )
    bad = [x for x in r.tasks if x not in ROLLOUT_TASKS]
    if bad or not r.tasks:
        raise ValueError(f"reward.tasks={list(r.tasks)}: name some of {list(ROLLOUT_TASKS)}")
    if r.method not in METHODS:
        raise ValueError(f"reward.method={r.method!r} is not one of {METHODS}")
    if r.method == "sync_dpo":
        dpo = r.dpo
        if not (isinstance(dpo.max_shift, int) and dpo.max_shift >= 1) or not dpo.beta > 0 or not dpo.sft_weight >= 0:
            raise ValueError(f"reward.dpo={dpo.to_dict()}: max_shift must be a whole number of frames >= 1, beta > 0, sft_weight >= 0")
        if dpo.get("prefer", "v2a") not in ("v2a", "real"):
            raise ValueError(f"reward.dpo.prefer={dpo.prefer!r}: 'v2a' (the policy's V2A sound) or 'real' (the caption's real clip)")
        if dpo.get("prefer", "v2a") == "real" and not dpo.get("pairs"):
            raise ValueError(
                "reward.dpo.prefer='real' sets real clips against the policy's own: make them with python -m jav.train.policy_pairs and set reward.dpo.pairs"
            )
        if dpo.get("pairs"):
            made = pathlib.Path(dpo.pairs) / "pairs.json"
            if not made.exists():
                raise ValueError(
                    f"reward.dpo.pairs={dpo.pairs} has no pairs.json: make the pairs with "
                    f"python -m jav.train.policy_pairs --workdir {r.policy} --out {dpo.pairs}"
                )
        elif cfg.data.get("world", "bounce") != "bounce":
            raise ValueError(f"reward.method='sync_dpo' cuts its pairs from the bounce world's clips; data.world={cfg.data.world!r}")
        if r.models:
            raise ValueError(f"reward.method='sync_dpo' reads no reward model; drop reward.models ({sorted(r.models)}) or choose grpo / draft")
        return policy_cfg
    if r.method == "draft" and not 1 <= r.draft_steps <= r.steps:
        raise ValueError(f"reward.draft_steps={r.draft_steps} must be in [1, reward.steps = {r.steps}]")
    if r.method == "grpo" and r.group_size < 2:
        raise ValueError(f"reward.group_size={r.group_size}: advantages compare samples of one caption; use at least 2")
    if not 1 <= r.window <= r.steps - 1:
        raise ValueError(f"reward.window={r.window} must be in [1, reward.steps - 1 = {r.steps - 1}] (the last step is deterministic)")
    if not r.models:
        raise ValueError("reward.models is empty: name at least one reward model run")
    for name, m in r.models.items():
        if not m.get("run"):
            raise ValueError(f"reward.models.{name}.run is not set: the reward model's run directory (configs/sync_reward.py)")
        bad = [x for x in m.modalities if x not in MODALITIES]
        if bad or not m.modalities:
            raise ValueError(f"reward.models.{name}.modalities={list(m.modalities)}: name some of {MODALITIES}")
        scorer = load_config(m.run).model
        module = model_module(scorer.get("kind"))
        if not hasattr(module, "reward"):
            raise ValueError(f"reward.models.{name}.run={m.run} is a {scorer.get('kind')} run, which defines no reward(model, video, logmel)")
        readings = getattr(module, "READINGS", ("reward",))
        if m.get("reading", "reward") not in readings:
            raise ValueError(f"reward.models.{name}.reading={m.reading!r}: a {scorer.get('kind')} model reads one of {readings}")
        text = cfg.model.text
        if getattr(module, "READS_CAPTION", False) and (scorer.vocab_size, scorer.max_len) != (text.get("vocab_size"), text.get("max_len")):
            raise ValueError(
                f"reward.models.{name}.run={m.run} reads captions tokenized with vocab_size {scorer.vocab_size}, max_len "
                f"{scorer.max_len}; the policy's model.text has {text.get('vocab_size')}, {text.get('max_len')}: train the reward "
                f"model with --config.model.vocab_size / max_len set to the policy's"
            )
    return policy_cfg


# ---- The pieces of the objective


def group_advantages(rewards: jax.Array, group_size: int, eps: float = 1e-4) -> jax.Array:
    """[B] rewards of consecutive groups of `group_size` -> each minus its group's mean,
    over its group's std (+ eps)."""
    g = rewards.reshape(-1, group_size)
    return ((g - g.mean(1, keepdims=True)) / (g.std(1, keepdims=True) + eps)).reshape(-1)


def clipped_surrogate(logprob: jax.Array, old_logprob: jax.Array, advantage: jax.Array, clip: float) -> jax.Array:
    """[B] the GRPO / PPO loss -min(r A, clip(r, 1 - c, 1 + c) A), r = exp(logprob - old_logprob)."""
    ratio = jnp.exp(logprob - old_logprob)
    return -jnp.minimum(ratio * advantage, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * advantage)


def step_statistics(denoise_fn, x: dict, x_next: dict, t: dict, t_next: dict, clean: dict, text, text_mask, guidance, noise_level) -> tuple[dict, dict, dict]:
    """One SDE transition x -> x_next under a denoiser -> m -> (mean log-density per noisy
    value [B], step mean [B, N, P], std [B, N])."""
    v = samplers.guided_velocity(denoise_fn, x, t, text, text_mask, guidance)
    logprob, means, stds = {}, {}, {}
    for m in x:
        _, mean, std = samplers.sde_step(x[m], v[m], t[m], t_next[m], jnp.zeros_like(x[m]), noise_level)
        logprob[m] = samplers.gaussian_logprob(x_next[m], mean, std, ~clean[m]) / _noisy_values(std, clean[m], x[m].shape[-1])
        means[m], stds[m] = mean, std
    return logprob, means, stds


def _noisy_values(std: jax.Array, clean: jax.Array, per_token: int) -> jax.Array:
    """[B] values of the tokens a step moves at random (std > 0, not clean), at least 1."""
    return jnp.maximum(((std > 0) & ~clean).sum(-1) * per_token, 1)


def gaussian_kl(mean: jax.Array, ref_mean: jax.Array, std: jax.Array, clean: jax.Array) -> jax.Array:
    """[B] KL(N(mean, std^2) || N(ref_mean, std^2)) per value, averaged over the noisy values."""
    keep = (std > 0) & ~clean
    safe = jnp.where(keep, std, 1.0)[..., None]
    per_token = (jnp.square((mean - ref_mean) / safe) / 2).sum(-1)
    return jnp.where(keep, per_token, 0.0).sum(-1) / _noisy_values(std, clean, mean.shape[-1])


def modality_advantages(rewards: dict, models_cfg, group_size: int, eps: float) -> dict:
    """{reward name: [B]} -> m -> [B] advantage: each reward normalised in its group,
    weighted, summed over the rewards that name m."""
    adv = {m: 0.0 for m in MODALITIES}
    for name, r in rewards.items():
        a = models_cfg[name].weight * group_advantages(r, group_size, eps)
        for m in models_cfg[name].modalities:
            adv[m] = adv[m] + a
    return {m: jnp.broadcast_to(jnp.asarray(a, jnp.float32), rewards[next(iter(rewards))].shape) for m, a in adv.items()}


def diversity(x: jax.Array, group_size: int) -> jax.Array:
    """RMS distance between two samples of one group, averaged over pairs and groups (0 for groups
    of one). x: [B, ...]."""
    if group_size < 2:
        return jnp.zeros((), jnp.float32)
    g = x.reshape((-1, group_size) + x.shape[1:]).reshape(-1, group_size, int(np.prod(x.shape[1:])))
    d = jnp.mean(jnp.square(g[:, :, None] - g[:, None, :]), -1)  # [G, n, n]
    n = group_size
    return jnp.sqrt(jnp.maximum(d.sum((1, 2)) / (n * (n - 1)), 0.0)).mean()


# ---- The step


def _task_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` [B] where mask; NaN when no group drew the task this step."""
    n = mask.sum()
    return jnp.where(n > 0, jnp.where(mask, values, 0.0).sum() / jnp.maximum(n, 1), jnp.nan)


def rollout_conditions(layout, x0: dict, task: jax.Array, tasks: tuple) -> dict:
    """Clean masks of a rollout: x0 m -> [B, N, P] the data clips' tokens, task [B] an index
    into `tasks` -> m -> [B, N_m] bool (True: held at x0)."""
    b = task.shape[0]
    is_task = {name: (task == i)[:, None] for i, name in enumerate(tasks)}
    none = jnp.zeros((b, 1), bool)
    clean_v = is_task.get("v2a", none) | (is_task.get("i2va", none) & jnp.asarray(layout.first_frame)[None])
    clean_a = is_task.get("a2v", none)
    return {
        "video": jnp.broadcast_to(clean_v, x0["video"].shape[:2]),
        "audio": jnp.broadcast_to(clean_a, x0["audio"].shape[:2]),
    }


def _rollout(params, key, window_start, text_ids, text_mask, x0, task, *, graphdef, layout, mu, guidance, reward_cfg):
    """The group rollout -> (trajectory m -> [steps + 1, B, N, P], clean masks, noise levels [steps]).
    x0: the data clips' tokens (repeated over each group), the condition of a2v / v2a / i2va;
    task: [B] index into reward.tasks, the same within a group."""
    r = reward_cfg
    policy = nnx.merge(graphdef, params)
    text = policy.encode_text(text_ids, text_mask)
    b = text_ids.shape[0]
    prompts = b // r.group_size
    k_init, k_steps = jax.random.split(key)
    init = {}
    for i, m in enumerate(sorted(layout.num_tokens)):  # one initial noise per caption, shared by its group
        shape = (prompts, layout.num_tokens[m], layout.token_dims[m])
        init[m] = jnp.repeat(flow.standard_normal(jax.random.fold_in(k_init, i), shape), r.group_size, axis=0)
    steps = jnp.arange(r.steps)
    levels = jnp.where((steps >= window_start) & (steps < window_start + r.window), r.noise_level, 0.0)
    clean = rollout_conditions(layout, x0, task, tuple(r.tasks))
    out = samplers.sde_sample(
        layout.denoiser(policy),
        None,
        init,
        text,
        text_mask,
        num_steps=r.steps,
        mu=dict(mu),
        guidance=guidance,
        noise_level=levels,
        clean=clean,
        x_clean={m: x0[m].astype(init[m].dtype) for m in init},
        return_trajectory=True,
        clip_keys=jax.random.split(k_steps, b),
    )
    return jax.lax.stop_gradient(out.trajectory), clean, levels


def window_objective(
    policy_fn,
    reference_fn,
    trajectory,
    clean,
    levels,
    window_start,
    advantages,
    text,
    ref_text,
    text_mask,
    *,
    num_steps: int,
    window: int,
    mu,
    guidance,
    clip: float,
    kl_weight: float,
):
    """The GRPO objective over the window's transitions of a rollout -> (loss, (surrogate, kl)).

    policy_fn / reference_fn: `denoise_fn`s; trajectory: m -> [num_steps + 1, B, N, P];
    levels: [num_steps] noise levels; advantages: m -> [B]. Each modality's surrogate
    uses its own advantage and log-density, so a modality whose advantage is 0 gets
    no gradient from it. The reference's means are read under stop_gradient.
    """
    sig = {m: samplers.sigma_schedule(num_steps, mu[m]) for m in trajectory}
    surrogate = kl = 0.0
    for j in range(window):
        i = window_start + j
        x = {m: jax.lax.dynamic_index_in_dim(trajectory[m], i, keepdims=False) for m in trajectory}
        x_next = {m: jax.lax.dynamic_index_in_dim(trajectory[m], i + 1, keepdims=False) for m in trajectory}
        t = {m: jnp.where(clean[m], 0.0, sig[m][i]) for m in x}
        t_next = {m: jnp.where(clean[m], 0.0, sig[m][i + 1]) for m in x}
        lp, mean, std = step_statistics(policy_fn, x, x_next, t, t_next, clean, text, text_mask, guidance, levels[i])
        _, ref_mean, _ = step_statistics(reference_fn, x, x_next, t, t_next, clean, ref_text, text_mask, guidance, levels[i])
        for m in x:
            # one update per rollout: the rollout's log-density is the policy's own, without gradient
            surrogate = surrogate + clipped_surrogate(lp[m], jax.lax.stop_gradient(lp[m]), advantages[m], clip).mean()
            kl = kl + gaussian_kl(mean[m], jax.lax.stop_gradient(ref_mean[m]), std[m], clean[m]).mean()
    surrogate, kl = surrogate / window, kl / window
    return surrogate + kl_weight * kl, (surrogate, kl)


def reward_loss(params, ref_params, trajectory, clean, levels, window_start, advantages, text_ids, text_mask, *, graphdef, layout, mu, guidance, reward_cfg):
    """`window_objective` for the AVDiT policy with parameters `params` (differentiable) and
    its frozen reference."""
    r = reward_cfg
    policy, reference = nnx.merge(graphdef, params), nnx.merge(graphdef, ref_params)
    return window_objective(
        layout.denoiser(policy),
        layout.denoiser(reference),
        trajectory,
        clean,
        levels,
        window_start,
        advantages,
        policy.encode_text(text_ids, text_mask),
        reference.encode_text(text_ids, text_mask),
        text_mask,
        num_steps=r.steps,
        window=r.window,
        mu=dict(mu),
        guidance=guidance,
        clip=r.clip,
        kl_weight=r.kl,
    )


def score(state, reward_graphdefs, layout, tokens: dict, models_cfg, text_ids=None, text_mask=None) -> dict:
    """{reward name: [B] rewards} of the clips `tokens` by each reward model of the state;
    a reward's gradient reaches only the modalities it names (models_cfg[name].modalities).
    A model whose module sets `READS_CAPTION` (the prompt model) also reads the captions'
    ids `text_ids` [B, L] and `text_mask`."""
    rewards = {}
    for name, rg, kind in reward_graphdefs:
        named = {m: x if m in models_cfg[name].modalities else jax.lax.stop_gradient(x) for m, x in tokens.items()}
        video, logmel = layout.from_tokens(named)
        module = model_module(kind)
        captions = (text_ids, text_mask) if getattr(module, "READS_CAPTION", False) else ()
        read = getattr(module, models_cfg[name].get("reading", "reward"))
        rewards[name] = read(nnx.merge(rg, state[f"reward_{name}"].params), video, logmel, *captions)
    return rewards


def weighted_total(rewards: dict, models_cfg) -> jax.Array:
    """The rewards' weighted sum of means (reward.models[name].weight)."""
    return sum(models_cfg[name].weight * v.mean() for name, v in rewards.items())


def draft_objective(
    policy_fn, reference_fn, start, clean, x_clean, text, ref_text, text_mask, reward_fn, *, num_steps: int, k: int, mu, guidance, kl_weight: float
):
    """DRaFT-K: the last `k` Euler steps of a rollout, from `start` (its state k steps before
    the end, without gradient), differentiated through the policy, then `reward_fn(x) ->
    (total reward [], per-reward [B] values)` of the result -> (loss, (rewards, kl, final tokens)).

    loss = -total + kl_weight * kl, kl the mean squared difference of the policy's and the
    reference's guided velocities over those steps' noisy values (halved, as the Gaussian
    KL of two Euler steps of equal noise is, up to the step's scale)."""
    sig = {m: samplers.sigma_schedule(num_steps, mu[m]) for m in start}
    x, kl = start, 0.0
    for j in range(k):
        i = num_steps - k + j
        t = {m: jnp.where(clean[m], 0.0, sig[m][i]) for m in x}
        t_next = {m: jnp.where(clean[m], 0.0, sig[m][i + 1]) for m in x}
        v = samplers.guided_velocity(policy_fn, x, t, text, text_mask, guidance)
        v_ref = jax.lax.stop_gradient(samplers.guided_velocity(reference_fn, x, t, ref_text, text_mask, guidance))
        for m in x:
            noisy = ~clean[m]
            per_token = jnp.square(v[m] - v_ref[m]).sum(-1) / 2
            kl = kl + (jnp.where(noisy, per_token, 0.0).sum(-1) / jnp.maximum(noisy.sum(-1) * x[m].shape[-1], 1)).mean()
        x = {m: jnp.where(clean[m][..., None], x_clean[m], x[m] + v[m] * (t_next[m] - t[m])[..., None]) for m in x}
    kl = kl / k
    total, rewards = reward_fn(x)
    return -total + kl_weight * kl, (rewards, kl, x)


def _draft_update(state, rollout, x0, clean, text_ids, text_mask, *, graphdef, reward_graphdefs, layout, mu, guidance, reward_cfg):
    """((loss, (rewards, kl, final tokens)), grads) of DRaFT-K for the policy's parameters."""
    r = reward_cfg
    k = r.draft_steps
    start = {m: rollout[m][r.steps - k] for m in rollout}

    def loss_fn(params):
        policy, reference = nnx.merge(graphdef, params), nnx.merge(graphdef, state["reference"].params)

        def reward_fn(x):
            rewards = score(state, reward_graphdefs, layout, x, r.models, text_ids, text_mask)
            return weighted_total(rewards, r.models), rewards

        return draft_objective(
            layout.denoiser(policy),
            layout.denoiser(reference),
            start,
            clean,
            {m: x0[m].astype(start[m].dtype) for m in start},
            policy.encode_text(text_ids, text_mask),
            reference.encode_text(text_ids, text_mask),
            text_mask,
            reward_fn,
            num_steps=r.steps,
            k=k,
            mu=dict(mu),
            guidance=guidance,
            kl_weight=r.kl,
        )

    return jax.value_and_grad(loss_fn, has_aux=True)(state["model"].params)


@functools.partial(
    jax.jit, static_argnames=("graphdef", "reward_graphdefs", "layout", "mu", "guidance", "reward_cfg", "tx", "ema_decay", "trainable"), donate_argnums=(0,)
)
def reward_step(state, batch, key, *, graphdef, reward_graphdefs, layout, mu, guidance, reward_cfg, tx, ema_decay, trainable=None):
    """One reward-tuning step (reward.method: GRPO or DRaFT-K) on the captions of `batch` ->
    (state, metrics); `trainable`: the pattern of the parameters that train
    (jav.train.step.trainable_pattern; None: all)."""
    r = reward_cfg
    policy = state["model"]
    text_ids = jnp.repeat(batch["text_ids"], r.group_size, axis=0)
    text_mask = jnp.repeat(batch["text_mask"], r.group_size, axis=0)
    k_window, k_roll, k_task = jax.random.split(key, 3)
    window_start = jax.random.randint(k_window, (), 0, r.steps - r.window)  # the last step (into t = 0) is never stochastic
    task = jnp.repeat(jax.random.randint(k_task, (batch["text_ids"].shape[0],), 0, len(r.tasks)), r.group_size)
    x0 = {m: jnp.repeat(v, r.group_size, axis=0) for m, v in layout.to_tokens(batch["video"], batch["audio"]).items()}
    options = dict(graphdef=graphdef, layout=layout, mu=mu, guidance=guidance, reward_cfg=r)
    if r.method == "draft":  # an ODE rollout (no SDE window), its last steps differentiated
        trajectory, clean, _ = _rollout(policy.params, k_roll, r.steps, text_ids, text_mask, x0, task, **options)
        (loss, (rewards, kl, final)), grads = _draft_update(
            state, trajectory, x0, clean, text_ids, text_mask, reward_graphdefs=reward_graphdefs, **options
        )  # fmt: skip
        surrogate = -weighted_total(rewards, r.models)
    else:
        trajectory, clean, levels = _rollout(policy.params, k_roll, window_start, text_ids, text_mask, x0, task, **options)
        final = {m: trajectory[m][-1] for m in trajectory}
        rewards = score(state, reward_graphdefs, layout, final, r.models, text_ids, text_mask)
        advantages = modality_advantages(rewards, r.models, r.group_size, r.eps)
        loss_fn = functools.partial(
            reward_loss,
            ref_params=state["reference"].params,
            trajectory=trajectory,
            clean=clean,
            levels=levels,
            window_start=window_start,
            advantages=advantages,
            text_ids=text_ids,
            text_mask=text_mask,
            **options,
        )
        (loss, (surrogate, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(policy.params)
    grads = freeze_grads(grads, trainable)
    params, opt_state, ema, grad_norm, skipped = guarded_update(tx, policy.params, policy.opt_state, policy.ema, grads, loss, ema_decay)
    total = weighted_total(rewards, r.models)
    metrics = dict(
        loss=loss,
        surrogate=surrogate,
        kl=kl,
        reward=total,
        grad_norm=grad_norm,
        skipped=skipped,
        diversity_video=diversity(final["video"], r.group_size),
        diversity_audio=diversity(final["audio"], r.group_size),
        **{f"reward_{name}": v.mean() for name, v in rewards.items()},
        **{f"reward_{name}_{t}": _task_mean(v, task == i) for name, v in rewards.items() for i, t in enumerate(r.tasks) if len(r.tasks) > 1},
    )
    return dict(state, model=loop.Trainable(params, opt_state, ema)), metrics


class RewardPhase(DiffusionPhase):
    """Networks: "model", the policy (trained, with EMA: what jav.sample loads);
    "reference", its starting weights, frozen; "reward_NAME", each reward model,
    frozen. The data stream gives the captions (train.batch_size per step)."""

    def validate(self, mesh):
        validate_diffusion(self.cfg, mesh)
        self.policy_cfg = validate_reward(self.cfg)

    def init_state(self, run):
        self.run = run
        r, t = self.cfg.reward, self.cfg.train
        self.reward_cfg = ml_collections.FrozenConfigDict(r)
        ref = pinned_reference(run.workdir, "policy", r.policy, r.policy_step, r.policy_weights)
        self.policy_ref = ref
        target = self.abstract_state(run.mesh, run.rules)["model"].params  # sharded as training shards it
        start = restore_params_from(ref["dir"], use_ema=ref["weights"] == "ema", abstract_params=target, step=ref["step"])
        state = {"model": loop.trainable(start, self.tx, run, ema=bool(t.ema_decay)), "reference": loop.Frozen(jax.tree.map(jnp.copy, start))}
        graphdefs = []
        for name, m in r.models.items():
            scorer_cfg, scorer = load_autoencoder(m.run)
            g, params = nnx.split(scorer)
            params = jax.device_put(params, jax.sharding.NamedSharding(run.mesh, jax.P()))  # small: a copy on every device
            state[f"reward_{name}"] = loop.Frozen(params)
            graphdefs.append((name, g, scorer_cfg.model.kind))
        self.reward_graphdefs = tuple(graphdefs)
        self.guidance = samplers.guidance_from(self.cfg)
        self.mu = tuple(sorted((m, float(v)) for m, v in flow.sampling_mu(self.cfg.flow, self.layout.num_tokens).items()))
        return state

    def describe(self, state):
        r, ref = self.cfg.reward, self.policy_ref
        rewards = ", ".join(
            f"{n} (weight {m.weight}, {'+'.join(m.modalities)}{'' if m.get('reading', 'reward') == 'reward' else ', reading ' + m.reading}) from {m.run}"
            for n, m in r.models.items()
        )
        if r.method == "sync_dpo":
            if r.dpo.get("pairs"):
                made = json.loads((pathlib.Path(r.dpo.pairs) / "pairs.json").read_text())
                what = f"on-policy pairs of {r.dpo.pairs} (from {made['run']} step {made['step']}): " + (
                    "the real clip of each caption preferred to its clip" if r.dpo.get("prefer") == "real" else "its V2A sound preferred to its joint sound"
                )
            else:
                what = f"real clips preferred to their sound moved by 1-{r.dpo.max_shift} frames"
            return (
                f"{super().describe(state)}\ntuning {ref['dir']} step {ref['step']} ({ref['weights']}) by SyncDPO: {what}, "
                f"beta {r.dpo.beta:g}, flow loss weight {r.dpo.sft_weight:g}"
            )
        start = f"{super().describe(state)}\ntuning {ref['dir']} step {ref['step']} ({ref['weights']}) on {'/'.join(r.tasks)} rollouts"
        if r.method == "draft":
            how = f"by DRaFT-{r.draft_steps}: {r.group_size} ODE sample(s) per caption, {r.steps} steps, the last {r.draft_steps} differentiated"
        else:
            how = f"by GRPO: groups of {r.group_size} per caption, {r.steps} steps with a window of {r.window} SDE steps (a = {r.noise_level})"
        return f"{start} {how}, KL weight {r.kl}; rewards: {rewards}"

    def mfu_dtype(self):
        return None  # rollouts and the window's passes: not counted

    def cost(self, batch):
        return None

    def stream(self, run):
        if self.cfg.reward.method == "sync_dpo":  # pairs cut from the bounce world or made by the policy, not its shards
            kind = PolicyPairStream if self.cfg.reward.dpo.get("pairs") else PairStream
            return kind(self.cfg, self.cfg.train.batch_size, index=run.shard, count=run.shards)
        return super().stream(run)

    def step(self, state, batch, key, step):
        del step  # the key is already the step's
        layout = self._layout_of(batch)[0]
        if self.cfg.reward.method == "sync_dpo":
            return dpo_step(
                state,
                batch,
                key,
                graphdef=self.graphdef,
                layout=layout,
                flow_cfg=self.flow_cfg,
                mu=self.mu,
                dpo_cfg=self.reward_cfg.dpo,
                tx=self.tx,
                ema_decay=self.cfg.train.ema_decay,
                trainable=trainable_pattern(self.cfg),
            )
        return reward_step(
            state,
            batch,
            key,
            graphdef=self.graphdef,
            reward_graphdefs=self.reward_graphdefs,
            layout=layout,
            mu=self.mu,
            guidance=self.guidance,
            reward_cfg=self.reward_cfg,
            tx=self.tx,
            ema_decay=self.cfg.train.ema_decay,
            trainable=trainable_pattern(self.cfg),
        )

    def log_line(self, step, m):
        if "loss_dpo" in m:
            return (
                f"step {step:6d}/{self.cfg.train.steps}  dpo {m['loss_dpo']:.4f}  accuracy {m['accuracy']:.3f}  margin {m['margin']:.3f}  "
                f"error aligned {m['error_aligned']:.4f} moved {m['error_moved']:.4f} (reference {m['ref_error_aligned']:.4f} / "
                f"{m['ref_error_moved']:.4f})  grad {m['grad_norm']:.3f}  {m['steps_per_s']:.3f} steps/s  skipped {m['skipped_total']}"
            )
        rewards = "  ".join(f"{k[len('reward_') :]} {m[k]:.4f}" for k in m if k.startswith("reward_"))
        return (
            f"step {step:6d}/{self.cfg.train.steps}  reward {m['reward']:.4f} ({rewards})  kl {m['kl']:.5f}  "
            f"surrogate {m['surrogate']:.4f}  diversity video {m['diversity_video']:.3f} audio {m['diversity_audio']:.3f}  "
            f"grad {m['grad_norm']:.3f}  {m['steps_per_s']:.3f} steps/s  skipped {m['skipped_total']}"
        )
