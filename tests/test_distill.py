"""The distillation phase (jav/train/distill.py) on the tiny test model: its targets
are the sampler's guided velocity and the mean-velocity identity, no gradient
reaches the teacher, the student starts as its teacher, and a distill run
resumes to the same losses and samples in its few steps."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks import distill_compare
from configs import distill as distill_config
from configs import test as test_config
from jav import samplers, sharding
from jav.clip_tokens import TokenLayout
from jav.models import AVDiT
from jav.models.av_dit import GUIDANCE_TERMS
from jav.runs import load_config, load_run
from jav.train import loop
from jav.train import distill as distill_lib
from jav.train.distill import DistillPhase, distill_loss, distill_targets, draw_interval

# with tests/test_reward.py on one worker, which trains conftest's tiny run once (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("tiny_diffusion_run")


def tiny_inputs(cfg, batch=2, seed=0):
    layout = TokenLayout.from_config(cfg)
    rng = np.random.default_rng(seed)
    x = {
        m: jnp.asarray(rng.normal(size=(batch, n, p)), jnp.float32)
        for m, n, p in (("video", layout.num_tokens["video"], 2 * 4 * 4 * 3), ("audio", layout.num_tokens["audio"], 64))
    }
    t = {m: jnp.asarray(rng.uniform(0.1, 1.0, size=(batch, 1)) * np.ones(x[m].shape[:2]), jnp.float32) for m in x}
    text = jnp.asarray(rng.normal(size=(batch, 5, cfg.model.text.dim)), jnp.float32)
    mask = jnp.asarray(np.arange(5)[None] < np.array([[3], [5]]))
    return layout, x, t, text, mask


def perturbed(model, scale=0.05):
    """The model with every parameter moved by noise: an initialised AVDiT's zero gates
    would hide the text and the other modality, which guidance contrasts."""
    state = nnx.state(model)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    nnx.update(model, jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]))
    return model


def test_per_clip_guidance_scales_give_the_samplers_guided_velocity():
    cfg = test_config.get_config()
    model = perturbed(AVDiT(cfg.model, rngs=nnx.Rngs(0)))
    layout, x, t, text, mask = tiny_inputs(cfg)
    fn = layout.denoiser(model)
    scales = [(3.0, 1.0, 1.0), (2.0, 4.0, 1.5)]
    per_clip = samplers.Guidance(*(jnp.asarray([s[i] for s in scales]) for i in range(3)))
    got = jax.jit(lambda: distill_targets(fn, None, x, t, text, mask, per_clip, None))()
    for b, s in enumerate(scales):
        one = {m: a[b : b + 1] for m, a in x.items()}
        want = jax.jit(
            lambda: samplers.guided_velocity(fn, one, {m: a[b : b + 1] for m, a in t.items()}, text[b : b + 1], mask[b : b + 1], samplers.Guidance(*s))
        )()
        for m in x:
            np.testing.assert_allclose(got[m][b : b + 1], want[m], rtol=2e-5, atol=2e-5)
    unguided = jax.jit(lambda: fn(x, t, text, mask, jnp.ones((2,), bool)))()
    assert not np.allclose(got["video"], unguided["video"], atol=1e-3)  # the scales did something


def test_the_mean_velocity_target_follows_the_teacher_path():
    """For u(x, t, h) = a x + b t + c h and a teacher velocity w: du/dt along the path
    is a w + b + c on noisy tokens, so the target is w - h (a w + b + c); clean
    tokens (t = 0, h = 0) keep w."""
    a, b, c = 0.5, -2.0, 3.0
    w = {"video": jnp.full((2, 3, 4), 0.7), "audio": jnp.full((2, 5, 2), -1.1)}
    t = {"video": jnp.array([[0.8, 0.8, 0.0], [0.4, 0.4, 0.4]]), "audio": jnp.full((2, 5), 0.6)}
    h = draw_interval(jax.random.key(1), t, fraction=1.0)

    def teacher(x, tt, text, mask, cross):
        return {m: jnp.broadcast_to(w[m], x[m].shape) for m in x}

    def student(x, tt, text, mask, cross, interval):
        return {m: a * x[m] + b * tt[m][..., None] + c * interval[m][..., None] for m in x}

    x = {m: jnp.zeros_like(w[m]) for m in w}
    got = distill_targets(teacher, student, x, t, jnp.zeros((2, 1, 1)), jnp.ones((2, 1), bool), samplers.NO_GUIDANCE, h)
    for m in w:
        noisy = (t[m] > 0)[..., None]
        want = jnp.where(noisy, w[m] - h[m][..., None] * (a * w[m] + b + c), w[m])
        np.testing.assert_allclose(got[m], want, rtol=1e-6, atol=1e-6)
    assert float(h["video"][0, 2]) == 0.0 and bool(jnp.all(h["video"][:, :2] <= t["video"][:, :2]))


def test_clips_on_the_grid_sit_where_the_student_samples():
    """distill.grid_fraction: a moved clip's generated tokens get t = s_k and step length
    s_k - s_(k+1) of the sampler's own schedule (each modality its mu, one k per clip);
    clean tokens and clips that do not span a step keep their t and h."""
    cfg = test_config.get_config()
    cfg.sample.steps = 4
    grid = distill_lib.sampling_grid(cfg, {"video": 48, "audio": 20})
    mu = distill_lib.flow.sampling_mu(cfg.flow, {"video": 48, "audio": 20})
    for m, s in grid:
        np.testing.assert_allclose(s, samplers.sigma_schedule(4, mu[m]), rtol=1e-6)
    batch = 64
    t = {"video": jnp.full((batch, 3), 0.9).at[:, 2].set(0.0), "audio": jnp.full((batch, 5), 0.7)}
    h = draw_interval(jax.random.key(1), t, fraction=0.5)
    noisy = {m: t[m] > 0 for m in t}
    t2, h2 = jax.jit(lambda: distill_lib.on_grid(jax.random.key(2), t, h, noisy, grid, 1.0))()
    s = {m: np.asarray(v) for m, v in grid}
    spans = np.asarray(h["video"][:, 0]) > 0
    assert spans.any() and not spans.all()
    ks = set()
    for b in range(batch):
        if not spans[b]:  # kept as drawn
            for m in t:
                np.testing.assert_array_equal(t2[m][b], t[m][b]) and np.testing.assert_array_equal(h2[m][b], h[m][b])
            continue
        k = int(np.argmin(np.abs(s["video"][:-1] - float(t2["video"][b, 0]))))
        ks.add(k)
        for m, n in (("video", 2), ("audio", 5)):
            np.testing.assert_allclose(t2[m][b, :n], s[m][k], rtol=1e-6)
            np.testing.assert_allclose(h2[m][b, :n], s[m][k] - s[m][k + 1], rtol=1e-5)
        assert float(t2["video"][b, 2]) == 0.0 and float(h2["video"][b, 2]) == 0.0  # the clean token stays clean
    assert ks == {0, 1, 2, 3}  # every step of the grid is drawn


def test_the_adaptive_loss_is_the_flow_loss_per_clip_reweighted():
    from jav import flow
    from jav.train.distill import adaptive_loss

    cfg = test_config.get_config().flow
    rng = np.random.default_rng(3)
    u = {m: jnp.asarray(rng.normal(size=(3, n, 4)) * np.array([1.0, 3.0, 10.0])[:, None, None], jnp.float32) for m, n in (("video", 6), ("audio", 5))}
    target = {m: jnp.zeros_like(a) for m, a in u.items()}
    t = {m: jnp.asarray(rng.uniform(0, 1, size=a.shape[:2]), jnp.float32) for m, a in u.items()}
    mask = {"video": jnp.ones((3, 6), bool), "audio": jnp.asarray(np.arange(5)[None] < np.array([[5], [2], [0]]))}
    plain_total, plain = flow.velocity_loss(u, target, t, mask, cfg)
    weighted, got_plain, got_total = adaptive_loss(u, target, t, mask, cfg, p=0.0)
    np.testing.assert_allclose([got_total, got_plain["video"], got_plain["audio"]], [plain_total, plain["video"], plain["audio"]], rtol=1e-6)
    # p = 1: each clip's loss divided by itself (+ eps): about 1 per clip with any loss, so the
    # clip 100x off no longer outweighs the others
    weighted, _, _ = adaptive_loss(u, target, t, mask, cfg, p=1.0)
    assert abs(float(weighted) - (cfg.video_weight + cfg.audio_weight)) < 0.01


@pytest.fixture(scope="module")
def teacher(tiny_diffusion_run):
    return tiny_diffusion_run


def student_config(teacher, steps=4):
    cfg = distill_config.get_config(str(teacher))
    cfg.train.steps = steps
    cfg.train.log_every = 1
    cfg.train.checkpoint_every = 2
    cfg.distill.guidance.modality = [1.0, 2.0]  # every teacher pass: conditional, no text, no coupling
    cfg.sample.steps = 2
    cfg.distill.grid_fraction = 0.5  # half the spanning clips on the 2-step sampling grid
    cfg.distill.teacher_steps = 0  # MeanFlow's target: the student's own JVP in it, the case where a gradient could leak
    return cfg


def losses(workdir):
    return {r["step"]: r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


def test_the_student_starts_as_its_teacher_and_no_gradient_reaches_the_teacher(teacher, tmp_path):
    cfg = student_config(teacher)
    phase = DistillPhase(cfg)
    mesh = sharding.mesh_from_config(cfg.mesh)
    phase.validate(mesh)
    run = loop.Run(cfg, tmp_path, mesh, tuple(tuple(r) for r in cfg.mesh.rules), 0, 1, lambda _: None)
    state = phase.init_state(run)
    assert json.loads((tmp_path / "teacher.json").read_text()) == dict(dir=str(teacher), step=2, weights="ema")
    student = nnx.merge(phase.graphdef, state["model"].params)
    teacher_model = nnx.merge(phase.teacher_graphdef, state["teacher"].params)
    layout, x, t, text, mask = tiny_inputs(cfg)
    cross = jnp.ones((2,), bool)
    want = jax.jit(lambda: layout.denoiser(teacher_model)(x, t, text, mask, cross))()
    got = jax.jit(lambda: layout.denoiser(student, jnp.ones((3,)))(x, t, text, mask, cross, interval={m: jnp.zeros_like(t[m]) for m in t}))()
    for m in x:
        np.testing.assert_allclose(got[m], want[m], rtol=1e-5, atol=1e-5)

    batch = jax.tree.map(jnp.asarray, next(phase.stream(run)))
    kw = dict(
        batch=batch,
        key=jax.random.key(0),
        graphdef=phase.graphdef,
        teacher_graphdef=phase.teacher_graphdef,
        layout=phase._layout_of(batch)[0],
        flow_cfg=phase.flow_cfg,
        distill_cfg=cfg.distill,
        grid=distill_lib.sampling_grid(cfg, phase._layout_of(batch)[0].num_tokens),
    )
    # The teacher's gradient alone: all zeros (a stopped gradient compiles to constants, so
    # this costs no backward pass; the student's gradients are the resume test's steps).
    teacher_grads = jax.jit(jax.grad(lambda q: distill_loss(state["model"].params, q, **kw)[0]))(state["teacher"].params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(teacher_grads))


def dmd_config(teacher, steps=4):
    cfg = student_config(teacher, steps)
    cfg.distill.dmd.update(weight=1.0, batch=1, critic_updates=2)  # the first update is at learning rate 0 (warm-up)
    return cfg


def test_a_distill_run_resumes_to_the_same_losses_and_samples_in_its_steps(teacher, tmp_path):
    """With distribution matching on: the critic trains beside the student, is checkpointed in
    the `extra` item with its optimiser state, and a preempted run resumes to the same losses."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    cfg = dmd_config(teacher)
    loop.run(cfg, straight, DistillPhase(cfg), log=lambda _: None)

    def preempt_at_2(msg):
        if msg.startswith("step      2/"):
            os.kill(os.getpid(), signal.SIGTERM)

    assert loop.run(cfg, split, DistillPhase(cfg), log=preempt_at_2)["step"] == 2
    messages = []
    loop.run(cfg, split, DistillPhase(cfg), log=messages.append)
    assert any(m.startswith("resumed from") for m in messages) and any(f"\ndistilling {teacher} step 2 (ema)" in m for m in messages)
    a, b = losses(straight), losses(split)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6), (step, a, b)
    records = [json.loads(r) for r in (split / "metrics.jsonl").read_text().splitlines()]
    # the critic starts as the teacher (sampled unguided here): no direction until it has learned
    assert records[0]["loss_dmd"] == 0.0 and all(r["loss_dmd"] > 0 for r in records[1:])
    assert all(r["loss_critic"] > 0 and r["grad_norm_critic"] > 0 for r in records)
    assert sorted(p.name for p in (straight / "checkpoints" / "4").iterdir() if p.is_dir()) == [
        "config",
        "data_state",
        "ema",
        "extra",
        "opt_state",
        "params",
    ]  # the critic (and its optimiser state) in `extra`; the teacher is referenced, never saved

    cfg_loaded, student, step = load_run(straight)
    assert step == 4 and cfg_loaded.phase == "distill" and cfg_loaded.sample.steps == 2
    # the new input's embedder learned: its output layer started at zero
    assert all(float(jnp.abs(student.guide[m].fc2.kernel[...]).max()) > 0 for m in ("video", "audio"))

    # sampled and scored beside its teacher: one pass per step against the teacher's 32
    rows = distill_compare.compare(
        teacher, straight, num=2, tasks=("v2a",), student_steps=[2], out=tmp_path / "compare", batch=2, repeats=1, log=lambda _: None
    )
    assert [(r["role"], r["steps"], r["nfe"]) for r in rows] == [("teacher", 32, 32), ("student", 2, 2)]
    assert all(r["seconds_per_clip"] > 0 and set(r["metrics"]["v2a"]) == set(distill_compare.METRICS) for r in rows)
    assert distill_compare.table(rows, ("v2a",)).count("\n| student | 2 | 2 |") == 1


def test_a_student_that_is_not_its_teachers_architecture_is_refused(teacher):
    cfg = student_config(teacher)
    cfg.model.depth = 4
    mesh = sharding.mesh_from_config(cfg.mesh)
    with pytest.raises(ValueError, match=r"differs from the teacher's .* in model\.depth"):
        DistillPhase(cfg).validate(mesh)
    cfg = student_config(teacher)
    cfg.distill.guidance.text_video = [0.5, 2.0]
    with pytest.raises(ValueError, match=r"distill.guidance.text_video=\[0.5, 2.0\]"):
        DistillPhase(cfg).validate(mesh)
    cfg = student_config(teacher)
    cfg.sample.text_video = 4.0
    with pytest.raises(ValueError, match=r"sample.text_video=4.0 is outside distill.guidance.text_video=\[1.0, 3.0\]"):
        DistillPhase(cfg).validate(mesh)
    for key, value, match in (
        ("batch", 99, r"distill.dmd.batch=99 must be in \[1, train.batch_size="),
        ("t_range", [0.0, 0.5], r"distill.dmd.t_range=\[0.0, 0.5\] must be"),
        ("critic_warmup", -1, r"distill.dmd.critic_warmup=-1"),
    ):
        cfg = dmd_config(teacher)
        cfg.distill.dmd[key] = value
        with pytest.raises(ValueError, match=match):
            DistillPhase(cfg).validate(mesh)


def test_the_students_guidance_ranges_reach_the_teachers_sampling_scales(teacher):
    """A teacher sampled with cross-modal guidance 3 gives a student that learns that term up
    to 3 (it samples at the teacher's settings), the default ranges kept where they reach further."""
    teacher_cfg = load_config(teacher)
    teacher_cfg.sample.modality, teacher_cfg.sample.text_video = 3.0, 2.0
    cfg = distill_lib.student_config(teacher_cfg, "unused")
    assert [list(cfg.distill.guidance[t]) for t in GUIDANCE_TERMS] == [[1.0, 3.0], [1.0, 1.0], [1.0, 3.0]]


def test_the_teacher_path_target_is_the_teachers_euler_displacement():
    """teacher_steps = K: for a teacher velocity v(x, t) = a x + b t, K Euler steps from t to
    r = t - h give x_r, and the target is (x_t - x_r) / h on tokens with h > 0, the velocity at
    x_t where h = 0 (clean tokens, r = t clips). No student is called."""
    from jav.train.distill import teacher_path_targets

    a, b, k = -0.7, 1.5, 3
    rng = np.random.default_rng(0)
    x = {"video": jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32), "audio": jnp.asarray(rng.normal(size=(2, 5, 2)), jnp.float32)}
    t = {"video": jnp.array([[0.8, 0.8, 0.0], [0.4, 0.4, 0.4]]), "audio": jnp.full((2, 5), 0.6)}
    h = draw_interval(jax.random.key(1), t, fraction=0.5)

    def teacher(xx, tt, text, mask, cross):
        return {m: a * xx[m] + b * tt[m][..., None] for m in xx}

    got = jax.jit(lambda: teacher_path_targets(teacher, x, t, jnp.zeros((2, 1, 1)), jnp.ones((2, 1), bool), samplers.NO_GUIDANCE, h, k))()
    for m in x:
        xm, tm, hm = np.asarray(x[m], np.float64), np.asarray(t[m], np.float64)[..., None], np.asarray(h[m], np.float64)[..., None]
        v0 = a * xm + b * tm
        y, tau = xm.copy(), tm.copy()
        for _ in range(k):
            y, tau = y - hm / k * (a * y + b * tau), tau - hm / k
        want = np.where(hm > 0, (xm - y) / np.where(hm > 0, hm, 1.0), v0)
        np.testing.assert_allclose(np.asarray(got[m]), want, rtol=1e-5, atol=1e-5)
    spans = np.asarray(h["video"][:, 0]) > 0
    assert spans.any() and not spans.all()  # both kinds of clip are in the check


def test_the_students_differentiable_rollout_is_its_sampler():
    """`student_rollout` (what distribution matching differentiates) gives the samples
    `jav.samplers.euler_sample(mean_velocity=True)` gives, from the same noise on the same grid."""
    cfg = test_config.get_config()
    cfg.model.guidance_embed = cfg.model.interval_embed = True
    model = perturbed(AVDiT(cfg.model, rngs=nnx.Rngs(0)))
    layout, x, _, text, mask = tiny_inputs(cfg)
    cfg.sample.steps = 3
    grid = distill_lib.sampling_grid(cfg, layout.num_tokens)
    fn = layout.denoiser(model, jnp.asarray([2.0, 1.0, 1.5]))
    got = jax.jit(lambda: distill_lib.student_rollout(fn, x, text, mask, grid))()
    mu = distill_lib.flow.sampling_mu(cfg.flow, layout.num_tokens)
    want = jax.jit(lambda: samplers.euler_sample(fn, None, x, text, mask, num_steps=3, mu=mu, mean_velocity=True))()
    for m in x:
        np.testing.assert_allclose(got[m], want[m], rtol=2e-5, atol=2e-5)
        assert not np.allclose(got[m], x[m], atol=1e-2)


def test_the_dmd_direction_is_the_critics_estimate_minus_the_teachers():
    """For velocities v_teacher = a x + b and v_critic = c x: at x_t = (1 - t) x0 + t eps the
    direction is t (v_teacher - v_critic) over mean |x0 - (x_t - t v_teacher)| per clip and
    modality, and the DMD loss's gradient in x0 is the direction over the element count."""
    a, b, c = -0.4, 0.3, 0.2
    rng = np.random.default_rng(5)
    x0 = {"video": jnp.asarray(rng.normal(size=(3, 4, 6)), jnp.float32), "audio": jnp.asarray(rng.normal(size=(3, 5, 2)), jnp.float32)}

    def teacher(x, t, text, mask, cross):
        return {m: a * x[m] + b for m in x}

    def critic(x, t, text, mask, cross):
        return {m: c * x[m] for m in x}

    key, t_range = jax.random.key(3), (0.1, 0.9)
    text, mask = jnp.zeros((3, 1, 1)), jnp.ones((3, 1), bool)
    got = jax.jit(lambda: distill_lib.dmd_direction(teacher, critic, key, x0, text, text, mask, samplers.NO_GUIDANCE, t_range))()
    x_t, t, _ = distill_lib.noised_copy(key, x0, t_range)
    for m in x0:
        tm = np.asarray(t[m])[..., None]
        xt = np.asarray(x_t[m], np.float64)
        real = xt - tm * (a * xt + b)
        want = tm * ((a * xt + b) - c * xt) / np.abs(np.asarray(x0[m]) - real).mean(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(got[m], want, rtol=1e-4, atol=1e-5)
        assert 0.1 <= float(t[m].min()) and float(t[m].max()) <= 0.9
    flow_cfg = test_config.get_config().flow
    grads = jax.grad(lambda x: distill_lib.dmd_loss(x, got, flow_cfg))(x0)
    for m, w in (("video", flow_cfg.video_weight), ("audio", flow_cfg.audio_weight)):
        np.testing.assert_allclose(grads[m], w * got[m] / got[m].size, rtol=1e-5, atol=1e-8)


def test_with_a_critic_the_students_gradient_reaches_neither_teacher_nor_critic(teacher, tmp_path):
    """Distribution matching: the student's loss has a gradient in the student (the DMD term
    alone too) and none in the teacher or the critic; the critic's update changes only the
    critic, which starts as the teacher. The resume test's config: on one worker the step it
    compiled is reused (pytest -n 2 --dist loadgroup)."""
    cfg = dmd_config(teacher)
    phase = DistillPhase(cfg)
    mesh = sharding.mesh_from_config(cfg.mesh)
    phase.validate(mesh)
    run = loop.Run(cfg, tmp_path, mesh, tuple(tuple(r) for r in cfg.mesh.rules), 0, 1, lambda _: None)
    state = phase.init_state(run)
    for got, want in zip(jax.tree.leaves(state["critic"].params), jax.tree.leaves(state["teacher"].params)):
        np.testing.assert_array_equal(got, want)
    batch = sharding.global_batch(next(phase.stream(run)), mesh, run.rules, cfg.train.batch_size)  # placed as the trainer places it
    options = phase.step_options(phase._layout_of(batch)[0])
    kw = {k: options[k] for k in ("graphdef", "teacher_graphdef", "layout", "flow_cfg", "distill_cfg", "grid", "critic_graphdef", "dmd_guidance")}
    kw.update(batch=batch, key=jax.random.key(0))

    # a critic that has moved off the teacher (at the start the two estimates agree: no direction)
    leaves, tree = jax.tree.flatten(state["critic"].params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    moved = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])

    def dmd_loss(student, teacher_params, critic):
        return distill_loss(student, teacher_params, critic_params=critic, **kw)[1][2]["loss_dmd"]

    # the DMD term's gradient (the regression's is the test above's): in the student only. The
    # student's is read as a directional derivative along a random direction (forward mode: one
    # compile of the rollout's tangent instead of its backward pass), nonzero only if the gradient is;
    # the teacher's and the critic's stopped gradients compile to constants
    teacher_grads, critic_grads = jax.jit(jax.grad(dmd_loss, argnums=(1, 2)))(state["model"].params, state["teacher"].params, moved)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves((teacher_grads, critic_grads)))
    leaves, tree = jax.tree.flatten(state["model"].params)
    direction = jax.tree.unflatten(tree, [jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, jax.random.split(jax.random.key(8), len(leaves)))])
    student_derivative = jax.jit(lambda p, d: jax.jvp(lambda q: dmd_loss(q, state["teacher"].params, moved), (p,), (d,))[1])(state["model"].params, direction)
    assert abs(float(student_derivative)) > 0

    before = jax.tree.map(np.asarray, state)
    new = state
    with jax.set_mesh(mesh), sharding.logical_rules(run.rules):  # as in the trainer, whose compiled step this reuses
        for step in range(2):  # the first update is at learning rate 0 (warm-up): the second moves the student
            new, metrics = phase.step(new, batch, jax.random.key(1 + step), step)
            assert float(metrics["skipped"]) == 0 and float(metrics["skipped_critic"]) == 0
    changed = {name: any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[name].params), jax.tree.leaves(new[name].params))) for name in new}
    assert changed == {"model": True, "teacher": False, "critic": True}
