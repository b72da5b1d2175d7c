"""Attention kernels by config: per-token mask descriptions, the XLA reference,
splash (Pallas interpret mode on CPU) and the cuDNN wrapper against it, zero
rows for queries without keys, and errors that name the key and the fix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from jav import sharding
from jav.models import attention_kernels, validate_config
from jav.models.attention_kernels import Mask, attend, check_kernel, dot_product_attention, key_mask

B, NQ, NK, H, DH = 3, 40, 24, 2, 8


def qkv(seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.normal(size=(B, n, H, DH)), jnp.float32) for n in (NQ, NK, NK))


# sample 0: all keys; sample 1: the last 9 keys are padding; sample 2: no valid key at all
K_VALID = jnp.asarray([[True] * NK, [True] * (NK - 9) + [False] * 9, [False] * NK])
Q_VALID = jnp.asarray([[True] * NQ, [True] * (NQ - 4) + [False] * 4, [True] * NQ])


def old_key_mask(mask_q, mask_k):
    """The [B, 1, Nq, Nk] array the model built before masks were described per token."""
    return mask_k[:, None, None, :] & mask_q[:, None, :, None]


def test_mask_description_matches_the_dense_mask_and_finds_rows_without_keys():
    mask = key_mask(Q_VALID, K_VALID)
    np.testing.assert_array_equal(np.broadcast_to(mask.dense(), (B, 1, NQ, NK)), old_key_mask(Q_VALID, K_VALID))
    rows = np.asarray(mask.rows_with_keys())
    assert rows[0].all() and rows[1, :-4].all() and not rows[1, -4:].any() and not rows[2].any()
    assert key_mask(Q_VALID, None) is None  # no key mask: nothing to mask, as before
    window = Mask(None, K_VALID, window=2).dense(NQ, NK)
    i, j = np.arange(NQ)[:, None], np.arange(NK)[None, :]
    np.testing.assert_array_equal(np.broadcast_to(window, (B, 1, NQ, NK)), (np.abs(i - j) <= 2)[None, None] & np.asarray(K_VALID)[:, None, None, :])


def test_xla_kernel_is_the_reference_and_rows_without_keys_are_zero():
    q, k, v = qkv()
    mask = Mask(Q_VALID, K_VALID)
    out = np.asarray(attend(q, k, v, mask, "xla"))
    np.testing.assert_array_equal(out, np.asarray(dot_product_attention(q, k, v, old_key_mask(Q_VALID, K_VALID))))
    assert np.isfinite(out).all()
    assert not out[2].any() and not out[1, -4:].any() and out[1, :-4].all() and out[0].all()


@pytest.mark.parametrize("window", [None, 3])
def test_splash_matches_xla_with_masks_and_gradients(window):
    """Splash in Pallas interpret mode (the TPU kernel's own code, run on CPU):
    padding to its 128-token blocks, key padding as segment ids, a window as its
    static local mask, zero rows, and its custom backward pass."""
    q, k, v = qkv()
    mask = Mask(Q_VALID, K_VALID, window)
    cot = jnp.asarray(np.random.default_rng(1).normal(size=(B, NQ, H, DH)), jnp.float32)

    def run(kernel, interpret):
        def loss(q, k, v):
            out = attend(q, k, v, mask, kernel, interpret=interpret)
            return jnp.sum(out * cot), out

        (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
        return out, grads

    (out_x, g_x), (out_s, g_s) = run("xla", False), run("splash", True)
    np.testing.assert_allclose(np.asarray(out_s), np.asarray(out_x), atol=1e-5)
    assert np.isfinite(np.asarray(out_s)).all() and not np.asarray(out_s)[2].any()
    for a, b in zip(g_s, g_x):
        assert np.isfinite(np.asarray(a)).all()
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_cudnn_wrapper_matches_xla_in_bf16():
    """The cuDNN call's inputs (bf16, keys reordered valid-first, key lengths)
    through jax's XLA implementation of the same API: cuDNN itself needs a GPU."""
    q, k, v = qkv()
    out = attention_kernels._cudnn(q, k, v, Mask(None, K_VALID), implementation="xla")
    ref = dot_product_attention(q, k, v, Mask(None, K_VALID).dense())
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out)[:2], np.asarray(ref)[:2], atol=1e-2)  # sample 2 has no keys: attend zeroes it


def test_kernels_that_cannot_run_here_say_which_key_to_change():
    for kernel, needs in (("cudnn", "GPU"), ("splash", "TPU")):
        with pytest.raises(ValueError, match=rf"model.attention.kernel='{kernel}' needs a {needs} but this run is on cpu; set model.attention.kernel='xla'"):
            check_kernel(kernel)
        q, k, v = qkv()
        with pytest.raises(ValueError, match=f"model.attention.kernel='{kernel}'"):
            attend(q, k, v, None, kernel)
    check_kernel("splash", "tpu")
    check_kernel("cudnn", "gpu")
    with pytest.raises(ValueError, match=r"model.attention.kernel='flash' is not one of \('xla', 'cudnn', 'splash'\)"):
        check_kernel("flash")


def test_config_validation_names_the_attention_keys():
    cfg = test_config.get_config()
    cfg.model.attention.kernel = "flash"
    with pytest.raises(ValueError, match="model.attention.kernel='flash'"):
        validate_config(cfg.model)
    cfg.model.attention.kernel, cfg.model.attention.context = "xla", "stripes"
    with pytest.raises(ValueError, match=r"model.attention.context='stripes' is not one of \('ring', 'ulysses'\)"):
        validate_config(cfg.model)


def test_trainer_validation_of_context_parallel_configs():
    from jav.train.diffusion import validate

    context4 = jax.sharding.AbstractMesh((1, 1, 4, 1), sharding.MESH_AXES)
    cfg = test_config.get_config()  # video heads 2
    cfg.data.dir = "/nonexistent"
    validate(cfg, context4)  # ring: any heads
    cfg.model.attention.context = "ulysses"
    with pytest.raises(ValueError, match=r"model.attention.context='ulysses' needs model.video.heads=2 divisible by mesh context x tensor=4"):
        validate(cfg, context4)
    cfg.model.attention.context = "ring"
    cfg.model.video.decoupled = True
    with pytest.raises(ValueError, match="model.video.decoupled=True does not support context parallelism"):
        validate(cfg, context4)
    cfg.model.video.decoupled = False
    cfg.model.attention.kernel = "splash"
    with pytest.raises(ValueError, match="model.attention.kernel='splash' needs a TPU"):
        validate(cfg, context4)


def test_splash_tiles_long_sequences_in_larger_blocks():
    """Tiles of up to 512 tokens (fewer reads of each key and value block) where they pad
    little: 14,080 video tokens in 512s, 700 keys in 384s, 600 in 128s; interpret mode
    agrees with XLA at those tiles, forward and backward."""
    block = attention_kernels.splash_block
    assert (block(14080), block(1000), block(700), block(600), block(100)) == (512, 512, 384, 128, 128)
    rng = np.random.default_rng(2)
    q = jnp.asarray(rng.normal(size=(1, 1000, 2, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(1, 700, 2, 8)), jnp.float32) for _ in range(2))
    mask = Mask(None, jnp.arange(700)[None] < 650)

    def run(kernel, interpret):
        loss = lambda q, k, v: jnp.sum(jnp.sin(attend(q, k, v, mask, kernel, interpret=interpret)))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)

    (l_x, g_x), (l_s, g_s) = run("xla", False), run("splash", True)
    np.testing.assert_allclose(float(l_s), float(l_x), rtol=1e-5)
    for a, b in zip(g_s, g_x):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
