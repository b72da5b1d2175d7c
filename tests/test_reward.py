"""The reward-tuning phase (jav/train/reward.py): its advantages and GRPO objective
against a NumPy reference on a toy policy, per-modality advantages reaching only
their modality, no gradient into the reference or a reward model, and a tiny run
(policy from a tiny diffusion run, the tiny sync reward model) that moves the
policy, only reads the reward model's run, and resumes to the uninterrupted run's
metrics. No gradient reaches a reward model by construction: the rewards become
advantages before the differentiated objective."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import prompt_reward as prompt_configs
from configs import reward as reward_configs
from configs import sync_reward as sync_configs
from jav.runs import load_run
from jav.samplers import NO_GUIDANCE, sigma_schedule
from jav.train import loop
from jav.train.autoencoder import AutoencoderPhase
from jav.train.reward import RewardPhase, clipped_surrogate, group_advantages, window_objective

# with tests/test_distill.py on one worker, which trains conftest's tiny run once (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("tiny_diffusion_run")

STEPS, MU = 4, {"video": 1.0, "audio": 0.5}
SHAPES = {"video": (4, 3, 2), "audio": (4, 5, 2)}  # [B, N, P]


def test_group_advantages_and_the_clipped_surrogate():
    r = np.array([1.0, 3.0, 2.0, 2.0, 0.0, 4.0])
    got = np.asarray(group_advantages(jnp.asarray(r), 3, eps=0.0))
    g = r.reshape(2, 3)
    np.testing.assert_allclose(got, ((g - g.mean(1, keepdims=True)) / g.std(1, keepdims=True)).ravel(), rtol=1e-6)
    lp, old, adv = jnp.array([0.5, 0.5, -0.5, 0.0]), jnp.zeros(4), jnp.array([1.0, -1.0, -1.0, 2.0])
    ratio = np.exp([0.5, 0.5, -0.5, 0.0])
    want = -np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)
    np.testing.assert_allclose(clipped_surrogate(lp, old, adv, 0.2), want, rtol=1e-6)
    # above 1 + clip with a positive advantage (and below 1 - clip with a negative one) the loss is flat
    grads = jax.grad(lambda l: clipped_surrogate(l, old, adv, 0.2).sum())(lp)
    np.testing.assert_allclose(grads, [0.0, ratio[1], 0.0, -2.0], rtol=1e-6)


def toy_fn(theta):
    """A toy denoiser: v[m] = a_m x[m] + b_m t[m]."""

    def fn(x, t, text, text_mask, cross_modal):
        return {m: theta[m][0] * x[m] + theta[m][1] * t[m][..., None] for m in x}

    return fn


def toy_problem(seed=0):
    rng = np.random.default_rng(seed)
    trajectory = {m: rng.normal(size=(STEPS + 1,) + s) for m, s in SHAPES.items()}
    clean = {m: np.zeros(s[:2], bool) for m, s in SHAPES.items()}
    clean["audio"][1, 2] = True  # a clean token contributes nothing
    levels = np.array([0.0, 0.7, 0.7, 0.0])
    advantages = {m: rng.normal(size=4) for m in SHAPES}
    return trajectory, clean, levels, advantages


def numpy_objective(theta, ref, trajectory, clean, levels, advantages, start, window, kl_weight, old=None):
    """The objective in float64 NumPy, the rollout's log-densities `old` held fixed."""
    sig = {m: np.asarray(sigma_schedule(STEPS, MU[m]), np.float64) for m in SHAPES}
    surrogate = kl = 0.0
    lps = []
    for j in range(window):
        i = start + j
        a = levels[i]
        for m in ("audio", "video"):
            x, x_next = trajectory[m][i], trajectory[m][i + 1]
            t = np.where(clean[m], 0.0, sig[m][i])
            t_next = np.where(clean[m], 0.0, sig[m][i + 1])
            keep = (t_next > 0) & ~clean[m]

            def step_mean(p):
                v = p[m][0] * x + p[m][1] * t[..., None]
                c = a**2 / (2 * (1 - t))
                return x + (v + c[..., None] * (x + (1 - t[..., None]) * v)) * (t_next - t)[..., None]

            std = a * np.sqrt(t / (1 - t)) * np.sqrt(t - t_next)
            mean = step_mean(theta)
            safe = np.where(keep, std, 1.0)[..., None]
            lp_values = -0.5 * ((x_next - mean) / safe) ** 2 - np.log(safe) - 0.5 * np.log(2 * np.pi)
            count = np.maximum(keep.sum(-1) * x.shape[-1], 1)
            lp = np.where(keep, lp_values.sum(-1), 0).sum(-1) / count
            lps.append(lp)
            base = lp if old is None else old[len(lps) - 1]
            ratio = np.exp(lp - base)
            surrogate += np.mean(-np.minimum(ratio * advantages[m], np.clip(ratio, 0.8, 1.2) * advantages[m]))
            kl_values = ((mean - step_mean(ref)) / safe) ** 2 / 2
            kl += np.mean(np.where(keep, kl_values.sum(-1), 0).sum(-1) / count)
    return (surrogate + kl_weight * kl) / window, lps


def toy_objective(policy, ref, trajectory, clean, levels, advantages, start, window, kl_weight):
    """GRPO's windowed objective of the toy policy and reference (parameter dicts) on a toy problem."""
    return window_objective(
        toy_fn(policy),
        toy_fn(ref),
        jax.tree.map(jnp.asarray, trajectory),
        clean,
        jnp.asarray(levels, jnp.float32),
        jnp.asarray(start),
        jax.tree.map(jnp.asarray, advantages),
        jnp.zeros((4, 1, 1)),
        jnp.zeros((4, 1, 1)),
        jnp.ones((4, 1), bool),
        num_steps=STEPS,
        window=window,
        mu=MU,
        guidance=NO_GUIDANCE,
        clip=0.2,
        kl_weight=kl_weight,
    )[0]


def test_the_grpo_gradient_equals_a_numpy_reference_on_a_toy_policy():
    trajectory, clean, levels, advantages = toy_problem()
    theta = {"video": np.array([0.3, -0.2]), "audio": np.array([-0.4, 0.6])}
    ref = {"video": np.array([0.1, 0.1]), "audio": np.array([-0.2, 0.3])}
    start, window, kl_weight = 1, 2, 0.5

    def jax_loss(th):
        return toy_objective(th, jax.tree.map(jnp.asarray, ref), trajectory, clean, levels, advantages, start, window, kl_weight)

    got = jax.grad(jax_loss)(jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), theta))
    value, old = numpy_objective(theta, ref, trajectory, clean, levels, advantages, start, window, kl_weight)
    np.testing.assert_allclose(float(jax_loss(jax.tree.map(jnp.asarray, theta))), value, rtol=1e-4)
    h = 1e-6
    for m in theta:
        for k in range(2):
            up, down = {q: v.copy() for q, v in theta.items()}, {q: v.copy() for q, v in theta.items()}
            up[m][k] += h
            down[m][k] -= h
            numeric = (
                numpy_objective(up, ref, trajectory, clean, levels, advantages, start, window, kl_weight, old)[0]
                - numpy_objective(down, ref, trajectory, clean, levels, advantages, start, window, kl_weight, old)[0]
            ) / (2 * h)
            np.testing.assert_allclose(float(got[m][k]), numeric, rtol=2e-3, atol=1e-5)


def test_an_advantage_reaches_only_its_modality():
    trajectory, clean, levels, advantages = toy_problem(1)
    advantages["audio"] = np.zeros(4)  # a video-only reward
    theta = {"video": jnp.array([0.3, -0.2]), "audio": jnp.array([-0.4, 0.6])}

    def loss(th):
        return toy_objective(th, th, trajectory, clean, levels, advantages, start=1, window=2, kl_weight=1.0)

    g = jax.grad(loss)(theta)
    assert float(jnp.abs(g["audio"]).max()) == 0.0
    assert float(jnp.abs(g["video"]).max()) > 1e-3


def test_no_gradient_reaches_the_reference():
    trajectory, clean, levels, advantages = toy_problem(2)
    theta = {"video": jnp.array([0.3, -0.2]), "audio": jnp.array([-0.4, 0.6])}
    ref = {"video": jnp.array([0.1, 0.1]), "audio": jnp.array([-0.2, 0.3])}

    def loss(th, rf):
        return toy_objective(th, rf, trajectory, clean, levels, advantages, start=1, window=2, kl_weight=1.0)

    g_policy, g_ref = jax.grad(loss, argnums=(0, 1))(theta, ref)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g_ref))
    assert all(float(jnp.abs(x).max()) > 0.0 for x in jax.tree.leaves(g_policy))


@pytest.fixture(scope="module")
def runs(tiny_diffusion_run, tmp_path_factory):
    """The tiny diffusion run (the policy), the tiny sync and prompt reward models, trained 2 steps."""
    root = tmp_path_factory.mktemp("reward")
    for name, configs in (("sync", sync_configs), ("prompt", prompt_configs)):
        scorer_cfg = configs.get_config("tiny")
        scorer_cfg.train.steps = 2
        loop.run(scorer_cfg, root / name, AutoencoderPhase(scorer_cfg), log=lambda _: None)
    return tiny_diffusion_run, root / "sync", root / "prompt"


def tuning_config(runs, steps=2):
    policy, sync, prompt = runs
    cfg = reward_configs.get_config(f"{policy},{sync},{prompt}")
    cfg.reward.update(group_size=2, steps=3, window=1, tasks=("t2va", "a2v"))  # a2v: video to the data clip's sound
    cfg.train.update(batch_size=1, steps=steps, log_every=1, checkpoint_every=2)
    return cfg


def test_a_reward_run_resumes_to_the_uninterrupted_runs_metrics(runs, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    cfg = tuning_config(runs)
    lines = []
    loop.run(cfg, straight, RewardPhase(cfg), log=lines.append)
    assert any("on t2va/a2v rollouts by GRPO" in line for line in lines) and any(" reward " in line and "diversity" in line for line in lines)

    assert json.loads((straight / "policy.json").read_text()) == dict(dir=str(runs[0]), step=2, weights="ema")

    def preempt_at_1(msg):
        if msg.startswith("step      1/"):
            os.kill(os.getpid(), signal.SIGTERM)

    assert loop.run(cfg, split, RewardPhase(cfg), log=preempt_at_1)["step"] == 1
    loop.run(cfg, split, RewardPhase(cfg), log=lambda _: None)
    rows = {d: {r["step"]: r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())} for d in (straight, split)}
    assert sorted(rows[straight]) == sorted(rows[split]) == [1, 2]
    for step in (1, 2):
        assert {"reward_sync_t2va", "reward_sync_a2v", "reward_prompt_t2va"} <= set(rows[straight][step])  # each reward and task apart
        for key in ("loss", "reward", "reward_sync", "reward_prompt", "kl", "diversity_video"):
            assert rows[split][step][key] == pytest.approx(rows[straight][step][key], rel=1e-4, abs=1e-6), (step, key)
    cfg_loaded, tuned, step = load_run(straight, weights="params")
    assert step == 2 and cfg_loaded.phase == "reward"
    # the policy moved from its start; the reward model's run was only read
    _, start, _ = load_run(runs[0])
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(nnx.state(tuned)), jax.tree.leaves(nnx.state(start))))
    assert sorted(p.name for p in (runs[1] / "checkpoints").iterdir()) == ["2"]


def test_a_distilled_student_or_a_missing_reward_is_refused(runs, tmp_path):
    from jav import sharding
    from jav.runs import load_config

    cfg = tuning_config(runs)
    mesh = sharding.mesh_from_config(cfg.mesh)
    student = tmp_path / "student"
    student.mkdir()
    distilled = load_config(runs[0])
    distilled.phase = "distill"
    (student / "config.json").write_text(distilled.to_json())
    cfg.reward.policy = str(student)
    with pytest.raises(ValueError, match="is a distill run.*tune the diffusion run, then distil"):
        RewardPhase(cfg).validate(mesh)
    cfg = tuning_config(runs)
    cfg.reward.models.sync.run = ""
    with pytest.raises(ValueError, match=r"reward.models.sync.run is not set"):
        RewardPhase(cfg).validate(mesh)
    cfg = tuning_config(runs)
    cfg.reward.models.sync.reading = "offsets"
    with pytest.raises(ValueError, match=r"reward.models.sync.reading='offsets': a sync_reward model reads one of \('reward', 'event_agreement'\)"):
        RewardPhase(cfg).validate(mesh)


def test_conditional_rollouts_hold_the_given_stream_at_the_data_clip(runs):
    """reward.tasks: an a2v group generates video to the data clip's own sound (held
    clean through the whole rollout, its tokens never move), a v2a group the reverse,
    i2va holds only the first frame; t2va holds nothing."""
    from jav.clip_tokens import TokenLayout
    from jav.runs import load_config
    from jav.train.reward import _rollout, rollout_conditions

    cfg = load_config(runs[0])
    _, model, _ = load_run(runs[0])
    layout = TokenLayout.from_config(cfg)
    graphdef, params = nnx.split(model)
    tasks = ("t2va", "a2v", "v2a", "i2va")
    group = 2
    b = group * len(tasks)
    rng = np.random.default_rng(0)
    x0 = {m: jnp.asarray(rng.normal(size=(b, layout.num_tokens[m], layout.token_dims[m])), jnp.float32) for m in ("video", "audio")}
    task = jnp.repeat(jnp.arange(len(tasks)), group)
    clean = rollout_conditions(layout, x0, task, tasks)
    first = np.asarray(layout.first_frame)
    expect_v = np.stack([np.zeros_like(first), np.zeros_like(first), np.ones_like(first), first]).repeat(group, 0)
    np.testing.assert_array_equal(np.asarray(clean["video"]), expect_v)
    np.testing.assert_array_equal(np.asarray(clean["audio"]).all(-1), np.repeat([False, True, False, False], group))
    np.testing.assert_array_equal(np.asarray(clean["audio"]).any(-1), np.repeat([False, True, False, False], group))

    r = tuning_config(runs).reward
    r.update(tasks=tasks, group_size=group)
    ids, mask = model.text_encoder.tokenizer.encode(["a red disc bounces"] * b)
    trajectory, _, _ = _rollout(
        params, jax.random.key(0), 0, jnp.asarray(ids), jnp.asarray(mask), x0, task,
        graphdef=graphdef, layout=layout, mu={"video": 1.0, "audio": 1.0}, guidance=NO_GUIDANCE, reward_cfg=r,
    )  # fmt: skip
    for m in ("video", "audio"):
        held = np.asarray(clean[m])
        traj = np.asarray(trajectory[m])  # [steps + 1, B, N, P]
        np.testing.assert_array_equal(traj[:, held], np.broadcast_to(np.asarray(x0[m])[held], traj[:, held].shape))
        assert np.abs(traj[-1][~held] - np.asarray(x0[m])[~held]).mean() > 0.1  # the generated tokens are not the data's


def test_draft_tunes_through_the_last_steps_and_leaves_the_reward_model(runs, tmp_path):
    """reward.method="draft" (DRaFT-K): an ODE rollout of one sample per caption, the last
    step differentiated into the sync model; the policy moves, the reference and reward
    model do not, and every logged value is finite."""
    cfg = tuning_config(runs)
    cfg.reward.update(method="draft", draft_steps=2, group_size=1)
    lines = []
    loop.run(cfg, tmp_path / "draft", RewardPhase(cfg), log=lines.append)
    assert any("on t2va/a2v rollouts by DRaFT-2" in line for line in lines), lines
    rows = [json.loads(r) for r in (tmp_path / "draft" / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        for key in ("loss", "reward", "reward_sync", "reward_prompt", "kl", "grad_norm"):
            assert np.isfinite(row[key]), (key, row)
        assert row["grad_norm"] > 0
    _, tuned, step = load_run(tmp_path / "draft", weights="params")
    _, start, _ = load_run(runs[0])
    assert step == 2
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(nnx.state(tuned)), jax.tree.leaves(nnx.state(start))))
    assert sorted(p.name for p in (runs[1] / "checkpoints").iterdir()) == ["2"]
    cfg.reward.update(draft_steps=cfg.reward.steps + 1)
    from jav import sharding

    with pytest.raises(ValueError, match="reward.draft_steps"):
        RewardPhase(cfg).validate(sharding.mesh_from_config(cfg.mesh))
