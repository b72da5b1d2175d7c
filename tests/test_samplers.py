"""jav.samplers against NumPy references and a Gaussian toy whose exact flow is known.

Toy: x0 ~ N(mu_d, s_d^2 I), x_t = (1 - t) x0 + t eps. Then x_t ~ N((1 - t) mu_d, V I) with
V = (1 - t)^2 s_d^2 + t^2, the exact velocity E[eps - x0 | x_t] is
(t - (1 - t) s_d^2) (x_t - (1 - t) mu_d) / V - mu_d, and the probability-flow ODE maps
noise z at t = 1 to mu_d + s_d z at t = 0.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jav import samplers
from jav.samplers import Guidance

B, NV, NA, PV, PA, L, D = 2, 6, 4, 3, 2, 5, 4
TOY = {"video": (0.7, 0.5), "audio": (-0.4, 1.3)}  # (mu_d, s_d) per modality


def _gauss_v(xp, x, t, mu_d, s_d):
    t = t[..., None]
    var = (1 - t) ** 2 * s_d**2 + t**2
    return (t - (1 - t) * s_d**2) * (x - (1 - t) * mu_d) / var - mu_d


def gauss_denoise(x, t, text, text_mask, cross_modal):
    return {m: _gauss_v(jnp, x[m], t[m], *TOY[m]) for m in x}


def np_gauss(x, t):
    return {m: _gauss_v(np, x[m], t[m], *TOY[m]) for m in x}


def toy_cond(xp, x, t, text, text_mask, cross_modal):
    """Depends on x, t, the masked text and cross_modal; written once for jnp and np."""
    m = text_mask.astype(xp.float32 if xp is jnp else np.float64)
    pooled = (text.sum(-1) * m).sum(-1) / xp.maximum(m.sum(-1), 1.0)  # [B]
    cm = cross_modal.astype(m.dtype)
    av, vv = x["audio"].mean((1, 2)), x["video"].mean((1, 2))  # [B]
    return {
        "video": 0.5 * x["video"] * (1 + t["video"][..., None]) + (pooled + cm * av)[:, None, None],
        "audio": -0.3 * x["audio"] + t["audio"][..., None] + (0.5 * pooled - cm * vv)[:, None, None],
    }


cond_denoise = functools.partial(toy_cond, jnp)


def np_schedule(n, mu):
    s = np.linspace(1.0, 0.0, n + 1)
    with np.errstate(divide="ignore"):
        return np.where(s == 0, 0.0, np.exp(mu) / (np.exp(mu) + 1 / s - 1))


def np_guided(x, t, text, text_mask, g: Guidance):
    on = np.ones(text_mask.shape[0], bool)
    v_c = toy_cond(np, x, t, text, text_mask, on)
    v_u = toy_cond(np, x, t, text, np.zeros_like(text_mask), on)
    v_n = toy_cond(np, x, t, text, text_mask, ~on)
    return {m: v_c[m] + (g.text_scale(m) - 1) * (v_c[m] - v_u[m]) + (g.modality - 1) * (v_c[m] - v_n[m]) for m in x}


def np_euler(vel, x, sig, clean=None, x_clean=None):
    clean = clean or {m: np.zeros(x[m].shape[:2], bool) for m in x}
    x_clean = x_clean or {m: np.zeros(x[m].shape) for m in x}
    hold = lambda x: {m: np.where(clean[m][..., None], x_clean[m], x[m]) for m in x}
    x = hold({m: np.asarray(x[m], np.float64) for m in x})
    for i in range(len(sig["video"]) - 1):
        t = {m: np.where(clean[m], 0.0, sig[m][i]) for m in x}
        v = vel(x, t)
        x = hold({m: x[m] + (sig[m][i + 1] - sig[m][i]) * v[m] for m in x})
    return x


def _inputs(seed=0, b=B, nv=NV, na=NA):
    r = np.random.default_rng(seed)
    x = {"video": r.normal(size=(b, nv, PV)), "audio": r.normal(size=(b, na, PA))}
    text = r.normal(size=(b, L, D))
    text_mask = np.arange(L)[None] < r.integers(1, L, size=(b, 1))
    j = lambda a: jnp.asarray(a, jnp.float32)
    return x, {m: j(x[m]) for m in x}, text, j(text), text_mask, jnp.asarray(text_mask)


def test_sigma_schedule():
    for mu in (0.0, 1.3):
        s = np.asarray(samplers.sigma_schedule(10, mu))
        assert s.shape == (11,) and s[0] == 1.0 and s[-1] == 0.0 and (np.diff(s) < 0).all()
        np.testing.assert_allclose(s, np_schedule(10, mu), rtol=1e-6)
    assert (samplers.sigma_schedule(10, 1.3)[1:-1] > samplers.sigma_schedule(10, 0.0)[1:-1]).all()


# Shared compiled samplers: each distinct jit costs a compile, so tests reuse these.
_euler = jax.jit(samplers.euler_sample, static_argnums=0, static_argnames=("num_steps", "guidance"))


def test_euler_matches_numpy_and_converges_first_order():
    xn, xj, _, text, _, mask = _inputs()
    mu = {"video": 1.0, "audio": 0.3}  # per-modality schedules
    sig = {m: np_schedule(16, mu[m]) for m in mu}
    got = _euler(gauss_denoise, None, xj, text, mask, num_steps=16, mu=mu)
    want = np_euler(np_gauss, xn, sig)
    for m in xn:
        np.testing.assert_allclose(got[m], want[m], atol=1e-5)

    # The exact ODE solution is mu_d + s_d z; the error halves when the steps double.
    errs = []
    for n in (8, 16, 32):
        out = _euler(gauss_denoise, None, xj, text, mask, num_steps=n, mu={"video": 0.0, "audio": 0.0})
        exact = {m: TOY[m][0] + TOY[m][1] * xn[m] for m in xn}  # mu_d + s_d z
        errs.append(max(np.abs(np.asarray(out[m]) - exact[m]).max() for m in xn))
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert errs[-1] < 0.15 and ((ratios > 1.8) & (ratios < 2.2)).all(), (errs, ratios)


@pytest.mark.parametrize(
    "g, passes",
    [
        (Guidance(), 1),
        (Guidance(text_video=3.0), 2),
        (Guidance(modality=3.0), 2),
        (samplers.LTX2_GUIDANCE, 3),
    ],
)
def test_guided_velocity_matches_numpy_in_one_call(g, passes):
    xn, xj, text_n, text, mask_n, mask = _inputs(seed=1)
    r = np.random.default_rng(2)
    tn = {"video": r.uniform(size=(B, NV)), "audio": r.uniform(size=(B, NA))}
    bias = r.normal(size=B)  # a per-sample extra the denoiser closes over
    calls = []

    def spy(x, t, text, text_mask, cross_modal):
        calls.append(text.shape[0])
        v = cond_denoise(x, t, text, text_mask, cross_modal)
        b = samplers.tile_to_batch(jnp.asarray(bias, jnp.float32), text.shape[0])  # [n * B]
        return {m: v[m] + b[:, None, None] for m in v}

    guided = jax.jit(samplers.guided_velocity, static_argnums=(0, 5))
    got = guided(spy, xj, {m: jnp.asarray(tn[m], jnp.float32) for m in tn}, text, mask, g)
    assert calls == [passes * B]
    # The bias is the same in every pass of a sample, so it cancels in the differences.
    want = np_guided(xn, tn, text_n, mask_n, g)
    for m in xn:
        np.testing.assert_allclose(got[m], want[m] + bias[:, None, None], rtol=1e-5, atol=1e-5)


def test_jitted_guided_euler_with_clean_tokens_matches_numpy():
    xn, xj, text_n, text, mask_n, mask = _inputs(seed=3)
    r = np.random.default_rng(4)
    # Sample 0: I2VA (first 2 video tokens clean); sample 1: A2V (all audio clean).
    clean_n = {"video": np.zeros((B, NV), bool), "audio": np.zeros((B, NA), bool)}
    clean_n["video"][0, :2] = True
    clean_n["audio"][1] = True
    xc_n = {"video": r.normal(size=(B, NV, PV)), "audio": r.normal(size=(B, NA, PA))}
    clean = {m: jnp.asarray(clean_n[m]) for m in clean_n}
    xc = {m: jnp.asarray(xc_n[m], jnp.float32) for m in xc_n}
    g = samplers.LTX2_GUIDANCE
    seen = []

    def spy(x, t, text, text_mask, cross_modal):
        record = lambda tv, ta: seen.append((np.asarray(tv), np.asarray(ta)))
        jax.debug.callback(record, t["video"], t["audio"])
        return cond_denoise(x, t, text, text_mask, cross_modal)

    got = _euler(spy, None, xj, text, mask, num_steps=6, mu=0.8, guidance=g, clean=clean, x_clean=xc)
    sig = np_schedule(6, 0.8)
    vel = lambda x, t: np_guided(x, t, text_n, mask_n, g)
    want = np_euler(vel, xn, {"video": sig, "audio": sig}, clean_n, xc_n)
    for m in xn:
        np.testing.assert_allclose(got[m], want[m], rtol=1e-4, atol=1e-4)
        # Clean tokens are the given ones, bit for bit.
        np.testing.assert_array_equal(np.asarray(got[m])[clean_n[m]], np.asarray(xc[m])[clean_n[m]])
    # The denoiser saw t = 0 on clean tokens (3 passes each step) and the schedule elsewhere.
    assert len(seen) == 6
    for i, (tv, ta) in enumerate(seen):
        for tm, cm in ((tv, clean_n["video"]), (ta, clean_n["audio"])):
            tm = tm.reshape(3, B, -1)
            assert (tm[:, cm] == 0).all()
            np.testing.assert_allclose(tm[:, ~cm], sig[i], rtol=1e-6)


def test_euler_determinism_with_shape_inputs():
    _, _, _, text, _, mask = _inputs()
    shapes = {"video": (B, NV, PV), "audio": (B, NA, PA)}
    run = jax.jit(lambda k: samplers.euler_sample(gauss_denoise, k, shapes, text, mask, num_steps=4, mu=1.0))
    a, b, c = run(jax.random.key(0)), run(jax.random.key(0)), run(jax.random.key(1))
    for m in shapes:
        assert a[m].shape == shapes[m]
        np.testing.assert_array_equal(a[m], b[m])
        assert not np.allclose(a[m], c[m])


# One SDE configuration shared by the SDE tests: 8 samples of 128 tokens per modality,
# sample 0 with its first 8 video tokens clean (I2VA), sample 1 with all audio clean (A2V).
SB, SN, STEPS, SMU = 8, 128, 32, 0.5
_sde = jax.jit(
    functools.partial(
        samplers.sde_sample,
        gauss_denoise,
        num_steps=STEPS,
        mu={"video": SMU, "audio": SMU},
        return_trajectory=True,
    )
)


@pytest.fixture(scope="module")
def sde_case():
    r = np.random.default_rng(5)
    x = {"video": r.normal(size=(SB, SN, PV)), "audio": r.normal(size=(SB, SN, PA))}
    clean = {"video": np.zeros((SB, SN), bool), "audio": np.zeros((SB, SN), bool)}
    clean["video"][0, :8] = True
    clean["audio"][1] = True
    x_clean = {m: r.normal(size=x[m].shape) for m in x}
    j = lambda d, dt=jnp.float32: {m: jnp.asarray(d[m], dt) for m in d}
    text, mask = jnp.zeros((SB, L, D)), jnp.ones((SB, L), bool)
    args = (j(x), text, mask)
    kw = dict(clean=j(clean, bool), x_clean=j(x_clean))
    out = _sde(jax.random.key(2), *args, noise_level=0.7, **kw)
    return x, clean, x_clean, args, kw, out


def _np_sde_logprob(traj, sig, clean, a):
    """Flow-GRPO's step written out: std_t = a sqrt(t / (1 - t)), 1 - t at t = 1 taken at t_next."""
    steps, b = len(sig) - 1, traj["video"].shape[1]
    lp = np.zeros((b, steps))
    for i in range(steps):
        x = {m: traj[m][i] for m in traj}
        t = {m: np.where(clean[m], 0.0, sig[i]) for m in traj}
        v = np_gauss(x, t)
        if sig[i + 1] == 0:  # deterministic last step: no density
            continue
        s, dt = sig[i], sig[i + 1] - sig[i]
        std_t = a * np.sqrt(s / (1 - (sig[i + 1] if s == 1 else s)))
        for m in traj:
            mean = x[m] * (1 + std_t**2 / (2 * s) * dt) + v[m] * (1 + std_t**2 * (1 - s) / (2 * s)) * dt
            std = std_t * np.sqrt(-dt)
            dens = -((traj[m][i + 1] - mean) ** 2) / (2 * std**2) - np.log(std) - 0.5 * np.log(2 * np.pi)
            lp[:, i] += (dens.sum(-1) * ~clean[m]).sum(-1)
    return lp


def test_sde_logprob_matches_numpy_and_reevaluates(sde_case):
    _, clean, x_clean, _, kw, out = sde_case
    traj = {m: np.asarray(out.trajectory[m], np.float64) for m in out.trajectory}
    assert out.logprob.shape == (SB, STEPS) and traj["video"].shape == (STEPS + 1, SB, SN, PV)
    for m in traj:
        np.testing.assert_array_equal(traj[m][-1], out.x[m])
        # Clean tokens are the given ones, bit for bit, all along the trajectory.
        held = np.asarray(out.trajectory[m])[:, clean[m]]  # [steps + 1, n_clean, P]
        np.testing.assert_array_equal(held, np.broadcast_to(np.float32(x_clean[m][clean[m]]), held.shape))
    want = _np_sde_logprob(traj, np_schedule(STEPS, SMU), clean, 0.7)
    np.testing.assert_allclose(out.logprob, want, rtol=1e-4, atol=1e-2)
    assert (np.asarray(out.logprob)[:, -1] == 0).all() and (np.asarray(out.logprob)[:, :-1] != 0).all()

    # Reward tuning's re-evaluation of stored transitions with the public step functions,
    # all steps at once.
    @jax.jit
    def reeval(traj, clean):
        s = samplers.sigma_schedule(STEPS, SMU)

        def one(x, x_next, t, t_next):  # one transition, m -> [B, N, P]
            t = {m: jnp.where(clean[m], 0.0, t) for m in x}
            t_next = {m: jnp.where(clean[m], 0.0, t_next) for m in x}
            v = gauss_denoise(x, t, None, None, None)
            lp = 0.0
            for m in x:
                _, mean, std = samplers.sde_step(x[m], v[m], t[m], t_next[m], jnp.zeros_like(x[m]), 0.7)
                lp = lp + samplers.gaussian_logprob(x_next[m], mean, std, ~clean[m])
            return lp

        xs = {m: traj[m][:-1] for m in traj}
        xs_next = {m: traj[m][1:] for m in traj}
        return jax.vmap(one)(xs, xs_next, s[:-1], s[1:]).T  # [B, steps]

    np.testing.assert_allclose(reeval(out.trajectory, kw["clean"]), out.logprob, rtol=1e-5, atol=1e-3)


def test_sde_determinism(sde_case):
    _, _, _, args, kw, out = sde_case
    again = _sde(jax.random.key(2), *args, noise_level=0.7, **kw)
    other = _sde(jax.random.key(3), *args, noise_level=0.7, **kw)
    np.testing.assert_array_equal(again.logprob, out.logprob)
    for m in out.x:
        np.testing.assert_array_equal(again.x[m], out.x[m])
        assert not np.allclose(other.x[m], out.x[m])


def test_sde_with_zero_noise_is_the_ode(sde_case):
    _, _, _, args, kw, _ = sde_case
    ode = _euler(gauss_denoise, None, *args, num_steps=STEPS, mu={"video": SMU, "audio": SMU}, **kw)
    for a, tol in ((0.0, 1e-5), (1e-4, 2e-3)):
        out = _sde(jax.random.key(0), *args, noise_level=a, **kw)
        for m in ode:
            np.testing.assert_allclose(out.x[m], ode[m], atol=tol)


def test_sde_samples_have_the_data_distribution(sde_case):
    _, clean, _, _, _, out = sde_case
    for m, (mu_d, s_d) in TOY.items():
        x = np.asarray(out.x[m])[~clean[m]]
        assert abs(x.mean() - mu_d) < 0.05 * max(s_d, 1.0), (m, x.mean())
        assert abs(x.std() / s_d - 1.0) < 0.05, (m, x.std())


def test_gaussian_logprob_matches_numpy():
    r = np.random.default_rng(6)
    x, mean = r.normal(size=(2, 3, 4)), r.normal(size=(2, 3, 4))
    std = r.uniform(0.1, 2.0, size=(2, 3))
    std[0, 1] = 0.0  # deterministic token: contributes nothing
    mask = np.array([[True, True, True], [True, False, True]])
    j = lambda a: jnp.asarray(a, jnp.float32)
    got = jax.jit(samplers.gaussian_logprob)(j(x), j(mean), j(std), jnp.asarray(mask))
    keep = mask & (std > 0)
    s = np.where(keep, std, 1.0)[..., None]
    dens = (-((x - mean) ** 2) / (2 * s**2) - np.log(s) - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(got, (dens * keep).sum(-1), rtol=1e-5)
