"""Remat policies by name: each computes the same loss and gradients as `none`,
`full` keeps less activation memory than `none`, and an unknown name is an
error that names `model.remat` and the choices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.common import model as model_config
from jav.models import AVDiT, patch, validate_config
from jav.models.remat import REMAT_POLICIES, remat
from xla_flags import COMPILER_OPTIONS

B, T, S, TA = 2, 4, 16, 16


def tiny(policy):
    # no cross-modal module: the policies wrap the whole layer group alike, and
    # the smaller graph halves the compile time of each policy's gradient
    cfg = model_config(video_width=32, video_heads=2, audio_width=16, audio_heads=2, depth=2, joint="none", text_dim=16)
    cfg.remat = policy
    return cfg


def inputs():
    rng = np.random.default_rng(0)
    x = {
        "video": patch.patchify_video(jnp.asarray(rng.normal(size=(B, T, S, S, 3)), jnp.float32), (1, 4, 4)),
        "audio": patch.patchify_audio(jnp.asarray(rng.normal(size=(B, TA, 64)), jnp.float32), 4),
    }
    t = {m: jnp.asarray(rng.uniform(0.1, 1.0, size=x[m].shape[:2]), jnp.float32) for m in x}
    pos = {
        "video": patch.video_positions(patch.uniform_frame_times(T, 8), (S, S), (1, 4, 4)),
        "audio": patch.audio_positions(patch.uniform_frame_times(TA, 100), 4),
    }
    text = jnp.asarray(rng.normal(size=(B, 6, 16)), jnp.float32)
    return x, t, pos, text, jnp.ones((B, 6), bool)


@functools.lru_cache(maxsize=None)
def state():
    """Parameters with every leaf random (zero-initialised projections would hide
    most gradients), drawn on the host: no initialiser to compile."""
    rng = np.random.default_rng(1)
    abstract = nnx.state(nnx.eval_shape(lambda: AVDiT(tiny("none"), rngs=nnx.Rngs(0))))
    return jax.tree.map(lambda p: jnp.asarray(0.1 * rng.standard_normal(p.shape), p.dtype), abstract)


@functools.lru_cache(maxsize=None)
def compiled(policy):
    """(loss, grads, temporary bytes) of a scalar loss of the model's output under `policy`."""
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: AVDiT(tiny(policy), rngs=nnx.Rngs(0))))
    x, t, pos, text, text_mask = inputs()

    def loss(s):
        out = nnx.merge(graphdef, s)(x, t, text, text_mask, pos=pos)
        return jnp.mean(out["video"] ** 2) + jnp.mean(out["audio"] ** 2)

    # backend optimisation and the fusion emitters off: at this size they only
    # cost compile time (half of it), and every policy compiles alike
    fn = jax.jit(jax.value_and_grad(loss)).lower(state()).compile(COMPILER_OPTIONS)
    value, grads = fn(state())
    return value, grads, fn.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("policy", ["full", "dots", "projections", "offload"])
def test_every_policy_keeps_the_loss_and_gradients(policy):
    l0, g0, _ = compiled("none")
    l1, g1, _ = compiled(policy)
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-7)


def test_offload_on_cpu_is_dots():
    # XLA:CPU has one memory for device and host: the offload copies lower to
    # nothing and `offload` runs the very program `dots` runs
    l_dots, g_dots, temp_dots = compiled("dots")
    l_off, g_off, temp_off = compiled("offload")
    assert float(l_off) == float(l_dots) and temp_off == temp_dots
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(g_dots), jax.tree.leaves(g_off)))


def test_full_remat_keeps_less_activation_memory():
    assert compiled("full")[2] < compiled("none")[2]


def test_unknown_policy_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"model.remat='everything' is not one of \('none', 'full', 'dots', 'projections', 'offload'\)"):
        validate_config(tiny("everything"))
    with pytest.raises(ValueError, match="model.remat='bogus'"):
        remat(lambda x: x, "bogus")
    assert REMAT_POLICIES == ("none", "full", "dots", "projections", "offload")


@pytest.mark.parametrize("policy, low", [("full", 0.85), ("dots", 0.6), ("projections", 0.6)])
def test_recompute_flops_match_the_compiler(policy, low):
    # jav.aot's executed FLOPs: the gradient under `policy` costs what it costs
    # under `none` plus `recompute_flops`; XLA also counts the recomputed
    # element-wise work, which the analytic count leaves out (much of `dots`'s
    # recompute at these widths, a few % at real ones)
    from jav.aot import recompute_flops
    from jav.models.flops import forward_flops

    x, t, pos, text, text_mask = inputs()

    def xla_flops(p):
        cfg = tiny(p)
        cfg.scan_layers = False  # the compiler counts a scanned body once
        abstract = nnx.eval_shape(lambda: AVDiT(cfg, rngs=nnx.Rngs(0)))
        graphdef, params = nnx.graphdef(abstract), nnx.state(abstract)

        def loss(s):
            out = nnx.merge(graphdef, s)(x, t, text, text_mask, pos=pos)
            return jnp.mean(out["video"] ** 2) + jnp.mean(out["audio"] ** 2)

        cost = jax.jit(jax.grad(loss)).lower(params).cost_analysis()
        return (cost if isinstance(cost, dict) else cost[0])["flops"]

    forward = functools.partial(forward_flops, tiny("none"), {m: x[m].shape[1] for m in x}, 6)
    ours = recompute_flops(policy, forward, B)
    assert low < ours / (xla_flops(policy) - xla_flops("none")) <= 1.0
    assert recompute_flops("none", forward, B) == 0
