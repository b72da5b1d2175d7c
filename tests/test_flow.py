"""jav.flow against NumPy references: noising, the sigma sampler, task masks, dropout, loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jav import flow

B, NV, NA, PV, PA, L, D = 6, 12, 5, 4, 3, 7, 8
FIRST = np.arange(NV) < 4  # first latent frame = first 4 video tokens


def _batch(seed=0, b=B):
    r = np.random.default_rng(seed)
    x0 = {
        "video": jnp.asarray(r.normal(size=(b, NV, PV)), jnp.float32),
        "audio": jnp.asarray(r.normal(size=(b, NA, PA)), jnp.float32),
    }
    text = jnp.asarray(r.normal(size=(b, L, D)), jnp.float32)
    text_mask = jnp.asarray(np.arange(L)[None] < r.integers(2, L, size=(b, 1)))
    return x0, text, text_mask


# A linear toy model whose output depends on every input, mirrored in NumPy.
def _toy_params(seed=1):
    r = np.random.default_rng(seed)
    return {
        "wv": jnp.asarray(r.normal(size=(PV, PV)) * 0.3, jnp.float32),
        "wa": jnp.asarray(r.normal(size=(PA, PA)) * 0.3, jnp.float32),
        "wt": jnp.asarray(r.normal(size=(D,)) * 0.3, jnp.float32),
    }


def _toy_denoise(params):
    def fn(x, t, text, text_mask, cross_modal):
        m = text_mask.astype(jnp.float32)
        pooled = (text @ params["wt"] * m).sum(-1) / jnp.maximum(m.sum(-1), 1.0)  # [B]
        cm = cross_modal.astype(jnp.float32)
        av = x["audio"].mean((1, 2))
        vv = x["video"].mean((1, 2))
        return {
            "video": x["video"] @ params["wv"] + t["video"][..., None] + (pooled + cm * av)[:, None, None],
            "audio": x["audio"] @ params["wa"] - t["audio"][..., None] + (pooled - cm * vv)[:, None, None],
        }

    return fn


def _toy_denoise_np(params, x, t, text, text_mask, cross_modal):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = text_mask.astype(np.float64)
    pooled = (text @ p["wt"] * m).sum(-1) / np.maximum(m.sum(-1), 1.0)
    cm = cross_modal.astype(np.float64)
    av, vv = x["audio"].mean((1, 2)), x["video"].mean((1, 2))
    return {
        "video": x["video"] @ p["wv"] + t["video"][..., None] + (pooled + cm * av)[:, None, None],
        "audio": x["audio"] @ p["wa"] - t["audio"][..., None] + (pooled - cm * vv)[:, None, None],
    }


def test_noise_and_target_match_numpy():
    r = np.random.default_rng(0)
    x0, eps = r.normal(size=(2, 3, 4)), r.normal(size=(2, 3, 4))
    t = r.uniform(size=(2, 3))
    xt = flow.noise(jnp.asarray(x0, jnp.float32), jnp.asarray(eps, jnp.float32), jnp.asarray(t, jnp.float32))
    np.testing.assert_allclose(xt, (1 - t[..., None]) * x0 + t[..., None] * eps, atol=1e-6)
    np.testing.assert_allclose(flow.velocity_target(x0, eps), eps - x0)


def test_shift_mu_line():
    np.testing.assert_allclose(flow.shift_mu(1024), 0.95, atol=1e-6)
    np.testing.assert_allclose(flow.shift_mu(4096), 2.05, atol=1e-6)
    np.testing.assert_allclose(flow.shift_mu(2560), 1.5, atol=1e-6)


def test_time_shift_identity():
    z = np.linspace(-6, 6, 41)
    sig = lambda a: 1 / (1 + np.exp(-a))
    shift = jax.jit(flow.time_shift)
    for mu in (-1.0, 0.0, 0.95, 2.05):
        np.testing.assert_allclose(shift(sig(z), mu), sig(z + mu), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(shift(jnp.array([0.0, 1.0]), 1.7), [0.0, 1.0])


def test_sigma_sampler_statistics():
    key = jax.random.key(0)
    n = 40_000
    draw = jax.jit(flow.sample_sigma, static_argnums=2)  # one compile for all four cases
    for mu, std in ((1.5, 1.0), (-0.5, 0.5)):
        s = np.asarray(draw(key, mu, n, logit_std=std, uniform_fraction=0.0), np.float64)
        logit = np.log(s) - np.log1p(-s)
        assert abs(logit.mean() - mu) < 0.03 and abs(logit.std() - std) < 0.03
    u = np.asarray(draw(key, 1.5, n, logit_std=1.0, uniform_fraction=1.0))
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    # With mu = 9 the logit-normal part lies above sigmoid(4) > 0.98 (5 std), so the
    # mass below 0.9 is the uniform part's: 0.1 * 0.9.
    mix = np.asarray(draw(key, 9.0, n, logit_std=1.0, uniform_fraction=0.1))
    assert abs((mix < 0.9).mean() - 0.09) < 0.006
    assert mix.min() >= 0.0 and mix.max() <= 1.0


# One large draw serves the statistical tests (each distinct draw costs a compile).
# A short mu line (0.5 at 10 tokens, 2.0 at 40) keeps the arrays small.
N_STAT, NV_STAT, NA_STAT = 20_000, 40, 10
FIRST_STAT = np.arange(NV_STAT) < 4


def _stat_cfg(audio="tokens"):
    cfg = flow.flow_config()
    cfg.update(p_drop_text=0.2, p_drop_cross=0.3)
    cfg.sigma.update(uniform_fraction=0.0, min_tokens=10, max_tokens=40, min_mu=0.5, max_mu=2.0, audio=audio)
    cfg.sigma.audio_mu = -0.5
    return cfg


@pytest.fixture(scope="module")
def stat_draw():
    """m -> draws for each sigma.audio mode, from one key in one jit (shared variates)."""
    n = N_STAT
    x0 = {"video": jnp.zeros((n, NV_STAT, 1)), "audio": jnp.zeros((n, NA_STAT, 1))}
    # Even samples have 40 real video tokens, odd ones 10 (the rest is padding).
    tm = {
        "video": jnp.arange(NV_STAT)[None] < jnp.where(jnp.arange(n) % 2 == 0, 40, 10)[:, None],
        "audio": jnp.ones((n, NA_STAT), bool),
    }

    edge = _stat_cfg()  # zero-probability tasks at both ends of the cdf
    edge.task_probs.update(t2va=0.0, i2va=0.0, t2v=0.7, v2a=0.3, a2v=0.0)

    @jax.jit
    def draws(key, text_mask, first, tm):
        out = {mode: flow.sample_flow_inputs(key, x0, text_mask, first, _stat_cfg(mode), tm) for mode in flow.AUDIO_SIGMA_MODES}
        out["edge"] = flow.sample_flow_inputs(key, x0, text_mask, first, edge, tm)
        return out

    d = draws(jax.random.key(5), jnp.ones((n, 4), bool), jnp.asarray(FIRST_STAT), tm)
    return jax.tree.map(np.asarray, d), jax.tree.map(np.asarray, tm)


def _logit(s):
    s = np.asarray(s, np.float64)
    return np.log(s) - np.log1p(-s)


def test_task_masks(stat_draw):
    d, tm = stat_draw
    d = d["tokens"]
    for k, name in enumerate(flow.TASKS):
        rows = d.task == k
        clean_v = {"i2va": FIRST_STAT, "v2a": np.ones(NV_STAT, bool)}.get(name, np.zeros(NV_STAT, bool))
        clean_v = np.broadcast_to(clean_v, (rows.sum(), NV_STAT))
        clean_a = np.full((rows.sum(), NA_STAT), name == "a2v")
        absent_a = np.full((rows.sum(), NA_STAT), name == "t2v")
        sv, sa = d.sigma["video"][rows, None], d.sigma["audio"][rows, None]
        np.testing.assert_array_equal(d.t["video"][rows], np.where(clean_v, 0.0, sv), err_msg=name)
        np.testing.assert_array_equal(d.t["audio"][rows], np.where(clean_a, 0.0, np.where(absent_a, 1.0, sa)), err_msg=name)
        np.testing.assert_array_equal(d.loss_mask["video"][rows], ~clean_v & tm["video"][rows], err_msg=name)
        np.testing.assert_array_equal(d.loss_mask["audio"][rows], ~(clean_a | absent_a), err_msg=name)


def test_task_frequencies_and_dropout_rates(stat_draw):
    d = stat_draw[0]["tokens"]
    cfg = _stat_cfg()
    freq = np.bincount(d.task, minlength=5) / N_STAT
    np.testing.assert_allclose(freq, [cfg.task_probs[k] for k in flow.TASKS], atol=0.01)
    assert (d.text_mask.all(-1) | ~d.text_mask.any(-1)).all()  # whole-sample dropout
    no_text, no_cross = ~d.text_mask.any(-1), ~d.cross_modal
    assert abs(no_text.mean() - 0.2) < 0.01 and abs(no_cross.mean() - 0.3) < 0.01
    assert abs((no_text & no_cross).mean() - 0.06) < 0.006  # independent draws
    edge = np.bincount(stat_draw[0]["edge"].task, minlength=5) / N_STAT
    assert edge[[0, 1, 4]].sum() == 0 and abs(edge[2] - 0.7) < 0.01


def test_sigma_mu_follows_real_token_count(stat_draw):
    d = stat_draw[0]
    logit_v = _logit(d["tokens"].sigma["video"])
    assert abs(logit_v[0::2].mean() - 2.0) < 0.05 and abs(logit_v[1::2].mean() - 0.5) < 0.05
    assert abs(logit_v[0::2].std() - 1.0) < 0.05
    mu = flow.sampling_mu(_stat_cfg("tokens"), {"video": 40, "audio": 10})
    np.testing.assert_allclose([mu["video"], mu["audio"]], [2.0, 0.5], atol=1e-6)


def test_audio_sigma_modes(stat_draw):
    d = stat_draw[0]
    logit_v = _logit(d["tokens"].sigma["video"])
    # "tokens": its own draw, mu from the 10 audio tokens, independent of video's.
    logit_a = _logit(d["tokens"].sigma["audio"])
    assert abs(logit_a.mean() - 0.5) < 0.05 and abs(np.corrcoef(logit_a, logit_v)[0, 1]) < 0.05
    # "fixed": the same variates shifted to mu = audio_mu = -0.5 instead of 0.5.
    np.testing.assert_allclose(_logit(d["fixed"].sigma["audio"]), logit_a - 1.0, atol=2e-3)
    # "shared": audio takes the video's sigma.
    np.testing.assert_array_equal(d["shared"].sigma["audio"], d["shared"].sigma["video"])
    for mode in flow.AUDIO_SIGMA_MODES:
        np.testing.assert_array_equal(d[mode].sigma["video"], d["tokens"].sigma["video"])
    for mode, want in (("fixed", -0.5), ("shared", 2.0)):
        mu = flow.sampling_mu(_stat_cfg(mode), {"video": 40, "audio": 10})
        np.testing.assert_allclose(mu["audio"], want, atol=1e-6)


def _np_loss(params, d, x0, text, cfg):
    """The loss recomputed in float64 NumPy from the draws `d`."""
    f64 = lambda a: np.asarray(a, np.float64)
    x0n = {m: f64(x0[m]) for m in x0}
    t = {m: f64(d.t[m]) for m in x0}
    eps = {m: f64(d.eps[m]) for m in x0}
    xt = {m: (1 - t[m][..., None]) * x0n[m] + t[m][..., None] * eps[m] for m in x0}
    v = _toy_denoise_np(params, xt, t, f64(text), np.asarray(d.text_mask), np.asarray(d.cross_modal))
    out = {}
    for m in x0:
        se = ((v[m] - (eps[m] - x0n[m])) ** 2).mean(-1)
        if cfg.loss_space == "x0":  # the error of x0_hat = x_t - t v
            se = ((xt[m] - t[m][..., None] * v[m] - x0n[m]) ** 2).mean(-1)
        if cfg.loss_space == "geometric":
            se = se * t[m]
        mask = np.asarray(d.loss_mask[m], np.float64)
        out[m] = (se * mask).sum() / max(mask.sum(), 1.0)
    return cfg.video_weight * out["video"] + cfg.audio_weight * out["audio"], out


def test_flow_loss_matches_numpy_and_grad_is_finite():
    x0, text, text_mask = _batch(seed=2)
    params = _toy_params()
    cfg = flow.flow_config()
    cfg.audio_weight = 0.5
    cfg.task_probs.update(t2va=0.4, i2va=0.3)  # with B = 6, likely several tasks at once
    r = np.random.default_rng(9)
    token_mask = {"video": jnp.asarray(r.uniform(size=(B, NV)) > 0.2), "audio": jnp.ones((B, NA), bool)}
    first = jnp.asarray(FIRST)

    @jax.jit
    def run(params, key):
        fn = lambda p: flow.flow_loss(_toy_denoise(p), key, x0, text, text_mask, first, cfg, token_mask)
        draws = flow.sample_flow_inputs(key, x0, text_mask, first, cfg, token_mask)
        return jax.value_and_grad(fn, has_aux=True)(params), draws

    ((loss, aux), grads), d = run(params, jax.random.key(7))
    assert len(set(np.asarray(d.task))) >= 3  # several tasks' masks in one loss
    want, parts = _np_loss(params, d, x0, text, cfg)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(aux["loss_video"], parts["video"], rtol=1e-5)
    np.testing.assert_allclose(aux["loss_audio"], parts["audio"], rtol=1e-5)
    np.testing.assert_array_equal(aux["task"], d.task)
    np.testing.assert_array_equal(aux["sigma_audio"], aux["sigma_video"])  # sigma.audio = "shared"
    for g in jax.tree.leaves(grads):
        assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0


def test_x0_loss_space_is_the_clean_estimate_error():
    x0, text, text_mask = _batch(seed=3)
    params = _toy_params()
    cfg = flow.flow_config()
    cfg.loss_space = "x0"
    first = jnp.asarray(FIRST)
    key = jax.random.key(11)
    loss, aux = jax.jit(lambda p: flow.flow_loss(_toy_denoise(p), key, x0, text, text_mask, first, cfg))(params)
    d = flow.sample_flow_inputs(key, x0, text_mask, first, cfg)
    want, _ = _np_loss(params, d, x0, text, cfg)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    cfg.loss_space = "geometric"
    geometric, _ = jax.jit(lambda p: flow.flow_loss(_toy_denoise(p), key, x0, text, text_mask, first, cfg))(params)
    np.testing.assert_allclose(geometric, _np_loss(params, d, x0, text, cfg)[0], rtol=1e-5)
    cfg.loss_space = "velocity"
    velocity, _ = jax.jit(lambda p: flow.flow_loss(_toy_denoise(p), key, x0, text, text_mask, first, cfg))(params)
    assert float(loss) < float(geometric) < float(velocity)  # t^2 < t < 1 on every noisy token
    cfg.loss_space = "eps"
    with pytest.raises(ValueError, match="flow.loss_space='eps'"):
        flow.validate_flow_config(cfg)


def test_config_validation_names_key():
    cfg = flow.flow_config()
    flow.validate_flow_config(cfg)
    cfg.task_probs.t2va = 0.4
    with pytest.raises(ValueError, match=r"flow\.task_probs sum to 0\.9.*t2va=0\.5"):
        flow.validate_flow_config(cfg)
    cfg = flow.flow_config()
    cfg.sigma.audio = "own"
    with pytest.raises(ValueError, match=r"flow\.sigma\.audio='own'"):
        flow.validate_flow_config(cfg)
    cfg = flow.flow_config()
    cfg.p_drop_text = 1.5
    with pytest.raises(ValueError, match=r"flow\.p_drop_text=1\.5"):
        flow.validate_flow_config(cfg)
    cfg = flow.flow_config()
    x0, text, text_mask = _batch()
    with pytest.raises(ValueError, match=r"task_probs\.i2va=0\.2 needs first_frame"):
        flow.flow_loss(_toy_denoise(_toy_params()), jax.random.key(0), x0, text, text_mask, None, cfg)
