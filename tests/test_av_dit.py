"""The dual-branch AVDiT: shapes, per-token timesteps, coupling per joint mode, masks, FLOPs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.common import model as model_config
from jav.models import init_model, patch, validate_config
from jav.models.flops import forward_flops, param_count

B, T, S, TA = 2, 4, 16, 16
VPATCH, APATCH = (1, 4, 4), 4


def tiny(mode, **kw):
    cfg = model_config(video_width=32, video_heads=2, audio_width=16, audio_heads=2, depth=2, joint=mode, text_dim=16, **kw)
    return cfg


@functools.lru_cache(maxsize=None)
def built(mode, decoupled=False):
    cfg = tiny(mode)
    cfg.video.decoupled = decoupled
    return cfg, init_model(cfg, jax.random.key(0))


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    video = rng.normal(size=(B, T, S, S, 3)).astype(np.float32)
    audio = rng.normal(size=(B, TA, 64)).astype(np.float32)
    x = {"video": patch.patchify_video(jnp.asarray(video), VPATCH), "audio": patch.patchify_audio(jnp.asarray(audio), APATCH)}
    t = {m: jnp.full(x[m].shape[:2], 0.7) for m in x}
    pos = {
        "video": patch.video_positions(patch.uniform_frame_times(T, 8), (S, S), VPATCH),
        "audio": patch.audio_positions(patch.uniform_frame_times(TA, 100), APATCH),
    }
    text = jnp.asarray(rng.normal(size=(B, 6, 16)), jnp.float32)
    text_mask = jnp.asarray([[1] * 6, [1] * 3 + [0] * 3], bool)
    return x, t, pos, text, text_mask


GRID = patch.video_grid((T, S, S), VPATCH)


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x, t, pos, text, text_mask, cross_modal, token_mask):
    return nnx.merge(graphdef, state)(x, t, text, text_mask, cross_modal, pos=pos, token_mask=token_mask, grid=GRID)


def call(model, x, t, pos, text, text_mask, cross_modal=None, token_mask=None):
    # explicit defaults keep one compiled function per model
    cross_modal = jnp.ones((B,), bool) if cross_modal is None else cross_modal
    token_mask = token_mask or {m: jnp.ones(x[m].shape[:2], bool) for m in x}
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, x, t, pos, text, text_mask, cross_modal, token_mask)


def randomized(model, scale=0.3, seed=1):
    """A copy with every parameter random: zero-initialised output layers and
    gates would otherwise hide which paths exist. Drawn on the host so that no
    per-shape kernel is compiled."""
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(seed)
    leaves = [jnp.asarray(scale * rng.standard_normal(l.shape), l.dtype) for l in leaves]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


@pytest.mark.parametrize("mode", ["cross_attn", "joint_attn", "none"])
def test_output_shapes_and_finite(mode):
    cfg, model = built(mode)
    x, t, pos, text, text_mask = inputs()
    out = call(randomized(model), x, t, pos, text, text_mask)
    for m in x:
        assert out[m].shape == x[m].shape and out[m].dtype == jnp.float32
        assert np.isfinite(np.asarray(out[m])).all()


def test_clean_first_frame_noise_does_not_change_other_tokens():
    from jav.flow import noise

    cfg, model = built("cross_attn")
    model = randomized(model)
    x0, _, pos, text, text_mask = inputs()
    first = jnp.asarray(patch.first_frame_tokens(GRID))
    t_video = jnp.where(first[None], 0.0, 0.6) * jnp.ones((B, 1))
    t = {"video": t_video, "audio": jnp.full(x0["audio"].shape[:2], 0.6)}
    rng = np.random.default_rng(3)
    eps = {m: jnp.asarray(rng.standard_normal(x0[m].shape), jnp.float32) for m in x0}
    # a different noise draw only for the clean first-frame tokens
    other = jnp.asarray(rng.standard_normal(x0["video"].shape), jnp.float32)
    eps2 = dict(eps, video=jnp.where(first[None, :, None], other, eps["video"]))
    xa = {m: noise(x0[m], eps[m], t[m]) for m in x0}
    xb = {m: noise(x0[m], eps2[m], t[m]) for m in x0}
    np.testing.assert_array_equal(np.asarray(xa["video"]), np.asarray(xb["video"]))  # t = 0 tokens are x0
    va, vb = call(model, xa, t, pos, text, text_mask), call(model, xb, t, pos, text, text_mask)
    for m in x0:
        np.testing.assert_array_equal(np.asarray(va[m]), np.asarray(vb[m]))
    # while the same change at t > 0 does change the velocities
    t_noisy = {"video": jnp.full_like(t_video, 0.6), "audio": t["audio"]}
    vc = call(model, {m: noise(x0[m], eps[m], t_noisy[m]) for m in x0}, t_noisy, pos, text, text_mask)
    vd = call(model, {m: noise(x0[m], eps2[m], t_noisy[m]) for m in x0}, t_noisy, pos, text, text_mask)
    assert np.abs(np.asarray(vc["video"]) - np.asarray(vd["video"]))[:, ~np.asarray(first)].max() > 1e-4


def video_param_grad_norm(model, x, t, pos, text, text_mask):
    graphdef, state = nnx.split(model)

    def audio_loss(state):
        return jnp.sum(nnx.merge(graphdef, state)(x, t, text, text_mask, pos=pos, grid=GRID)["audio"] ** 2)

    grads = jax.jit(jax.grad(audio_loss))(state)
    flat = nnx.to_flat_state(grads)
    video = [v for path, v in flat if "video" in [str(p) for p in path] and "joint" not in [str(p) for p in path] and "a2v" not in [str(p) for p in path]]
    assert len(video) > 10  # embedding, timestep MLP, AdaLN, every block's video params
    return sum(float(jnp.sum(jnp.asarray(v[...]) ** 2)) for v in video)


@pytest.mark.parametrize("mode,flows", [("cross_attn", True), ("joint_attn", True), ("none", False)])
def test_audio_loss_reaches_video_parameters_only_when_coupled(mode, flows):
    cfg, model = built(mode)
    x, t, pos, text, text_mask = inputs()
    norm = video_param_grad_norm(randomized(model), x, t, pos, text, text_mask)
    if flows:
        assert norm > 1e-6
    else:
        assert norm == 0.0


@pytest.mark.parametrize("mode", ["cross_attn", "joint_attn"])
def test_cross_modal_flag_cuts_the_coupling_per_sample(mode):
    cfg, model = built(mode)
    model = randomized(model)
    x, t, pos, text, text_mask = inputs()
    x2 = dict(x, video=x["video"] + 1.0)
    flag = jnp.asarray([True, False])
    a, b = call(model, x, t, pos, text, text_mask, flag), call(model, x2, t, pos, text, text_mask, flag)
    diff = np.abs(np.asarray(a["audio"]) - np.asarray(b["audio"])).max(axis=(1, 2))
    assert diff[0] > 1e-4  # coupled sample: audio sees the video change
    assert diff[1] == 0.0  # switched-off sample: it does not


@pytest.mark.parametrize("mode", ["cross_attn", "joint_attn"])
def test_padded_tokens_do_not_leak(mode):
    cfg, model = built(mode)
    model = randomized(model)
    x, t, pos, text, text_mask = inputs()
    valid = {"video": jnp.ones(x["video"].shape[:2], bool), "audio": jnp.arange(x["audio"].shape[1])[None].repeat(B, 0) < 3}
    x2 = dict(x, audio=x["audio"].at[:, 3:].set(5.0))
    a = call(model, x, t, pos, text, text_mask, token_mask=valid)
    b = call(model, x2, t, pos, text, text_mask, token_mask=valid)
    np.testing.assert_allclose(np.asarray(a["video"]), np.asarray(b["video"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(a["audio"])[:, :3], np.asarray(b["audio"])[:, :3], atol=1e-5)


def aligned_module(frame_tokens, read="mix", read_video="mix"):
    """A cross-modal attention with the aligned path, its context and the video / audio features."""
    from jav.models.av_dit import Context, CrossModalAttention

    cfg = tiny("cross_attn")
    cfg.joint.update(aligned=True, frame_tokens=frame_tokens, aligned_read=read, aligned_read_video=read_video)
    module = randomized(CrossModalAttention(cfg, rngs=nnx.Rngs(0)))
    x, _, pos, _, _ = inputs()
    pos = {m: patch.as_batch_positions(p) for m, p in pos.items()}
    ctx = Context(mod=None, pos=pos, mask={"video": None, "audio": None}, text=None, text_mask=None, cross_modal=None, grid=GRID)
    rng = np.random.default_rng(3)
    kv = {
        "video": jnp.asarray(rng.normal(size=(B, x["video"].shape[1], 32)), jnp.float32),
        "audio": jnp.asarray(rng.normal(size=(B, x["audio"].shape[1], 16)), jnp.float32),
    }
    return module, ctx, kv


@pytest.mark.parametrize("read", ["mix", "pair"])
def test_aligned_path_reads_the_other_modality_at_the_same_instant(read):
    module, ctx, kv = aligned_module(frame_tokens=GRID[1] * GRID[2], read=read)
    t, hw = GRID[0], GRID[1] * GRID[2]
    audio_t = np.asarray(ctx.pos["audio"][0, :, 0])  # 0.00, 0.04, 0.08, 0.12 s; frames every 0.125 s
    base = np.asarray(module._aligned("audio", kv, ctx))
    # the last frame (0.375 s) is more than one frame interval from every audio token
    late = dict(kv, video=kv["video"].at[:, (t - 1) * hw :].add(3.0))
    np.testing.assert_allclose(np.asarray(module._aligned("audio", late, ctx)), base, atol=1e-5)
    # the first frame feeds the first audio token
    early = dict(kv, video=kv["video"].at[:, :hw].add(3.0))
    assert np.abs(np.asarray(module._aligned("audio", early, ctx)) - base)[:, 0].max() > 1e-2
    # frame_tokens keeps each token in its place: swapping two tokens of a frame is seen
    frame0 = kv["video"][:, :hw]
    swapped = dict(kv, video=kv["video"].at[:, :hw].set(frame0[:, ::-1]))
    assert np.abs(np.asarray(module._aligned("audio", swapped, ctx)) - base)[:, 0].max() > 1e-2
    # the video side gets, per frame, the sound within one frame interval: frame 3 none of it
    video_side = np.asarray(module._aligned("video", dict(kv, audio=kv["audio"] + 3.0), ctx))
    np.testing.assert_allclose(video_side[:, (t - 1) * hw :], np.asarray(module._aligned("video", kv, ctx))[:, (t - 1) * hw :], atol=1e-5)
    assert audio_t.max() < (t - 2) / 8


def test_video_side_bins_tell_where_around_a_frame_the_sound_is():
    """aligned_read_video="bins": sound tokens 0.00 / 0.04 s fall in one part of every
    frame's window and 0.08 / 0.12 s in another, so swapping the first two changes no
    frame's read and swapping the second and third does; the one average ("mix") of
    the window weighs each token by its distance and sees both swaps."""

    def swap(kv, i, j):
        a = kv["audio"]
        return dict(kv, audio=a.at[:, i].set(a[:, j]).at[:, j].set(a[:, i]))

    for read_video, same_part_seen in (("bins", False), ("mix", True)):
        module, ctx, kv = aligned_module(frame_tokens=0, read_video=read_video)
        base = np.asarray(module._aligned("video", kv, ctx))
        same_part = np.abs(np.asarray(module._aligned("video", swap(kv, 0, 1), ctx)) - base).max()
        other_part = np.abs(np.asarray(module._aligned("video", swap(kv, 1, 2), ctx)) - base).max()
        assert (same_part > 1e-3) == same_part_seen, (read_video, same_part)
        assert other_part > 1e-3, read_video


@pytest.mark.parametrize("read", ["mix", "pair"])
def test_aligned_mean_path_ignores_where_in_the_frame(read):
    module, ctx, kv = aligned_module(frame_tokens=0, read=read)
    hw = GRID[1] * GRID[2]
    base = np.asarray(module._aligned("audio", kv, ctx))
    swapped = dict(kv, video=kv["video"].at[:, :hw].set(kv["video"][:, :hw][:, ::-1]))
    np.testing.assert_allclose(np.asarray(module._aligned("audio", swapped, ctx)), base, atol=1e-5)


def test_joint_attention_aligned_path_reads_the_partner_at_its_instant():
    """joint_attn with the aligned path: the sound tokens near the first frame see
    a change of it (through the path, beside the joint softmax), and the coupling
    flag off removes the path with the rest of the coupling."""
    cfg = tiny("joint_attn")
    cfg.joint.update(aligned=True, frame_tokens=GRID[1] * GRID[2], aligned_read="pair")
    validate_config(cfg)
    model = randomized(init_model(cfg, jax.random.key(0)))
    plain = randomized(init_model(tiny("joint_attn"), jax.random.key(0)))
    assert param_count(nnx.state(model)) > param_count(nnx.state(plain))
    x, t, pos, text, text_mask = inputs()
    hw = GRID[1] * GRID[2]
    moved = dict(x, video=x["video"].at[:, :hw].add(1.0))
    a = call(model, x, t, pos, text, text_mask)
    # the path's projections zeroed: the same model without it gives another output
    graphdef, state = nnx.split(model)
    path = ("frames_to_audio", "next_frame_to_audio", "phase_to_audio", "audio_to_frames")
    zeroed = jax.tree_util.tree_map_with_path(lambda p, v: jnp.zeros_like(v) if any(getattr(k, "key", None) in path for k in p) else v, state)
    z = call(nnx.merge(graphdef, zeroed), x, t, pos, text, text_mask)
    assert np.abs(np.asarray(a["audio"]) - np.asarray(z["audio"])).max() > 1e-4
    assert np.abs(np.asarray(a["video"]) - np.asarray(z["video"])).max() > 1e-4
    off = jnp.zeros((B,), bool)
    a0, b0 = (call(model, y, t, pos, text, text_mask, cross_modal=off) for y in (x, moved))
    np.testing.assert_allclose(np.asarray(a0["audio"]), np.asarray(b0["audio"]), atol=1e-5)


def test_time_bias_attention():
    from jav.models.attention_kernels import dot_product_attention
    from jav.models.av_dit import time_bias, time_bias_slopes

    np.testing.assert_allclose(time_bias_slopes(32.0, 3), [32.0, 16.0, 8.0])
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, n, 2, 8)), jnp.float32) for n in (5, 7, 7))
    zero = jnp.zeros((1, 2, 5, 7))
    np.testing.assert_allclose(dot_product_attention(q, k, v, bias=zero), jax.nn.dot_product_attention(q, k, v), atol=1e-5)
    # a steep bias makes each query read the key nearest in time
    qt, kt = jnp.asarray([[0.0, 0.09, 0.21, 0.31, 0.41]]), jnp.asarray([[0.0, 0.07, 0.13, 0.2, 0.27, 0.33, 0.4]])
    out = dot_product_attention(q, k, v, bias=time_bias(qt, kt, time_bias_slopes(1e4, 2)))
    nearest = np.abs(np.asarray(qt)[0, :, None] - np.asarray(kt)[0, None]).argmin(-1)
    np.testing.assert_allclose(out[:, :, 0], np.asarray(v)[:, nearest, 0], atol=1e-4)


def test_time_bias_cross_attention_keeps_padding_out():
    cfg = tiny("cross_attn")
    cfg.joint.time_bias = 32.0
    model = randomized(init_model(cfg, jax.random.key(0)))
    x, t, pos, text, text_mask = inputs()
    valid = {"video": jnp.ones(x["video"].shape[:2], bool), "audio": jnp.arange(x["audio"].shape[1])[None].repeat(B, 0) < 3}
    a = call(model, x, t, pos, text, text_mask, token_mask=valid)
    b = call(model, dict(x, audio=x["audio"].at[:, 3:].set(5.0)), t, pos, text, text_mask, token_mask=valid)
    np.testing.assert_allclose(np.asarray(a["video"]), np.asarray(b["video"]), atol=1e-5)
    c = call(model, dict(x, audio=x["audio"].at[:, :3].add(1.0)), t, pos, text, text_mask, token_mask=valid)
    assert np.abs(np.asarray(a["video"]) - np.asarray(c["video"])).max() > 1e-4  # the valid sound is read


def test_decoupled_video_attention_runs_and_changes_the_function():
    _, model_full = built("cross_attn")
    _, model_dec = built("cross_attn", decoupled=True)
    x, t, pos, text, text_mask = inputs()
    out = call(randomized(model_dec), x, t, pos, text, text_mask)
    assert out["video"].shape == x["video"].shape and np.isfinite(np.asarray(out["video"])).all()
    assert param_count(nnx.state(model_dec)) > param_count(nnx.state(model_full))  # the temporal attention


def test_config_errors_name_the_key():
    cfg = tiny("cross_attn")
    cfg.video.heads = 3
    with pytest.raises(ValueError, match="model.video.width=32 is not divisible by model.video.heads=3"):
        validate_config(cfg)
    cfg = tiny("cross_attn", every=3)
    with pytest.raises(ValueError, match="model.depth=2 is not divisible by model.joint.every=3"):
        validate_config(cfg)
    cfg = tiny("bogus")
    with pytest.raises(ValueError, match="model.joint.mode='bogus'"):
        validate_config(cfg)
    cfg = tiny("none")
    cfg.joint.aligned = True
    with pytest.raises(ValueError, match="set it to False with model.joint.mode='none'"):
        validate_config(cfg)
    cfg = tiny("cross_attn")
    cfg.joint.frame_tokens = 16
    with pytest.raises(ValueError, match="set model.joint.aligned=True or frame_tokens=0"):
        validate_config(cfg)
    cfg.joint.update(frame_tokens=0, aligned_read_video="nearest")
    with pytest.raises(ValueError, match="model.joint.aligned_read_video='nearest'"):
        validate_config(cfg)
    cfg.joint.update(aligned_read_video="mix", aligned_read="nearest")
    with pytest.raises(ValueError, match="model.joint.aligned_read='nearest'"):
        validate_config(cfg)
    cfg.joint.update(aligned_read="mix", time_bias=-1.0)
    with pytest.raises(ValueError, match="model.joint.time_bias=-1.0 must be >= 0"):
        validate_config(cfg)
    for key, value, message in [
        ("norm", "batch", "model.norm='batch'"),
        ("rope.layout", "flux", "model.rope.layout='flux'"),
        ("text_norm", "rms", "model.text_norm='rms'"),
        ("rope.pairs", "adjacent", "model.rope.pairs='adjacent'"),
        ("joint.heads", "video", "model.joint.heads='video'"),
        ("joint.adaln", "global", "model.joint.adaln='global'"),
    ]:
        cfg = tiny("cross_attn")
        node, leaf = (cfg, key) if "." not in key else (cfg[key.split(".")[0]], key.split(".")[1])
        node[leaf] = value
        with pytest.raises(ValueError, match=message):
            validate_config(cfg)
    cfg = tiny("joint_attn")
    cfg.joint.adaln = "own"
    with pytest.raises(ValueError, match="set them to 'own' / 'shared'"):
        validate_config(cfg)


@pytest.mark.parametrize("mode", ["cross_attn", "joint_attn", "none"])
def test_analytic_flops_match_the_compiler(mode):
    cfg = tiny(mode)
    cfg.scan_layers = False  # so that the compiler's count covers every layer
    x, t, pos, text, text_mask = inputs()
    graphdef, state = nnx.split(nnx.eval_shape(lambda: __import__("jav.models", fromlist=["AVDiT"]).AVDiT(cfg, rngs=nnx.Rngs(0))))

    def fwd(state, x, t):
        return call(nnx.merge(graphdef, state), x, t, pos, text, text_mask)

    cost = jax.jit(fwd).lower(state, x, t).cost_analysis()
    xla = cost["flops"] if isinstance(cost, dict) else cost[0]["flops"]
    n = {m: x[m].shape[1] for m in x}
    ours = forward_flops(cfg, n, text_len=6, batch=B, include_text_encoder=False)
    # XLA also counts element-wise work (norms, softmax, GELU), a few % at these widths
    assert 0.8 < ours / xla <= 1.0, (ours, xla)


@pytest.mark.parametrize("mode", ["cross_attn", "joint_attn"])
def test_every_k_couples_one_layer_in_k(mode):
    cfg = model_config(video_width=32, video_heads=2, audio_width=16, audio_heads=2, depth=4, joint=mode, every=2, text_dim=16)
    abstract = nnx.eval_shape(lambda: __import__("jav.models", fromlist=["AVDiT"]).AVDiT(cfg, rngs=nnx.Rngs(0)))
    assert abstract.num_groups == 2
    layers = abstract.groups.layers
    coupled = [(layer.cross if mode == "cross_attn" else layer.joint) is not None for layer in layers]
    assert coupled == [False, True]
    # the unscanned model's compiler FLOPs agree with the analytic count, which
    # charges the cross-modal module to one layer in two
    cfg.scan_layers = False
    x, t, pos, text, text_mask = inputs()
    graphdef, state = nnx.split(nnx.eval_shape(lambda: __import__("jav.models", fromlist=["AVDiT"]).AVDiT(cfg, rngs=nnx.Rngs(0))))
    cost = jax.jit(lambda s, x, t: call(nnx.merge(graphdef, s), x, t, pos, text, text_mask)).lower(state, x, t).cost_analysis()
    xla = cost["flops"] if isinstance(cost, dict) else cost[0]["flops"]
    ours = forward_flops(cfg, {m: x[m].shape[1] for m in x}, text_len=6, batch=B, include_text_encoder=False)
    assert 0.8 < ours / xla <= 1.0, (ours, xla)


def test_bf16_compute_keeps_the_function_and_fp32_gradients():
    # the remat policies' equality with `none` is tests/test_remat.py's
    cfg, model = built("cross_attn")
    model = randomized(model, scale=0.1)
    x, t, pos, text, text_mask = inputs()
    graphdef, state = nnx.split(model)

    def loss_for(dtype):
        c = tiny("cross_attn")
        c.dtype = dtype
        gd = nnx.graphdef(nnx.eval_shape(lambda: __import__("jav.models", fromlist=["AVDiT"]).AVDiT(c, rngs=nnx.Rngs(0))))

        def loss(s):
            out = nnx.merge(gd, s)(x, t, text, text_mask, pos=pos, grid=GRID)
            return jnp.mean(out["video"] ** 2) + jnp.mean(out["audio"] ** 2)

        return loss

    l0 = jax.jit(loss_for("float32"))(state)
    l2, g2 = jax.jit(jax.value_and_grad(loss_for("bfloat16")))(state)  # bf16 compute, fp32 parameters and gradients
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(g2))
    assert abs(float(l2) - float(l0)) < 0.05 * abs(float(l0))
